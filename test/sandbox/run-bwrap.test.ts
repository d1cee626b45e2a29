// RUN steps in bubblewrap over a real overlay mount (as root: a plain overlay mount in
// the holder's private mount namespace).
import { backendSuite } from './run-suite.js';

await backendSuite({ sandbox: 'bwrap', overlay: 'require' });
