/**
 * HTTP downloads from apt mirrors: one shared keep-alive Agent, retries with jittered
 * exponential backoff for transient failures (connection errors, 408/429/5xx,
 * truncated bodies), and errors a user can act on for the permanent ones.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { Agent, interceptors, request, type Dispatcher } from 'undici';
import { OcibuildError } from '../errors.js';
import type { BlobInfo, ExpectedBlob, Store } from '../store/store.js';

export interface FetchOptions {
  signal?: AbortSignal;
  /** Retries after the first attempt (default 4). */
  retries?: number;
  /** Base of the exponential backoff in ms (default 250); tests make it small. */
  backoffMs?: number;
  log?: (line: string) => void;
  dispatcher?: Dispatcher;
}

/** 404/410: a missing file, which callers may treat as "try the next candidate". */
export class NotFoundError extends OcibuildError {
  readonly url: string;
  constructor(url: string) {
    super(`not found: ${url}`, {
      where: url,
      hint: 'check the source url, suite and component names',
    });
    this.url = url;
  }
}

let sharedDispatcher: Dispatcher | undefined;

/** The process-wide dispatcher: keep-alive, bounded timeouts, a few redirects (http→https mirrors). */
export function httpDispatcher(): Dispatcher {
  sharedDispatcher ??= new Agent({
    keepAliveTimeout: 10_000,
    keepAliveMaxTimeout: 60_000,
    connect: { timeout: 15_000 },
    headersTimeout: 30_000,
    // Between body chunks, not for the whole body: large Packages files take a while.
    bodyTimeout: 60_000,
    connections: 16,
  }).compose(interceptors.redirect({ maxRedirections: 5 }));
  return sharedDispatcher;
}

/** Downloads `url` into memory (InRelease, Release, Release.gpg: small files). */
export async function fetchBuffer(url: string, opts: FetchOptions = {}): Promise<Buffer> {
  return withRetries(url, opts, async () => {
    const { body, length } = await open(url, opts);
    const chunks: Buffer[] = [];
    for await (const chunk of checkLength(body, length)) chunks.push(chunk);
    return Buffer.concat(chunks);
  });
}

/**
 * Streams `url` into the store, verified against `expect` while writing. A digest
 * mismatch is final (a corrupt or tampered mirror); a truncated body is retried.
 */
export async function fetchToStore(
  url: string,
  store: Store,
  expect: ExpectedBlob = {},
  opts: FetchOptions = {},
): Promise<BlobInfo> {
  return withRetries(url, opts, async () => {
    const { body, length } = await open(url, opts);
    if (expect.size !== undefined && length !== undefined && length !== expect.size) {
      body.destroy();
      throw new OcibuildError(`size mismatch: the server sends ${length} bytes, expected ${expect.size}`, {
        where: url,
        hint: 'the mirror may be out of sync; retry later or use another mirror',
      });
    }
    return store.putStream(checkLength(body, length), expect, url, opts.signal);
  });
}

/** Thrown for failures worth another attempt; never escapes withRetries. */
class Transient extends Error {
  constructor(
    message: string,
    readonly status?: number,
    cause?: unknown,
  ) {
    super(message, cause === undefined ? undefined : { cause });
  }
}

type Body = Dispatcher.ResponseData['body'];

async function open(url: string, opts: FetchOptions): Promise<{ body: Body; length: number | undefined }> {
  let res: Dispatcher.ResponseData;
  try {
    res = await request(url, {
      method: 'GET',
      dispatcher: opts.dispatcher ?? httpDispatcher(),
      signal: opts.signal,
      headers: { 'user-agent': 'ocibuild' },
    });
  } catch (err) {
    throw classifyNetworkError(err);
  }
  const { statusCode, body } = res;
  if (statusCode === 200) {
    const raw = res.headers['content-length'];
    const length = typeof raw === 'string' && /^\d+$/.test(raw) ? Number(raw) : undefined;
    return { body, length };
  }
  // Drain so the keep-alive connection can be reused.
  await body.dump().catch(() => undefined);
  if (statusCode === 404 || statusCode === 410) throw new NotFoundError(url);
  if (statusCode === 408 || statusCode === 429 || statusCode >= 500) {
    throw new Transient(`HTTP ${statusCode}`, statusCode);
  }
  throw new OcibuildError(`HTTP ${statusCode} while downloading ${url}`, {
    where: url,
    hint: statusCode === 401 || statusCode === 403 ? 'the mirror refuses access; check the source url' : 'check the source url',
  });
}

/** Counts bytes against Content-Length: a short body is a Transient failure, not data. */
async function* checkLength(body: Body, length: number | undefined): AsyncGenerator<Buffer> {
  let n = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      n += chunk.length;
      yield chunk;
    }
  } catch (err) {
    throw classifyNetworkError(err);
  }
  if (length !== undefined && n !== length) {
    throw new Transient(`truncated body: ${n} of ${length} bytes`);
  }
}

const TRANSIENT_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
]);

function classifyNetworkError(err: unknown): unknown {
  if (err instanceof OcibuildError || err instanceof Transient) return err;
  if (isAbort(err)) return err;
  const code = errorCode(err);
  if (code !== undefined && TRANSIENT_CODES.has(code)) return new Transient(code, undefined, err);
  return err;
}

/** The first system/undici code found on the error, its cause, or its AggregateError parts. */
export function errorCode(err: unknown, depth = 0): string | undefined {
  if (depth > 4 || typeof err !== 'object' || err === null) return undefined;
  const e = err as { code?: unknown; cause?: unknown; errors?: unknown };
  if (typeof e.code === 'string') return e.code;
  if (Array.isArray(e.errors)) {
    for (const inner of e.errors) {
      const c = errorCode(inner, depth + 1);
      if (c) return c;
    }
  }
  return errorCode(e.cause, depth + 1);
}

function isAbort(err: unknown): boolean {
  const name = (err as { name?: unknown } | null)?.name;
  return name === 'AbortError' || errorCode(err) === 'UND_ERR_ABORTED' || errorCode(err) === 'ABORT_ERR';
}

async function withRetries<T>(url: string, opts: FetchOptions, attempt: () => Promise<T>): Promise<T> {
  const retries = opts.retries ?? 4;
  const base = opts.backoffMs ?? 250;
  for (let i = 0; ; i++) {
    opts.signal?.throwIfAborted();
    try {
      return await attempt();
    } catch (err) {
      if (!(err instanceof Transient)) throw err;
      if (i >= retries) throw finalError(err, url, i + 1);
      // Full jitter: spreads retries from parallel downloads hitting the same mirror.
      const wait = Math.round(base * 2 ** i * (0.5 + Math.random() / 2));
      opts.log?.(`retrying ${url} in ${wait} ms (${err.message})`);
      await delay(wait, undefined, opts.signal ? { signal: opts.signal } : {});
    }
  }
}

function finalError(err: Transient, url: string, attempts: number): OcibuildError {
  const tries = attempts === 1 ? '1 attempt' : `${attempts} attempts`;
  if (err.status !== undefined) {
    return new OcibuildError(`HTTP ${err.status} from the mirror (${tries})`, {
      where: url,
      hint: 'the mirror is failing; retry later or use another mirror',
      cause: err,
    });
  }
  const code = errorCode(err.cause);
  if (code !== undefined) {
    const host = hostOf(url);
    return new OcibuildError(`cannot download from ${host}: ${code} (${tries})`, {
      where: url,
      hint:
        code === 'ENOTFOUND' || code === 'EAI_AGAIN'
          ? `the host name ${host} does not resolve; check the source url and your network/DNS`
          : 'check the source url and your network connection',
      cause: err,
    });
  }
  return new OcibuildError(`download failed: ${err.message} (${tries})`, {
    where: url,
    hint: 'the connection to the mirror is unreliable; retry later or use another mirror',
    cause: err,
  });
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}
