// The fallback for machines without usable overlayfs: the rootfs is copied, the step
// runs on the copy, and the diff is written as an overlay upper directory. Same
// semantics as the overlay, checked by the same suite.
import { backendSuite } from './run-suite.js';

await backendSuite({ sandbox: 'bwrap', overlay: 'copy' });
