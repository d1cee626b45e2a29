/**
 * The throwaway store a `verify` rebuild runs in: a Store of its own (so its own
 * `cache/` of layer records, `rootfs/` of extracted chains and `cache-mounts/`),
 * created under the main store's `tmp/` and holding, before the build starts, only
 * hard links to the inputs the main store already has verified: the locked .debs and
 * the base image's blobs.
 *
 * Why links into a separate store, and not a Store whose blob reads fall back to the
 * main store: with links the rebuild is an ordinary build on an ordinary Store —
 * every module that reads or writes a store (layer cache records, rootfs extraction,
 * blob locks, the layer writer) works unchanged, and what the rebuild can see of the
 * main store is exactly the list of inputs linked here; a fallback would have to
 * decide blob by blob which main-store blobs are inputs (a .deb) and which are earlier
 * outputs (a cached layer) that must not be reused. Links cost no copy: `tmp/` is on
 * the main store's filesystem (a copy is made where linking fails).
 */
import { copyFile, link, mkdir, mkdtemp } from 'node:fs/promises';
import path from 'node:path';
import { rmTree } from '../sandbox/overlay.js';
import { Store } from '../store/store.js';

export interface ScratchStore {
  store: Store;
  /** The scratch directory (the store is `<dir>/store`); outputs may go next to it. */
  dir: string;
  /** Removes everything the rebuild made. */
  dispose(): Promise<void>;
}

/**
 * A fresh store under `main`'s tmp/ with each of `inputs` (blob digests the main
 * store has) linked in.
 */
export async function scratchStore(main: Store, name: string, inputs: Iterable<string>): Promise<ScratchStore> {
  const dir = await mkdtemp(path.join(await main.tmpDir(), `${name}-`));
  const store = new Store(path.join(dir, 'store'));
  try {
    for (const digest of new Set(inputs)) await linkBlob(main, store, digest);
  } catch (err) {
    await rmTree(dir);
    throw err;
  }
  return { store, dir, dispose: () => rmTree(dir) };
}

async function linkBlob(from: Store, to: Store, digest: string): Promise<void> {
  const src = from.blobPath(digest);
  const dest = to.blobPath(digest);
  await mkdir(path.dirname(dest), { recursive: true });
  try {
    await link(src, dest);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    // Another filesystem ($OCIBUILD_CACHE/tmp mounted apart) or no hard links there.
    if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'EMLINK') throw err;
    await copyFile(src, dest);
  }
}
