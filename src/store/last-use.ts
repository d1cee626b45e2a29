/**
 * "Last use" of store entries, so that `ocibuild cache prune` can remove the least
 * recently used first: an entry's own mtime, set to now each time a build uses it
 * (utimes: one syscall, no extra files). atime would be free but is not kept by
 * relatime/noatime mounts; the mtime of a blob or record is otherwise only its
 * creation time, which is a use too.
 *
 * Marking an entry used and removing it are ordered by the entry's store lock
 * (lock.ts): a remover holds the lock while it checks the mtime and removes, and a
 * user touches first and then waits for that lock before relying on the entry, so it
 * either sees the entry gone or the remover saw the new mtime (cache-prune.ts).
 */
import { stat, utimes } from 'node:fs/promises';
import { waitForBlobLock } from './lock.js';
import type { Store } from './store.js';

/**
 * Sets `path`'s times to now. False when it does not exist. Where the times cannot be
 * set (a read-only store, an entry owned by another user) it only checks existence.
 */
export async function touch(path: string): Promise<boolean> {
  const now = new Date();
  try {
    await utimes(path, now, now);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return false;
    if (code !== 'EPERM' && code !== 'EACCES' && code !== 'EROFS') throw err;
  }
  return exists(path);
}

/**
 * Marks the entry at `path` used and makes sure it is still there after any removal
 * in progress under `lockKey` (a `sha256:` key for lock.ts). True: the entry exists
 * and no prune that started before now will remove it.
 */
export async function markUsed(store: Store, path: string, lockKey: string, signal?: AbortSignal): Promise<boolean> {
  if (!(await touch(path))) return false;
  await waitForBlobLock(store, lockKey, signal ? { signal } : {});
  return exists(path);
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}
