/**
 * The rootfs a step runs on: its layers extracted once (extract.ts) into the store at
 * `<store>/rootfs/<chain id hex>`, shared by every later build on the same layers.
 *
 * Keyed by ChainID (image-spec config.md, "Layer ChainID"), a function of the diffIds
 * in order, so the same stack of layers reached by any route (another image, other
 * compression) is the same rootfs. Published atomically: extraction happens in a
 * `.tmp-` sibling renamed into place when complete, under a store lock so two builds
 * never extract the same chain at once; a tree left by a killed process is removed by
 * the next one that takes the lock.
 *
 * A published rootfs is read-only by contract: it is an overlay lower dir, and a RUN
 * step writes only to its upper dir. `<store>/rootfs` is 0700, since the trees hold
 * the images' setuid binaries.
 */
import { createHash } from 'node:crypto';
import { chmod, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { Layer } from '../oci/image.js';
import { withBlobLock } from '../store/lock.js';
import { digestHex, type Store } from '../store/store.js';
import { extractLayers, type ExtractOptions } from './extract.js';

/** config.md: ChainID(L₀) = DiffID(L₀); ChainID(L₀|…|Lₙ) = sha256(ChainID(L₀|…|Lₙ₋₁) + " " + DiffID(Lₙ)). */
export function chainId(diffIds: readonly string[]): string {
  if (diffIds.length === 0) throw new Error('a chain id needs at least one layer');
  let id = diffIds[0]!;
  digestHex(id);
  for (const d of diffIds.slice(1)) {
    digestHex(d);
    id = `sha256:${createHash('sha256').update(`${id} ${d}`).digest('hex')}`;
  }
  return id;
}

/** Where the rootfs of `layers` lives (whether or not it exists yet). */
export function rootfsPath(store: Store, layers: readonly Pick<Layer, 'diffId'>[]): string {
  const key = layers.length === 0 ? 'empty' : digestHex(chainId(layers.map((l) => l.diffId)));
  return join(store.root, 'rootfs', key);
}

export interface RootfsResult {
  path: string;
  /** False when the rootfs was already in the store. */
  extracted: boolean;
}

/**
 * The path of the rootfs of `layers` (bottom first), extracting it first when the store
 * does not have it. No layers: an empty directory (`from: scratch`).
 */
export async function rootfsFor(store: Store, layers: readonly Layer[], opts: ExtractOptions = {}): Promise<RootfsResult> {
  const path = rootfsPath(store, layers);
  if (await isDir(path)) return { path, extracted: false };
  const parent = await rootfsParent(store);
  return withBlobLock(
    store,
    rootfsLockKey(path),
    async () => {
      if (await isDir(path)) return { path, extracted: false };
      const name = basename(path);
      for (const entry of await readdir(parent)) {
        if (entry.startsWith(`${name}.tmp-`)) await rm(join(parent, entry), { recursive: true, force: true });
      }
      await extractLayers(layers, path, opts);
      return { path, extracted: true };
    },
    opts.signal ? { signal: opts.signal } : {},
  );
}

/**
 * Publishes `dir`, a tree equal to what extracting `layers` gives (a step built it in
 * place and wrote the layer from it), as their rootfs, unless one is there already.
 * `dir` must be on the store's file system; it is moved, or left for the caller to
 * remove when the store had the rootfs. Returns the rootfs path.
 */
export async function adoptRootfs(store: Store, layers: readonly Pick<Layer, 'diffId'>[], dir: string, signal?: AbortSignal): Promise<string> {
  const path = rootfsPath(store, layers);
  if (await isDir(path)) return path;
  await rootfsParent(store);
  return withBlobLock(
    store,
    rootfsLockKey(path),
    async () => {
      if (!(await isDir(path))) await rename(dir, path);
      return path;
    },
    signal ? { signal } : {},
  );
}

async function rootfsParent(store: Store): Promise<string> {
  const parent = join(store.root, 'rootfs');
  await mkdir(parent, { recursive: true, mode: 0o700 });
  await chmod(parent, 0o700);
  return parent;
}

/**
 * A lock of its own: the chain id of one layer is that layer's diffId, which is also
 * the digest of an uncompressed blob whose lock the layer's open() may take.
 */
export function rootfsLockKey(path: string): string {
  return `sha256:${createHash('sha256').update(`ocibuild rootfs ${basename(path)}`).digest('hex')}`;
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}
