/**
 * HTTP downloads from apt mirrors: the shared keep-alive client of src/http, up to 5
 * redirects (mirrors send http to https or to a nearby host), retries with jittered
 * exponential backoff for transient failures (connection errors, timeouts, 408/429/5xx,
 * truncated bodies), and errors a user can act on for the permanent ones.
 */
import { open as openFile, stat, truncate } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { OcibuildError } from '../errors.js';
import {
  request,
  type HttpResponse,
  type HttpSettings,
  type HttpTimeouts,
  type ResponseBody,
} from '../http/client.js';
import type { BlobInfo, ExpectedBlob, Store } from '../store/store.js';
import { errorCode, isAbortError, TRANSIENT_NETWORK_CODES } from '../http/errors.js';

export interface FetchOptions {
  signal?: AbortSignal;
  /** Retries after the first attempt (default 4). */
  retries?: number;
  /** Base of the exponential backoff in ms (default 250); tests make it small. */
  backoffMs?: number;
  log?: (line: string) => void;
  /** Timeouts (defaults: MIRROR_TIMEOUTS) and extra CAs for the HTTP client. */
  http?: HttpSettings;
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

/**
 * Mirror timeouts: a large Packages file or .deb takes a while, so the idle limit is
 * between bytes, never for the whole body.
 */
export const MIRROR_TIMEOUTS: Readonly<HttpTimeouts> = { connectMs: 15_000, headersMs: 30_000, idleMs: 60_000 };

/** Redirects followed per request (http→https mirrors, mirror redirectors). */
const MAX_REDIRECTS = 5;

/** GET `url`, following redirects; the Range header (if any) goes along to the new location. */
async function get(url: string, headers: Record<string, string>, opts: FetchOptions): Promise<HttpResponse> {
  let at = url;
  for (let hops = 0; ; hops++) {
    const res = await request(at, {
      method: 'GET',
      headers,
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...opts.http,
      timeouts: { ...MIRROR_TIMEOUTS, ...opts.http?.timeouts },
    });
    const location = res.headers.location;
    if ([301, 302, 303, 307, 308].includes(res.statusCode) && typeof location === 'string' && hops < MAX_REDIRECTS) {
      await res.body.dump();
      at = new URL(location, at).toString();
      continue;
    }
    return res;
  }
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

export interface ResumableOptions extends FetchOptions {
  /** Called after bytes reach the file, with the file's size so far. */
  onBytes?: (bytesInFile: number) => void;
}

/**
 * Downloads `url` into `file`, continuing after whatever the file already holds (an
 * earlier attempt's or a killed process's prefix) with a Range request, so a
 * truncated transfer costs only the missing bytes. The file is always a prefix of
 * the response: bytes are counted only once written. Nothing is verified here beyond
 * `expectedSize`; the caller hashes the whole file.
 *
 * Retries: connection errors, 408/429/5xx and truncation, with backoff; an attempt
 * that added bytes resets the count, so a flaky but moving transfer completes.
 */
export async function fetchToFile(
  url: string,
  file: string,
  expectedSize: number | undefined,
  opts: ResumableOptions = {},
): Promise<{ size: number; resumed: boolean }> {
  const retries = opts.retries ?? 4;
  const base = opts.backoffMs ?? 250;
  let resumed = false;
  for (let failures = 0; ; ) {
    opts.signal?.throwIfAborted();
    let have = await fileSize(file);
    if (expectedSize !== undefined && have > expectedSize) {
      await truncate(file, 0);
      have = 0;
    }
    if (expectedSize !== undefined && have === expectedSize && have > 0) return { size: have, resumed: true };
    let written = have;
    try {
      const res = await openAt(url, have, opts);
      if (expectedSize !== undefined && res.total !== undefined && res.total !== expectedSize) {
        await res.body.dump().catch(() => undefined);
        throw new SizeMismatchError(url, res.total, expectedSize);
      }
      if (res.start > 0) resumed = true;
      written = res.start;
      const fh = await openFile(file, res.start === 0 ? 'w' : 'a');
      try {
        for await (const chunk of checkLength(res.body, res.length)) {
          await fh.write(chunk);
          written += chunk.length;
          opts.onBytes?.(written);
        }
      } finally {
        await fh.close();
      }
      return { size: written, resumed };
    } catch (err) {
      if (err instanceof RangeNotSatisfiable) {
        // The server's file is not longer than our prefix (or it answered another
        // range): the prefix cannot be trusted to be of this file.
        await truncate(file, 0);
      } else if (!(err instanceof Transient)) {
        throw err;
      }
      failures = written > have ? 0 : failures + 1;
      if (failures > retries) throw finalError(err instanceof Transient ? err : new Transient(err.message), url, failures);
      if (failures > 0) {
        const wait = Math.round(base * 2 ** (failures - 1) * (0.5 + Math.random() / 2));
        opts.log?.(`retrying ${url} in ${wait} ms (${err.message})`);
        await delay(wait, undefined, opts.signal ? { signal: opts.signal } : {});
      } else {
        opts.log?.(`resuming ${url} at byte ${written} (${err.message})`);
      }
    }
  }
}

/** The server's size for a file differs from the one expected (Content-Length or Content-Range). */
export class SizeMismatchError extends OcibuildError {
  constructor(
    readonly url: string,
    readonly actual: number,
    readonly expected: number,
  ) {
    super(`size mismatch: the server sends ${actual} bytes, expected ${expected}`, {
      where: url,
      hint: 'the mirror may be out of sync; retry later or use another mirror',
    });
  }
}

class RangeNotSatisfiable extends Error {}

async function fileSize(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return 0;
    throw err;
  }
}

/** GET from byte `offset` on; `start` is where the body really begins (0 when a server ignores Range). */
async function openAt(
  url: string,
  offset: number,
  opts: FetchOptions,
): Promise<{ body: Body; start: number; length: number | undefined; total: number | undefined }> {
  let res: HttpResponse;
  try {
    res = await get(url, offset > 0 ? { 'user-agent': 'ocibuild', range: `bytes=${offset}-` } : { 'user-agent': 'ocibuild' }, opts);
  } catch (err) {
    throw classifyNetworkError(err);
  }
  const { statusCode, body } = res;
  const length = numberHeader(res.headers['content-length']);
  if (statusCode === 200) return { body, start: 0, length, total: length };
  if (statusCode === 206) {
    const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(String(res.headers['content-range'] ?? '').trim());
    if (m && Number(m[1]) === offset) return { body, start: offset, length, total: m[3] === '*' ? undefined : Number(m[3]) };
    await body.dump().catch(() => undefined);
    // A range we did not ask for: start over rather than splice unknown bytes.
    throw new RangeNotSatisfiable(`unexpected Content-Range ${String(res.headers['content-range'])} for bytes=${offset}-`);
  }
  await body.dump().catch(() => undefined);
  if (statusCode === 416) throw new RangeNotSatisfiable(`HTTP 416 for bytes=${offset}-`);
  if (statusCode === 404 || statusCode === 410) throw new NotFoundError(url);
  if (statusCode === 408 || statusCode === 429 || statusCode >= 500) throw new Transient(`HTTP ${statusCode}`, statusCode);
  throw new OcibuildError(`HTTP ${statusCode} while downloading ${url}`, {
    where: url,
    hint: statusCode === 401 || statusCode === 403 ? 'the mirror refuses access; check the source url' : 'check the source url',
  });
}

function numberHeader(raw: string | string[] | undefined): number | undefined {
  return typeof raw === 'string' && /^\d+$/.test(raw) ? Number(raw) : undefined;
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

type Body = ResponseBody;

/** A plain GET of the whole body (openAt from byte 0: a server never answers 206 to it). */
async function open(url: string, opts: FetchOptions): Promise<{ body: Body; length: number | undefined }> {
  const { body, length } = await openAt(url, 0, opts);
  return { body, length };
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

// A mirror host that does not resolve may be a DNS hiccup: mirrors get another attempt.
const TRANSIENT_CODES = new Set([...TRANSIENT_NETWORK_CODES, 'ENOTFOUND']);

function classifyNetworkError(err: unknown): unknown {
  if (err instanceof OcibuildError || err instanceof Transient) return err;
  if (isAbortError(err)) return err;
  const code = errorCode(err);
  if (code !== undefined && TRANSIENT_CODES.has(code)) return new Transient(code, undefined, err);
  return err;
}

export { errorCode };

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
