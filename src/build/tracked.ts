/**
 * The store entries a step holds besides blobs and records — the rootfs under its
 * overlay and its cache mounts — taken with their use marked (store/last-use.ts), so
 * that `cache prune` orders them by last use and leaves them alone while the build
 * runs. Steps import rootfsFor and chainId from here instead of sandbox/rootfs.ts.
 */
import { createHash } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { basename } from 'node:path';
import type { Layer } from '../oci/image.js';
import type { ExtractOptions } from '../sandbox/extract.js';
import { adoptRootfs as adopt, rootfsFor as extractedRootfs, rootfsLockKey, type RootfsResult } from '../sandbox/rootfs.js';
import { OcibuildError } from '../errors.js';
import { markUsed } from '../store/last-use.js';
import type { Store } from '../store/store.js';

export { chainId } from '../sandbox/rootfs.js';

// A prune that removes the entry just taken makes the step take it again; more than a
// few times in a row is not a race any more.
const ATTEMPTS = 5;

/**
 * sandbox/rootfs.ts's rootfsFor, with the tree marked used. Its mtime is the mark: a
 * lower dir's own times are not part of what the overlay shows (the merged root is
 * always the upper dir's), and a freshly extracted tree carries the layer's date.
 */
export async function rootfsFor(store: Store, layers: readonly Layer[], opts: ExtractOptions = {}): Promise<RootfsResult> {
  let path = '';
  for (let i = 0; i < ATTEMPTS; i++) {
    const r = await extractedRootfs(store, layers, opts);
    if (await markUsed(store, r.path, rootfsLockKey(r.path), opts.signal)) return r;
    path = r.path;
  }
  throw vanished(`the rootfs ${path}`);
}

/**
 * sandbox/rootfs.ts's adoptRootfs, with the tree marked used: its times are the
 * layer's (old), and the next step takes it soon. Should a prune remove it meanwhile,
 * that step's rootfsFor extracts it again.
 */
export async function adoptRootfs(store: Store, layers: readonly Pick<Layer, 'diffId'>[], dir: string, signal?: AbortSignal): Promise<string> {
  const path = await adopt(store, layers, dir, signal);
  await markUsed(store, path, rootfsLockKey(path), signal);
  return path;
}

/** The cache mount directory `dir` (<store>/cache-mounts/<id>), created when missing, marked used. */
export async function useCacheMount(store: Store, dir: string, signal?: AbortSignal): Promise<void> {
  for (let i = 0; i < ATTEMPTS; i++) {
    await mkdir(dir, { recursive: true });
    if (await markUsed(store, dir, cacheMountLockKey(basename(dir)), signal)) return;
  }
  throw vanished(`the cache mount ${dir}`);
}

/** The lock `cache prune` takes to remove the cache mount `id` (the same for every store). */
export function cacheMountLockKey(id: string): string {
  return `sha256:${createHash('sha256').update(`ocibuild cache-mount ${id}`).digest('hex')}`;
}

function vanished(what: string): OcibuildError {
  return new OcibuildError(`${what} was removed ${ATTEMPTS} times while this build was taking it`, {
    hint: 'is `ocibuild cache prune` running in a loop on this store? stop it and build again',
  });
}
