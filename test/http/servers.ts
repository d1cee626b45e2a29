// Local servers for the HTTP client's tests: node:http and node:https on 127.0.0.1
// with a per-test handler, counting the connections they accept; a self-signed
// certificate made with the openssl CLI; a TCP port that accepts and never answers.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createTcpServer, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';

export type Handler = (req: IncomingMessage, res: ServerResponse) => unknown;

export interface LocalServer {
  /** Base URL without a trailing slash. */
  url: string;
  /** Connections accepted so far. */
  connections(): number;
  /** Sockets still open on the server side. */
  openSockets(): number;
  close(): Promise<void>;
}

function listen(server: Server, scheme: 'http' | 'https'): Promise<LocalServer> {
  let accepted = 0;
  const sockets = new Set<Socket>();
  server.on(scheme === 'https' ? 'secureConnection' : 'connection', (s: Socket) => {
    accepted++;
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      resolve({
        url: `${scheme}://127.0.0.1:${port}`,
        connections: () => accepted,
        openSockets: () => sockets.size,
        close: () =>
          new Promise<void>((done) => {
            for (const s of sockets) s.destroy();
            server.close(() => done());
          }),
      });
    });
  });
}

function wrap(handler: Handler): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    Promise.resolve(handler(req, res)).catch((err: unknown) => {
      res.destroy(err instanceof Error ? err : new Error(String(err)));
    });
  };
}

export function serveHttp(handler: Handler): Promise<LocalServer> {
  return listen(createServer(wrap(handler)), 'http');
}

export interface TestCert {
  key: Buffer;
  cert: Buffer;
}

/** A throwaway self-signed certificate for 127.0.0.1 and localhost, or undefined without openssl. */
export async function selfSignedCert(dir: string): Promise<TestCert | undefined> {
  const key = join(dir, 'key.pem');
  const cert = join(dir, 'cert.pem');
  try {
    await promisify(execFile)('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=ocibuild test',
      '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
    ]);
  } catch (err) {
    if ((err as { code?: unknown }).code === 'ENOENT') return undefined;
    throw err;
  }
  return { key: await readFile(key), cert: await readFile(cert) };
}

export function serveHttps(cert: TestCert, handler: Handler): Promise<LocalServer> {
  return listen(createHttpsServer({ key: cert.key, cert: cert.cert }, wrap(handler)) as unknown as Server, 'https');
}

/** A TCP server that accepts connections and never sends a byte (a TLS handshake that never ends). */
export function silentTcp(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createTcpServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () =>
          new Promise<void>((done) => {
            for (const s of sockets) s.destroy();
            server.close(() => done());
          }),
      });
    });
  });
}
