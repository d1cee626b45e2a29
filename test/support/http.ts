// A static file server on 127.0.0.1 for tests, with faults that can be switched on per
// path: error statuses, truncated bodies, reset connections and slow headers.
import { readFile, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { resolve, sep } from 'node:path';

export type Fault =
  | { kind: 'status'; status: number; times?: number }
  | { kind: 'truncate'; bytes: number; times?: number }
  | { kind: 'reset'; times?: number }
  | { kind: 'delay-headers-ms'; ms: number }
  /** Send the headers and the first `bytes` bytes, then hold the connection open
   *  without sending more (a download stuck mid-body) until the client goes away. */
  | { kind: 'stall'; bytes: number; times?: number };

export interface TestServer {
  /** Base URL without a trailing slash, e.g. http://127.0.0.1:40123 */
  url: string;
  port: number;
  /** Every request in arrival order; status 0 for a reset connection; `range` is the
   *  request's Range header, present only when one was sent. */
  requests: Array<{ method: string; path: string; status: number; range?: string }>;
  /** Faults apply to request paths ending in pathSuffix (longest suffix wins); null clears. */
  setFault(pathSuffix: string, fault: Fault | null): void;
  close(): Promise<void>;
}

interface ActiveFault { fault: Fault; remaining: number }

/** Serves `dir` read-only: GET and HEAD, Content-Length, 404 for missing files and
 *  directories, single Range requests (`bytes=N-`, `bytes=N-M`) answered with 206. */
export async function serveDirectory(dir: string): Promise<TestServer> {
  const root = resolve(dir);
  const faults = new Map<string, ActiveFault>();
  const requests: TestServer['requests'] = [];

  const takeFault = (path: string): Fault | undefined => {
    let best: [string, ActiveFault] | undefined;
    for (const entry of faults) if (path.endsWith(entry[0]) && (!best || entry[0].length > best[0].length)) best = entry;
    if (!best) return undefined;
    const [suffix, active] = best;
    if (--active.remaining <= 0) faults.delete(suffix);
    return active.fault;
  };

  const log = (req: IncomingMessage, path: string, status: number): void => {
    const range = req.headers.range;
    requests.push(range === undefined ? { method: req.method ?? '', path, status } : { method: req.method ?? '', path, status, range });
  };

  const finish = (req: IncomingMessage, res: ServerResponse, path: string, status: number, headers: Record<string, string | number>, body?: Buffer): void => {
    log(req, path, status);
    res.writeHead(status, headers);
    res.end(req.method === 'HEAD' ? undefined : body);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const method = req.method ?? '';
    let path: string;
    try {
      path = decodeURIComponent(new URL(req.url ?? '/', 'http://127.0.0.1').pathname);
    } catch {
      return finish(req, res, req.url ?? '', 400, { 'Content-Length': 0 });
    }
    let fault = takeFault(path);
    if (fault?.kind === 'delay-headers-ms') {
      const ms = fault.ms;
      await new Promise((r) => setTimeout(r, ms));
      fault = undefined;
    }
    if (fault?.kind === 'reset') {
      log(req, path, 0);
      req.socket.destroy();
      return;
    }
    if (fault?.kind === 'status') {
      const body = Buffer.from(`injected ${fault.status}\n`);
      return finish(req, res, path, fault.status, { 'Content-Type': 'text/plain', 'Content-Length': body.length }, body);
    }
    if (method !== 'GET' && method !== 'HEAD') return finish(req, res, path, 405, { Allow: 'GET, HEAD', 'Content-Length': 0 });

    const file = resolve(root, '.' + path);
    if (file !== root && !file.startsWith(root + sep)) return finish(req, res, path, 404, { 'Content-Length': 0 });
    const info = await stat(file).catch(() => undefined);
    if (!info?.isFile()) {
      const body = Buffer.from('not found\n');
      return finish(req, res, path, 404, { 'Content-Type': 'text/plain', 'Content-Length': body.length }, body);
    }
    let body = await readFile(file);
    const size = body.length;
    let status = 200;
    const headers: Record<string, string | number> = {
      'Content-Type': 'application/octet-stream',
      'Accept-Ranges': 'bytes',
      'Last-Modified': info.mtime.toUTCString(),
    };
    const range = req.headers.range;
    if (range !== undefined) {
      const m = /^bytes=(\d+)-(\d*)$/.exec(range.trim());
      const start = m ? Number(m[1]) : NaN;
      const end = m?.[2] ? Math.min(Number(m[2]), size - 1) : size - 1;
      if (!m || start >= size || end < start) {
        return finish(req, res, path, 416, { 'Content-Range': `bytes */${size}`, 'Content-Length': 0 });
      }
      status = 206;
      headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
      body = body.subarray(start, end + 1);
    }
    headers['Content-Length'] = body.length;

    if (fault?.kind === 'truncate' && method === 'GET') {
      // Promise the whole body, send part of it, then close the connection. A
      // graceful close (FIN, not RST): a reset may make the client's kernel drop bytes
      // it already received, and the client could not resume from a known offset.
      log(req, path, status);
      res.writeHead(status, headers);
      res.write(body.subarray(0, Math.min(fault.bytes, body.length)), () => req.socket.end());
      return;
    }
    if (fault?.kind === 'stall' && method === 'GET') {
      log(req, path, status);
      res.writeHead(status, headers);
      res.write(body.subarray(0, Math.min(fault.bytes, body.length)));
      return;
    }
    finish(req, res, path, status, headers, body);
  };

  const { server, port } = await listenOnFreePort(handle, (req) => requests.push({ method: req.method ?? '', path: req.url ?? '', status: 500 }));

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    setFault(pathSuffix, fault) {
      if (fault === null) faults.delete(pathSuffix);
      else faults.set(pathSuffix, { fault, remaining: 'times' in fault && fault.times !== undefined ? fault.times : Infinity });
    },
    close: () =>
      new Promise<void>((ok, fail) => {
        server.close((err) => (err ? fail(err) : ok()));
        server.closeAllConnections();
      }),
  };
}

/**
 * An HTTP server on a free 127.0.0.1 port running an async handler; a handler that
 * throws answers 500 with the error's text (after `onError`, for request logs).
 */
export async function listenOnFreePort(
  handle: (req: IncomingMessage, res: ServerResponse) => Promise<void>,
  onError?: (req: IncomingMessage) => void,
): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      onError?.(req);
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain' });
      res.end(String(err));
    });
  });
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => ok());
  });
  return { server, port: (server.address() as AddressInfo).port };
}
