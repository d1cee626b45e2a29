/**
 * `ocibuild cache prune`: removes store entries, least recently used first, until the
 * store is under a size and/or nothing unused for longer than a duration is left.
 *
 * Never what a running build holds. A build registers itself (store/builds.ts) and
 * marks every entry it uses (store/last-use.ts), so everything used since the oldest
 * running build started is held; so is everything used since this prune started (a
 * build that registered after it looked). Each removal happens under the entry's lock
 * (the blob's own, rootfsFor's for a rootfs, the cache mount's), re-checking the last
 * use there: a build marking an entry used waits for that lock before relying on it,
 * so it either finds the entry gone (and makes it again) or the prune saw its mark.
 *
 * Trees are renamed out of the way first (a rootfs to the `.tmp-` name rootfsFor
 * cleans up, a cache mount to a dot name) and then deleted: a build never sees half a
 * tree, and a prune killed while deleting leaves a leftover the next one removes.
 */
import { randomBytes } from 'node:crypto';
import { lstat, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { rmTree } from '../sandbox/overlay.js';
import { rootfsLockKey } from '../sandbox/rootfs.js';
import { withBlobLock } from '../store/lock.js';
import type { Store } from '../store/store.js';
import { storeInventory, type StoreEntry, type StoreInventory } from './cache-inventory.js';
import { cacheMountLockKey } from './tracked.js';

export interface PruneCriteria {
  /** Remove least recently used entries until the store holds at most this many bytes. */
  keepBytes?: number;
  /** Remove what was last used longer ago than this (ms). */
  olderThanMs?: number;
  /** Remove everything not held. */
  all?: boolean;
}

export interface PrunePlan {
  /** In removal order: least recently used first, a layer's records right after it. */
  remove: StoreEntry[];
  /** Used since the cutoff: in use by a running build, or too recently to judge. */
  held: StoreEntry[];
  /** What the store holds once `remove` is gone. */
  remaining: number;
}

/**
 * Clock skew between a file's kernel timestamp and Date.now() (a coarse clock tick; a
 * store on a network file system): entries used this close before the cutoff are held too.
 */
export const CUTOFF_MARGIN_MS = 1000;

/**
 * Which entries to remove. Entries last used at or after `cutoff` are held. Of the
 * others: a layer record whose layer is gone (worthless), everything with `all`, what
 * is older than `olderThanMs`, then the least recently used until `keepBytes` is met
 * (layer records only with their layer); with a layer blob go the records that name it.
 */
export function planPrune(entries: readonly StoreEntry[], c: PruneCriteria, now: number, cutoff: number): PrunePlan {
  const held = entries.filter((e) => e.lastUse >= cutoff);
  const free = entries.filter((e) => e.lastUse < cutoff);
  const dangling = (e: StoreEntry): boolean => e.layer !== undefined && !e.layer.present;
  free.sort((a, b) => (dangling(b) ? 1 : 0) - (dangling(a) ? 1 : 0) || a.lastUse - b.lastUse || (a.path < b.path ? -1 : 1));
  const records = new Map<string, StoreEntry[]>();
  for (const e of free) if (e.layer) records.set(e.layer.digest, [...(records.get(e.layer.digest) ?? []), e]);

  const chosen = new Set<StoreEntry>();
  const remove: StoreEntry[] = [];
  let total = entries.reduce((n, e) => n + e.size, 0);
  const take = (e: StoreEntry): void => {
    if (chosen.has(e)) return;
    chosen.add(e);
    remove.push(e);
    total -= e.size;
    for (const r of records.get(e.id) ?? []) take(r);
  };
  for (const e of free) {
    if (dangling(e) || c.all || (c.olderThanMs !== undefined && e.lastUse < now - c.olderThanMs)) take(e);
  }
  if (c.keepBytes !== undefined) {
    for (const e of free) {
      if (total <= c.keepBytes) break;
      // A record goes with its layer: alone it frees a few bytes and loses the layer's worth.
      if (e.layer?.present) continue;
      take(e);
    }
  }
  return { remove, held, remaining: total };
}

export type RemoveOutcome = 'removed' | 'in-use' | 'gone';

export interface PruneOptions extends PruneCriteria {
  dryRun?: boolean;
  /** Called once per planned entry, as it is removed (or would be, with dryRun). */
  onEntry?: (entry: StoreEntry, outcome: RemoveOutcome) => void;
  signal?: AbortSignal;
}

export interface PruneResult {
  inventory: StoreInventory;
  plan: PrunePlan;
  /** Entries last used at or after this (ms) were held. */
  cutoff: number;
  removed: StoreEntry[];
  /** What the criteria pick but the cutoff holds: in use by a running build. */
  heldBack: StoreEntry[];
  /** Planned, but used by a build between the listing and their removal. */
  inUse: StoreEntry[];
  /** Planned, but their removal failed (the prune goes on with the others). */
  failed: Array<{ entry: StoreEntry; message: string }>;
  /** Bytes removed (planned, with dryRun). */
  freed: number;
}

export async function pruneStore(store: Store, opts: PruneOptions): Promise<PruneResult> {
  // Taken before looking: a build registering after this marks what it uses later.
  const started = Date.now();
  const inventory = await storeInventory(store, opts.signal ? { signal: opts.signal } : {});
  const cutoff = Math.min(started, ...inventory.builds.map((b) => b.startedAt)) - CUTOFF_MARGIN_MS;
  const plan = planPrune(inventory.entries, opts, started, cutoff);
  const heldBack = planPrune(inventory.entries, opts, started, Infinity).remove.filter((e) => e.lastUse >= cutoff);
  const removed: StoreEntry[] = [];
  const inUse: StoreEntry[] = [];
  const failed: PruneResult['failed'] = [];
  for (const entry of plan.remove) {
    opts.signal?.throwIfAborted();
    let outcome: RemoveOutcome;
    try {
      outcome = opts.dryRun ? 'removed' : await removeEntry(store, entry, cutoff, opts.signal);
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      failed.push({ entry, message: (err as Error).message });
      continue;
    }
    if (outcome === 'removed') removed.push(entry);
    if (outcome === 'in-use') inUse.push(entry);
    opts.onEntry?.(entry, outcome);
  }
  return { inventory, plan, cutoff, heldBack, removed, inUse, failed, freed: removed.reduce((n, e) => n + e.size, 0) };
}

/** Removes one entry under its lock, unless it was used since `cutoff`. */
export async function removeEntry(store: Store, e: StoreEntry, cutoff: number, signal?: AbortSignal): Promise<RemoveOutcome> {
  const lockOpts = signal ? { signal } : {};
  switch (e.kind) {
    case 'layer-record':
    case 'cache-record':
      // Read whole at once by its users: an unlink between their mark and their read is a miss.
      return removeFile(e.path, cutoff);
    case 'rootfs': {
      // A leftover's lock is its finished name's: rootfsFor removes leftovers under it too.
      const name = e.leftover ? e.path.slice(0, e.path.indexOf('.tmp-')) : e.path;
      const aside = e.leftover ? undefined : `${name}.tmp-prune-${suffix()}`;
      return withBlobLock(store, rootfsLockKey(name), () => removeTree(e, e.leftover ? Infinity : cutoff, aside), lockOpts);
    }
    case 'cache-mount': {
      if (e.leftover) return removeTree(e, Infinity, undefined);
      const aside = join(dirname(e.path), `.${basename(e.path)}.prune-${suffix()}`);
      return withBlobLock(store, cacheMountLockKey(e.id), () => removeTree(e, cutoff, aside), lockOpts);
    }
    default:
      return withBlobLock(store, e.id, () => removeFile(e.path, cutoff), lockOpts);
  }
}

async function removeFile(path: string, cutoff: number): Promise<RemoveOutcome> {
  const mtime = await mtimeOf(path);
  if (mtime === undefined) return 'gone';
  if (mtime >= cutoff) return 'in-use';
  try {
    await unlink(path);
    return 'removed';
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'gone';
    throw err;
  }
}

/** Moves the tree to `aside` (when given) and deletes it there; `cutoff` Infinity: no last-use check. */
async function removeTree(e: StoreEntry, cutoff: number, aside: string | undefined): Promise<RemoveOutcome> {
  const mtime = await mtimeOf(e.path);
  if (mtime === undefined) return 'gone';
  if (mtime >= cutoff) return 'in-use';
  let target = e.path;
  if (aside !== undefined) {
    await rename(e.path, aside);
    target = aside;
  }
  await rmTree(target);
  return 'removed';
}

async function mtimeOf(path: string): Promise<number | undefined> {
  try {
    return (await lstat(path)).mtimeMs;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

function suffix(): string {
  return `${process.pid}-${randomBytes(6).toString('hex')}`;
}
