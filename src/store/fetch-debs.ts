/**
 * Downloads the .debs of a lockfile into the store: in parallel (p-map, bounded),
 * each blob under its inter-process lock, resumable across attempts and processes,
 * verified against the lock's sha256 and size before it becomes a blob.
 */
import { unlink } from 'node:fs/promises';
import { join } from 'node:path';
import pMap from 'p-map';
import { fetchToFile, NotFoundError, SizeMismatchError } from '../apt/http.js';
import type { LockEntry } from '../apt/lockfile.js';
import { OcibuildError } from '../errors.js';
import { withBlobLock } from './lock.js';
import type { Store } from './store.js';

export interface ProgressEvent {
  kind: 'start' | 'progress' | 'done' | 'skip';
  package: string;
  /** Bytes of this package downloaded so far (a resumed download counts its prefix). */
  bytes: number;
  /** The package's size from the lock. */
  total: number;
}

export interface FetchDebsOptions {
  store: Store;
  /** Archive roots to try in order for an entry; default `[entry.url]`. */
  mirrors?: (entry: LockEntry) => string[];
  /** Parallel downloads; default 4. */
  concurrency?: number;
  signal?: AbortSignal;
  onProgress?: (ev: ProgressEvent) => void;
  /** Retries per mirror after the first attempt (default 4). */
  retries?: number;
  /** Backoff base in ms (default 250); tests make it small. */
  backoffMs?: number;
  log?: (line: string) => void;
}

export interface FetchedDeb {
  /** `sha256:<hex>` */
  digest: string;
  /** The blob's path in the store. */
  path: string;
}

/**
 * Makes every entry's .deb present in the store. The result is keyed by package name;
 * when one name appears for several architectures (multi-arch), those entries are
 * keyed `package:architecture` instead.
 */
export async function fetchDebs(entries: LockEntry[], opts: FetchDebsOptions): Promise<Map<string, FetchedDeb>> {
  const names = new Map<string, number>();
  for (const e of entries) names.set(e.package, (names.get(e.package) ?? 0) + 1);
  const keyOf = (e: LockEntry): string => ((names.get(e.package) ?? 0) > 1 ? `${e.package}:${e.architecture}` : e.package);

  // The first failure (or the caller's abort) stops the other downloads, and fetchDebs
  // settles only once every one of them has stopped and released its lock: p-map's
  // own stopOnError/signal would return while downloads are still running.
  const stop = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, stop.signal]) : stop.signal;
  let firstError: { err: unknown } | undefined;
  const fetched = await pMap(
    entries,
    async (entry): Promise<[string, FetchedDeb] | undefined> => {
      if (signal.aborted) return undefined;
      try {
        return [keyOf(entry), await fetchOne(entry, { ...opts, signal })];
      } catch (err) {
        firstError ??= { err };
        stop.abort();
        return undefined;
      }
    },
    { concurrency: opts.concurrency ?? 4 },
  );
  opts.signal?.throwIfAborted();
  if (firstError) throw firstError.err;
  return new Map(fetched.filter((r): r is [string, FetchedDeb] => r !== undefined));
}

async function fetchOne(entry: LockEntry, opts: FetchDebsOptions): Promise<FetchedDeb> {
  const { store } = opts;
  const digest = `sha256:${entry.sha256}`;
  const result: FetchedDeb = { digest, path: store.blobPath(digest) };
  const emit = (kind: ProgressEvent['kind'], bytes: number): void =>
    opts.onProgress?.({ kind, package: entry.package, bytes, total: entry.size });

  if (await store.has(digest)) {
    emit('skip', entry.size);
    return result;
  }
  return withBlobLock(
    store,
    digest,
    async () => {
      // Another process may have stored it while we waited for the lock.
      if (await store.has(digest)) {
        emit('skip', entry.size);
        return result;
      }
      emit('start', 0);
      await downloadFromMirrors(entry, digest, opts, (bytes) => emit('progress', bytes));
      emit('done', entry.size);
      return result;
    },
    opts.signal ? { signal: opts.signal } : {},
  );
}

async function downloadFromMirrors(
  entry: LockEntry,
  digest: string,
  opts: FetchDebsOptions,
  onBytes: (bytes: number) => void,
): Promise<void> {
  const mirrors = opts.mirrors?.(entry) ?? [entry.url];
  if (mirrors.length === 0) throw new Error(`no mirror for ${entry.package}`);
  // Named by digest, not by process: the lock holder owns it, and a killed holder's
  // prefix is resumed by the next one.
  const partial = join(await opts.store.tmpDir(), `${entry.sha256}.partial`);
  const errors: Array<{ url: string; err: unknown }> = [];
  for (const mirror of mirrors) {
    const url = joinUrl(mirror, entry.filename);
    try {
      await downloadVerified(entry, digest, url, partial, opts, onBytes);
      return;
    } catch (err) {
      // Aborts and internal bugs stop everything; a user-facing failure of one
      // mirror (404, refused, mismatch, retries spent) moves on to the next.
      if (!(err instanceof OcibuildError)) throw err;
      errors.push({ url, err });
      opts.log?.(`${entry.package}: ${err.message}${mirrors.length > 1 ? '; trying the next mirror' : ''}`);
    }
  }
  throw summarize(entry, errors);
}

/** One mirror: resume or download into `partial`, then admit it into the store as a whole. */
async function downloadVerified(
  entry: LockEntry,
  digest: string,
  url: string,
  partial: string,
  opts: FetchDebsOptions,
  onBytes: (bytes: number) => void,
): Promise<void> {
  const fetchOpts = {
    onBytes,
    ...(opts.signal ? { signal: opts.signal } : {}),
    ...(opts.retries !== undefined ? { retries: opts.retries } : {}),
    ...(opts.backoffMs !== undefined ? { backoffMs: opts.backoffMs } : {}),
    ...(opts.log ? { log: opts.log } : {}),
  };
  // A prefix kept from an earlier attempt, process or mirror may not be of this
  // file, so a mismatch after resuming earns one full download before it counts.
  for (let fresh = false; ; fresh = true) {
    let resumed: boolean;
    try {
      ({ resumed } = await fetchToFile(url, partial, entry.size, fetchOpts));
    } catch (err) {
      if (err instanceof SizeMismatchError) {
        await unlink(partial).catch(() => undefined);
        throw mismatch('size', entry, url, `the mirror sends ${err.actual} bytes, the lock records ${entry.size}`);
      }
      throw err;
    }
    try {
      await opts.store.putFile(partial, { digest, size: entry.size }, url, opts.signal);
      return;
    } catch (err) {
      // putFile has deleted the partial: the bad bytes are gone.
      if (!(err instanceof OcibuildError)) throw err;
      if (resumed && !fresh) continue;
      const kind = /^size/.test(err.message) ? 'size' : 'sha256';
      throw mismatch(kind, entry, url, 'the mirror serves a different file than the lock records');
    }
  }
}

class MismatchError extends OcibuildError {}

function mismatch(kind: 'size' | 'sha256', entry: LockEntry, url: string, why: string): MismatchError {
  return new MismatchError(`${kind} mismatch for ${entry.package} ${entry.version} from ${url}: ${why}`, {
    where: url,
    hint: 'the mirror may be out of sync, behind a caching proxy serving stale files, or tampered with; retry later, use another mirror, or re-run `ocibuild lock` if the archive changed',
  });
}

/** The error that best explains why no mirror worked: a mismatch beats a 404. */
function summarize(entry: LockEntry, errors: Array<{ url: string; err: unknown }>): OcibuildError {
  const mis = errors.find((e) => e.err instanceof MismatchError);
  if (mis) return mis.err as MismatchError;
  if (errors.length > 0 && errors.every((e) => e.err instanceof NotFoundError)) {
    return new OcibuildError(
      `${entry.package} ${entry.version} not found on any mirror: ${errors.map((e) => e.url).join(', ')}`,
      {
        where: errors[0]?.url,
        hint: 'the archive may have dropped this version (superseded); re-run `ocibuild lock`, or add a snapshot mirror',
      },
    );
  }
  const last = errors[errors.length - 1]?.err;
  if (errors.length === 1 && last instanceof OcibuildError) return last;
  return new OcibuildError(
    `cannot download ${entry.package} ${entry.version}: ${errors.map((e) => `${e.url}: ${(e.err as Error).message}`).join('; ')}`,
    {
      where: errors[0]?.url,
      hint: last instanceof OcibuildError && last.hint ? last.hint : 'check the mirrors and your network',
      cause: last,
    },
  );
}

function joinUrl(mirror: string, filename: string): string {
  return `${mirror.replace(/\/+$/, '')}/${filename.replace(/^\/+/, '')}`;
}
