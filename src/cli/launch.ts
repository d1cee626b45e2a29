/**
 * The CLI's entry point, started by bin/ocibuild. That launcher moves
 * NODE_EXTRA_CA_CERTS aside (as OCIBUILD_EXTRA_CA_CERTS) before Node starts: Node reads
 * the file at start-up, about 45 ms for a system bundle such as
 * /etc/ssl/certs/ca-certificates.crt, and most commands open no TLS connection. The
 * file is handed to the HTTP client instead, which trusts it on every https
 * connection (src/http/client.ts), and the variable is put back for child processes.
 */
import module from 'node:module';
import { setExtraCaFile } from '../http/client.js';

// Node 22.1+ keeps compiled code between runs (a faster start); Node 20 has no such cache.
(module as { enableCompileCache?: () => void }).enableCompileCache?.();

const moved = process.env.OCIBUILD_EXTRA_CA_CERTS;
if (moved !== undefined) {
  delete process.env.OCIBUILD_EXTRA_CA_CERTS;
  if (moved !== '') {
    process.env.NODE_EXTRA_CA_CERTS = moved;
    setExtraCaFile(moved);
  }
}
const { main } = await import('./main.js');
process.exitCode = await main(process.argv.slice(2));
