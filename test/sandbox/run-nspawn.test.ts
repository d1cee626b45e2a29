// RUN steps in systemd-nspawn over a real overlay mount. nspawn must work here: when it
// cannot, every test fails with nspawn's own error output (from the trial run in
// src/sandbox/detect.ts), never a skip.
import { backendSuite } from './run-suite.js';

await backendSuite({ sandbox: 'nspawn', overlay: 'require' });
