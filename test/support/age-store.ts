// Ages a store for prune tests: a prune holds back what was used just before it ran.
import { readdir, utimes } from 'node:fs/promises';
import path from 'node:path';

/**
 * Every entry of the store last used an hour ago: older than any build the test starts
 * next, and than the second before a prune that prune holds back (cache-prune.ts).
 */
export async function ageStore(store: string): Promise<void> {
  const old = new Date(Date.now() - 3_600_000);
  for (const sub of ['blobs/sha256', 'rootfs', 'cache-mounts', ...(await readdir(path.join(store, 'cache')).catch(() => [])).map((k) => `cache/${k}`)]) {
    for (const name of await readdir(path.join(store, sub)).catch(() => [] as string[])) await utimes(path.join(store, sub, name), old, old);
  }
}
