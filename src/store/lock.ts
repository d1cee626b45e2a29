/**
 * Inter-process locks on store blobs, so that two ocibuild processes sharing a store
 * never download the same blob at the same time.
 *
 * Why lock files and not flock: Node has no flock/fcntl binding, and a native addon
 * for this alone is not worth it. Exclusive creation is the portable primitive, so a
 * lock is the file `<root>/locks/<hex>.lock`. It is written completely under a unique
 * temporary name (opened with `wx`) and then hard-linked to the lock name: link(2)
 * fails with EEXIST exactly like O_EXCL, but a lock file can never be seen empty or
 * half-written, so a holder killed between "create" and "write" cannot leave a lock
 * nobody can judge.
 *
 * A lock records who holds it: pid, the process's start time (Linux /proc, so a
 * recycled pid is not mistaken for the holder), and a host key (hostname + pid
 * namespace). A waiter polls with bounded backoff and treats the lock as stale when
 * - same host key: the holder is gone (kill(pid, 0) → ESRCH, a zombie, or another
 *   process now running under that pid); a lock with our own pid but not one of our
 *   tokens is a previous incarnation's (containers reuse pids from run to run);
 * - another host or pid namespace (a store on a shared volume), where pids mean
 *   nothing: the holder stopped refreshing the lock's mtime (a heartbeat) for
 *   `staleMs`.
 * Stale locks are removed under a short "break" lock, so that two waiters that both
 * judged the same lock stale cannot remove a fresh lock taken in between.
 *
 * Within one process, holders of the same digest are queued in memory first, so the
 * file lock is only ever contended between processes.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, readlinkSync } from 'node:fs';
import { link, mkdir, readFile, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { digestHex, type Store } from './store.js';

export interface BlobLockOptions {
  signal?: AbortSignal;
  /** Age after which a lock from another host (no heartbeat seen) is stale; default 60 s. */
  staleMs?: number;
}

export interface LockRecord {
  pid: number;
  token: string;
  host: string;
  /** /proc/<pid>/stat start time (clock ticks since boot), null where unknown. */
  start: string | null;
}

// Polling waits for another process's download; bounded so a released lock is taken
// quickly without spinning on the file system.
const POLL_MIN_MS = 10;
const POLL_MAX_MS = 250;
const DEFAULT_STALE_MS = 60_000;

/** In-process queue per lock path: the tail promise of the current holders. */
const localQueues = new Map<string, Promise<void>>();
/** Tokens of locks this process holds, to tell them from a recycled pid's. */
const ownTokens = new Set<string>();

/**
 * Runs `fn` while holding the store's lock for `digest`, waiting for another
 * process (or another caller in this one) that holds it. The lock is released when
 * `fn` settles, and waiting stops with an AbortError when `signal` aborts.
 */
export async function withBlobLock<T>(
  store: Store,
  digest: string,
  fn: () => Promise<T>,
  opts: BlobLockOptions = {},
): Promise<T> {
  const path = lockPath(store, digest);
  const previous = localQueues.get(path) ?? Promise.resolve();
  let releaseLocal!: () => void;
  const mine = new Promise<void>((ok) => (releaseLocal = ok));
  const tail = previous.then(() => mine);
  localQueues.set(path, tail);
  try {
    await abortable(previous, opts.signal);
    const held = await acquire(path, opts);
    try {
      return await fn();
    } finally {
      await held.release();
    }
  } finally {
    releaseLocal();
    if (localQueues.get(path) === tail) localQueues.delete(path);
  }
}

/**
 * Waits while another process holds the lock of `digest`, without keeping it once
 * free; returns at once when the lock is free or this process holds it. How a reader
 * that has just marked an entry used (store/last-use.ts) orders itself after a
 * `cache prune` that may be removing it under this lock.
 */
export async function waitForBlobLock(store: Store, digest: string, opts: BlobLockOptions = {}): Promise<void> {
  const holder = await readRecord(lockPath(store, digest));
  if (holder === undefined || ownTokens.has(holder.token)) return;
  await withBlobLock(store, digest, async () => undefined, opts);
}

/**
 * A record naming this process, for holds that are not blob locks (a running build's
 * registration, store/builds.ts): judged by isStale() exactly like a lock file.
 * `drop()` forgets it once the hold is released.
 */
export function claimRecord(): { record: LockRecord; drop(): void } {
  const record: LockRecord = { pid: process.pid, token: randomBytes(12).toString('hex'), host: hostKey(), start: startTime(process.pid) };
  ownTokens.add(record.token);
  return { record, drop: () => ownTokens.delete(record.token) };
}

function lockPath(store: Store, digest: string): string {
  return join(store.root, 'locks', `${digestHex(digest)}.lock`);
}

interface HeldLock {
  release(): Promise<void>;
}

async function acquire(path: string, opts: BlobLockOptions): Promise<HeldLock> {
  const staleMs = opts.staleMs ?? DEFAULT_STALE_MS;
  await mkdir(dirname(path), { recursive: true });
  const record: LockRecord = { pid: process.pid, token: randomBytes(12).toString('hex'), host: hostKey(), start: startTime(process.pid) };
  let wait = POLL_MIN_MS;
  for (;;) {
    opts.signal?.throwIfAborted();
    if (await tryCreate(path, record)) break;
    const holder = await readRecord(path);
    if (holder === undefined || (await isStale(path, holder, staleMs))) {
      if (holder !== undefined) await breakStale(path, holder, staleMs);
      continue;
    }
    await delay(wait * (0.5 + Math.random() / 2), undefined, opts.signal ? { signal: opts.signal } : {});
    wait = Math.min(POLL_MAX_MS, wait * 2);
  }
  ownTokens.add(record.token);
  // The heartbeat is what other hosts judge the lock by; unref'd so a held lock never
  // keeps the process alive by itself.
  const beat = setInterval(() => {
    const now = new Date();
    utimes(path, now, now).catch(() => undefined);
  }, Math.max(1000, Math.floor(staleMs / 6)));
  beat.unref();
  return {
    async release(): Promise<void> {
      clearInterval(beat);
      ownTokens.delete(record.token);
      // Only ever remove our own lock: if it was broken as stale (another host that
      // missed our heartbeat), the file now belongs to someone else.
      const current = await readRecord(path);
      if (current?.token === record.token) await unlink(path).catch(ignoreNotFound);
    },
  };
}

/** Exclusive creation of a complete lock file; false when the lock is taken. */
async function tryCreate(path: string, record: LockRecord): Promise<boolean> {
  const tmp = `${path}.${record.token}.new`;
  await writeFile(tmp, JSON.stringify(record) + '\n', { flag: 'wx' });
  try {
    await link(tmp, path);
    return true;
  } catch (err) {
    if (errno(err) === 'EEXIST') return false;
    throw err;
  } finally {
    await unlink(tmp).catch(ignoreNotFound);
  }
}

async function readRecord(path: string): Promise<LockRecord | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if (errno(err) === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const v = JSON.parse(text) as Partial<LockRecord>;
    if (typeof v.pid === 'number' && typeof v.token === 'string' && typeof v.host === 'string') {
      return { pid: v.pid, token: v.token, host: v.host, start: typeof v.start === 'string' ? v.start : null };
    }
  } catch {
    // Not ours (written by hand or by a future format): judged below as foreign.
  }
  // An unreadable record can only be judged by age, like a foreign host's lock.
  return { pid: 0, token: `unparsable:${text}`, host: '', start: null };
}

/** Whether the process named by `holder` (read from the file at `path`) is gone. */
export async function isStale(path: string, holder: LockRecord, staleMs: number = DEFAULT_STALE_MS): Promise<boolean> {
  if (holder.host === hostKey() && holder.pid > 0) {
    if (holder.pid === process.pid) return !ownTokens.has(holder.token);
    return !isAlive(holder);
  }
  try {
    return Date.now() - (await stat(path)).mtimeMs > staleMs;
  } catch (err) {
    if (errno(err) === 'ENOENT') return true;
    throw err;
  }
}

function isAlive(holder: LockRecord): boolean {
  try {
    process.kill(holder.pid, 0);
  } catch (err) {
    // EPERM: alive, owned by another user sharing the store.
    return errno(err) !== 'ESRCH';
  }
  const stat = procStat(holder.pid);
  if (stat === undefined) return true;
  // A zombie has exited; a different start time is another process reusing the pid.
  if (stat.state === 'Z' || stat.state === 'X') return false;
  return holder.start === null || stat.start === holder.start;
}

/**
 * Removes `stale` if it is still the lock at `path`, under `<path>.break` so that the
 * check and the unlink are one step for every other breaker. A breaker killed inside
 * this short section leaves a break lock that is itself judged by pid.
 */
async function breakStale(path: string, stale: LockRecord, staleMs: number): Promise<void> {
  const guard = `${path}.break`;
  const me: LockRecord = { pid: process.pid, token: randomBytes(12).toString('hex'), host: hostKey(), start: startTime(process.pid) };
  if (!(await tryCreate(guard, me))) {
    const other = await readRecord(guard);
    if (other !== undefined && (await isStale(guard, other, staleMs))) {
      const again = await readRecord(guard);
      if (again?.token === other.token) await unlink(guard).catch(ignoreNotFound);
    }
    return;
  }
  try {
    const current = await readRecord(path);
    if (current?.token === stale.token) await unlink(path).catch(ignoreNotFound);
  } finally {
    await unlink(guard).catch(ignoreNotFound);
  }
}

let cachedHostKey: string | undefined;

/** hostname + pid namespace: where a pid names the same process as here. */
function hostKey(): string {
  if (cachedHostKey === undefined) {
    let ns = '';
    try {
      ns = readlinkSync('/proc/self/ns/pid');
    } catch {
      // Not Linux: the hostname alone.
    }
    cachedHostKey = `${hostname()}/${ns}`;
  }
  return cachedHostKey;
}

function procStat(pid: number): { state: string; start: string } | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // proc(5): "pid (comm) state ..." where comm may hold spaces and parentheses;
  // starttime is field 22, the 20th after the closing parenthesis.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = fields[0];
  const start = fields[19];
  return state !== undefined && start !== undefined ? { state, start } : undefined;
}

function startTime(pid: number): string | null {
  return procStat(pid)?.start ?? null;
}

async function abortable(p: Promise<void>, signal: AbortSignal | undefined): Promise<void> {
  if (!signal) return p;
  signal.throwIfAborted();
  let onAbort!: () => void;
  const aborted = new Promise<never>((_, fail) => {
    onAbort = () => fail(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    await Promise.race([p, aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

function ignoreNotFound(err: unknown): void {
  if (errno(err) !== 'ENOENT') throw err;
}
