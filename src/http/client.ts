/**
 * One HTTP/1.1 exchange on Node's own node:http / node:https (its built-in llhttp
 * parser: nothing to compile at start-up, nothing to wait for at exit). Shared
 * keep-alive agents, three timeouts, AbortSignal, streamed request bodies with
 * back-pressure, and a response body that is the IncomingMessage itself with the few
 * helpers the callers need (dump, text, json, bodyUsed).
 *
 * Errors keep Node's codes (ECONNREFUSED, ECONNRESET, ENOTFOUND…) plus the HTTP_*
 * codes below. A response body cut short of its Content-Length (the connection
 * closed early) fails its reader with Node's ECONNRESET ("aborted"), never a quiet end.
 *
 * Deliberately not here: redirects (apt/http.ts follows them for mirrors,
 * registry/transport.ts by hand so that credentials stay on the registry's origin),
 * retries (each caller knows what it may replay), content decoding (none is asked for).
 */
import type { Agent as HttpAgent, ClientRequest, IncomingMessage, RequestOptions as NodeRequestOptions } from 'node:http';
import * as http from 'node:http';
import type { Agent as HttpsAgent } from 'node:https';
import type { Socket } from 'node:net';
import { pipeline, type Readable } from 'node:stream';

export interface HttpTimeouts {
  /** TCP connect (and TLS handshake) of a new connection. */
  connectMs: number;
  /** From the request being sent (its body included) to the response's headers. */
  headersMs: number;
  /**
   * No byte sent or received on the connection for this long while the exchange is
   * under way: a stalled upload or download (or a reader that stopped reading). Not a
   * limit on the whole body. It also runs while waiting for the headers, so it should
   * be longer than headersMs.
   */
  idleMs: number;
}

export const DEFAULT_TIMEOUTS: Readonly<HttpTimeouts> = { connectMs: 15_000, headersMs: 30_000, idleMs: 60_000 };

/** What a caller may set for every request it makes (apt FetchOptions, registry TransportOptions carry it). */
export interface HttpSettings {
  timeouts?: Partial<HttpTimeouts>;
  /** Extra trusted CA certificates (PEM) for https; the connection pool is kept per CA set. */
  ca?: string | Buffer | Array<string | Buffer>;
  /** A client certificate and its key (PEM) for https servers that ask for one. */
  cert?: Buffer;
  key?: Buffer;
}

/**
 * A stream is piped; another iterable is pulled a chunk at a time, the next asked for
 * once the socket has taken the last (so a source may reuse its buffer).
 */
export type RequestBody = Buffer | string | Readable | AsyncIterable<Uint8Array>;

export interface RequestOptions extends HttpSettings {
  method?: string;
  /** Header names as given; a `content-length` given with a streamed body is enforced. */
  headers?: Record<string, string>;
  body?: RequestBody;
  signal?: AbortSignal;
}

export type ResponseHeaders = Record<string, string | string[] | undefined>;

/** The response body: the IncomingMessage (a Readable) plus the helpers callers use. */
export interface ResponseBody extends IncomingMessage {
  /**
   * Discards the rest of the body so that the connection can serve the next request;
   * a body over DUMP_LIMIT bytes closes the connection instead. Never rejects.
   */
  dump(): Promise<void>;
  text(): Promise<string>;
  json(): Promise<unknown>;
  /** Something already read from the body (or it was dumped or destroyed). */
  readonly bodyUsed: boolean;
}

export interface HttpResponse {
  statusCode: number;
  /** Lower-case names; a header sent several times is an array, in the order received. */
  headers: ResponseHeaders;
  body: ResponseBody;
}

/** Error codes of this module, next to Node's own (ECONNRESET, ECONNREFUSED, ETIMEDOUT, ENOTFOUND…). */
export const HTTP_CONNECT_TIMEOUT = 'HTTP_CONNECT_TIMEOUT';
export const HTTP_HEADERS_TIMEOUT = 'HTTP_HEADERS_TIMEOUT';
export const HTTP_IDLE_TIMEOUT = 'HTTP_IDLE_TIMEOUT';
/** A streamed request body longer or shorter than the `content-length` it was sent with. */
export const HTTP_REQUEST_BODY_LENGTH = 'HTTP_REQUEST_BODY_LENGTH';

/** A failure of the exchange itself, with one of the codes above. */
export class HttpError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

/** What a cancelled request rejects (or its body fails) with; `cause` is the signal's reason. */
export class RequestAbortedError extends Error {
  readonly code = 'ABORT_ERR';
  constructor(cause: unknown) {
    super('the request was aborted', { cause });
    this.name = 'AbortError';
  }
}

/** Bodies up to this size are drained by dump() to keep the connection; larger ones close it. */
export const DUMP_LIMIT = 128 * 1024;

/** Connections per origin: enough for the callers' p-map limits (4–8), bounded for mirrors' sake. */
const MAX_SOCKETS = 16;
/**
 * An idle pooled connection is closed after this long (Node's agent shortens it to
 * a server's `Keep-Alive: timeout=N` minus a second), before most servers drop it
 * themselves and a reused socket would meet a reset.
 */
const FREE_SOCKET_MS = 10_000;

let httpAgent: HttpAgent | undefined;
let httpsAgent: Promise<HttpsAgent> | undefined;

/** CA certificates (PEM file) trusted on every https connection besides Node's roots; see cli/launch.ts. */
let extraCaFile: string | undefined;
let extraCa: Promise<Array<string | Buffer> | undefined> | undefined;

export function setExtraCaFile(file: string | undefined): void {
  extraCaFile = file;
  extraCa = undefined;
}

/** Node's roots and the extra file, read once; undefined without one (Node's defaults then). */
function defaultCa(): Promise<Array<string | Buffer> | undefined> {
  if (extraCaFile === undefined) return Promise.resolve(undefined);
  const file = extraCaFile;
  extraCa ??= Promise.all([import('node:tls'), import('node:fs/promises')]).then(async ([tls, fs]) => {
    try {
      return [...tls.rootCertificates, await fs.readFile(file)];
    } catch (err) {
      // As Node does with NODE_EXTRA_CA_CERTS: a warning, and the usual roots.
      process.emitWarning(`Ignoring extra certs from \`${file}\`, load failed: ${(err as Error).message}`);
      return undefined;
    }
  });
  return extraCa;
}

/** The process-wide keep-alive agents; node:https is loaded only when an https URL comes. */
function agentFor(protocol: string): HttpAgent | Promise<HttpsAgent> {
  if (protocol === 'http:') {
    httpAgent ??= new http.Agent({ keepAlive: true, maxSockets: MAX_SOCKETS, timeout: FREE_SOCKET_MS });
    return httpAgent;
  }
  httpsAgent ??= import('node:https').then((https) => new https.Agent({ keepAlive: true, maxSockets: MAX_SOCKETS, timeout: FREE_SOCKET_MS }));
  return httpsAgent;
}

/**
 * Sends one request and resolves with the response once its headers are in. The
 * caller owns the body: it must read, dump() or destroy() it, or the connection
 * stays taken.
 */
export async function request(url: string | URL, opts: RequestOptions = {}): Promise<HttpResponse> {
  const target = typeof url === 'string' ? new URL(url) : url;
  if (target.protocol !== 'http:' && target.protocol !== 'https:') {
    throw new TypeError(`unsupported URL scheme ${target.protocol} in ${target.href}`);
  }
  opts.signal?.throwIfAborted();
  const agent = await agentFor(target.protocol);
  const timeouts = { ...DEFAULT_TIMEOUTS, ...opts.timeouts };
  const method = (opts.method ?? 'GET').toUpperCase();
  const ca = opts.ca ?? (target.protocol === 'https:' ? await defaultCa() : undefined);
  const nodeOpts: NodeRequestOptions & Pick<HttpSettings, 'ca' | 'cert' | 'key'> = {
    method,
    agent,
    headers: opts.headers ?? {},
    // Part of the agent's pool key: connections with another CA set or client certificate are not shared.
    ...(ca !== undefined ? { ca } : {}),
    ...(opts.cert !== undefined && opts.key !== undefined ? { cert: opts.cert, key: opts.key } : {}),
  };
  // The signal may have fired while node:https was loading.
  opts.signal?.throwIfAborted();
  const send = target.protocol === 'https:' ? (await import('node:https')).request : http.request;
  const req = send(target, nodeOpts);
  return new Promise<HttpResponse>((resolve, reject) => {
    exchange(req, opts, timeouts, method, resolve, reject);
  });
}

/** Wires timeouts, abort and the request body to `req`; settles once the headers are in. */
function exchange(
  req: ClientRequest,
  opts: RequestOptions,
  timeouts: HttpTimeouts,
  method: string,
  resolve: (res: HttpResponse) => void,
  reject: (err: unknown) => void,
): void {
  let res: IncomingMessage | undefined;
  let socket: Socket | undefined;
  let settled = false;
  let done = false;
  let connectTimer: NodeJS.Timeout | undefined;
  let headersTimer: NodeJS.Timeout | undefined;

  /** Ends the exchange with `err`: before the headers the promise rejects, after them the body fails. */
  const fail = (err: Error): void => {
    if (res) {
      // Destroying the IncomingMessage also destroys its socket (it did not complete).
      if (!res.destroyed) res.destroy(err);
    } else {
      req.destroy(err);
    }
  };
  const onIdle = (): void => fail(new HttpError(`no data sent or received for ${timeouts.idleMs} ms`, HTTP_IDLE_TIMEOUT));
  const onAbort = (): void => fail(new RequestAbortedError(opts.signal?.reason));
  const cleanup = (): void => {
    if (done) return;
    done = true;
    clearTimeout(connectTimer);
    clearTimeout(headersTimer);
    opts.signal?.removeEventListener('abort', onAbort);
    // The agent sets its own idle timeout on a socket it takes back into its pool.
    socket?.removeListener('timeout', onIdle);
  };

  // A permanent listener: errors after the response (a timeout, a reset) reach the
  // body's reader through the IncomingMessage; here they must not go unhandled.
  req.on('error', (err) => {
    cleanup();
    if (!settled) {
      settled = true;
      reject(err);
    }
  });
  req.once('close', cleanup);
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  req.once('socket', (s: Socket) => {
    socket = s;
    const ready = (): void => {
      clearTimeout(connectTimer);
      if (done) return;
      s.setTimeout(timeouts.idleMs);
      s.on('timeout', onIdle);
    };
    // A pooled socket is connected already; a new one is still connecting (TCP, then TLS).
    if (s.connecting) {
      connectTimer = setTimeout(() => fail(new HttpError(`no connection within ${timeouts.connectMs} ms`, HTTP_CONNECT_TIMEOUT)), timeouts.connectMs);
      s.once((s as Socket & { encrypted?: boolean }).encrypted ? 'secureConnect' : 'connect', ready);
    } else {
      ready();
    }
  });

  // 'finish': the whole request, body included, is handed to the OS.
  req.once('finish', () => {
    if (res || done) return;
    headersTimer = setTimeout(() => fail(new HttpError(`no response headers within ${timeouts.headersMs} ms`, HTTP_HEADERS_TIMEOUT)), timeouts.headersMs);
  });

  req.once('response', (incoming: IncomingMessage) => {
    res = incoming;
    clearTimeout(headersTimer);
    incoming.once('end', cleanup);
    incoming.once('close', cleanup);
    settled = true;
    resolve({ statusCode: incoming.statusCode ?? 0, headers: responseHeaders(incoming), body: responseBody(incoming, method) });
  });

  sendBody(req, opts.body, opts.headers, (err) => {
    if (!settled) {
      settled = true;
      cleanup();
      reject(err);
    } else if (res && !res.complete && !res.destroyed) {
      res.destroy(err);
    }
  });
}

/**
 * Writes the body; a streamed one failing (or the connection failing under it) goes
 * to `onError`. A stream is piped; any other iterable is pulled one chunk at a time,
 * each handed to the socket before the next is asked for, so that its source may
 * fill the same buffer again (src/store/file-chunks.ts).
 */
function sendBody(
  req: ClientRequest,
  body: RequestBody | undefined,
  headers: Record<string, string> | undefined,
  onError: (err: Error) => void,
): void {
  if (body === undefined) {
    req.end();
    return;
  }
  if (typeof body === 'string' || Buffer.isBuffer(body)) {
    // With nothing written before, end(data) sets Content-Length itself.
    req.end(body);
    return;
  }
  const declared = contentLength(headers);
  if (isStream(body)) {
    // pipeline aborts `req` on an error (a "socket hang up" for the reader), so the
    // error itself is handed on from here.
    pipeline(body, lengthCheck(declared), req, (err) => {
      if (err) onError(err);
    });
    return;
  }
  writeEach(req, lengthCheck(declared)(body)).then(
    () => req.end(),
    (err: Error) => {
      onError(err);
      req.destroy(err);
    },
  );
}

function isStream(body: Readable | AsyncIterable<Uint8Array>): body is Readable {
  return typeof (body as Partial<Readable>).pipe === 'function';
}

async function writeEach(req: ClientRequest, chunks: AsyncIterable<Uint8Array>): Promise<void> {
  for await (const chunk of chunks) await written(req, chunk);
}

/** Resolves once the socket has taken `chunk` (the write's callback), so its memory may be used again. */
function written(req: ClientRequest, chunk: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    // A request destroyed before it had a socket drops what it buffered without calling back.
    const onClose = (): void => reject(Object.assign(new Error('Premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }));
    req.once('close', onClose);
    req.write(chunk, (err) => {
      req.removeListener('close', onClose);
      if (err) reject(err);
      else resolve();
    });
  });
}

/**
 * Passes the request body through, failing it when it overruns or falls short of the
 * declared Content-Length (rather than letting the server wait for bytes that never come).
 */
function lengthCheck(declared: number | undefined) {
  return async function* (source: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    let n = 0;
    for await (const chunk of source) {
      n += chunk.length;
      if (declared !== undefined && n > declared) {
        throw new HttpError(`request body longer than its Content-Length ${declared}`, HTTP_REQUEST_BODY_LENGTH);
      }
      yield chunk;
    }
    if (declared !== undefined && n !== declared) {
      throw new HttpError(`request body of ${n} bytes, Content-Length ${declared}`, HTTP_REQUEST_BODY_LENGTH);
    }
  };
}

function contentLength(headers: Record<string, string> | undefined): number | undefined {
  if (!headers) return undefined;
  for (const [name, value] of Object.entries(headers)) {
    if (name.toLowerCase() === 'content-length' && /^\d+$/.test(value.trim())) return Number(value.trim());
  }
  return undefined;
}

/** headersDistinct keeps every repeated header (Node's `headers` joins or drops repeats). */
function responseHeaders(res: IncomingMessage): ResponseHeaders {
  const out: ResponseHeaders = {};
  for (const [name, values] of Object.entries(res.headersDistinct)) {
    if (values === undefined) continue;
    out[name] = values.length === 1 ? values[0] : values;
  }
  return out;
}

function responseBody(res: IncomingMessage, method: string): ResponseBody {
  let used = false;
  const declared = method === 'HEAD' ? 0 : contentLength(res.headers as Record<string, string>);
  const readAll = async (): Promise<Buffer> => {
    used = true;
    const chunks: Buffer[] = [];
    for await (const chunk of res as AsyncIterable<Buffer>) chunks.push(chunk);
    return Buffer.concat(chunks);
  };
  const helpers = {
    async dump(this: void): Promise<void> {
      used = true;
      if (res.readableEnded || res.destroyed) return;
      if (declared !== undefined && declared > DUMP_LIMIT) {
        res.destroy();
        return;
      }
      let n = 0;
      try {
        for await (const chunk of res as AsyncIterable<Buffer>) {
          n += chunk.length;
          // Leaving the loop destroys the body, and with it the connection.
          if (n > DUMP_LIMIT) break;
        }
      } catch {
        // Discarded either way.
      }
    },
    async text(this: void): Promise<string> {
      return (await readAll()).toString('utf8');
    },
    async json(this: void): Promise<unknown> {
      return JSON.parse((await readAll()).toString('utf8')) as unknown;
    },
  };
  const body = Object.assign(res, helpers);
  Object.defineProperty(body, 'bodyUsed', { get: () => used || body.readableDidRead || body.destroyed });
  return body as typeof body & { readonly bodyUsed: boolean };
}
