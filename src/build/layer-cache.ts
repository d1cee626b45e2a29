/**
 * The layer cache: a step's cache key (the hash of its kind and of everything that
 * decides its bytes) → the layer it wrote, as a small record in the store. A layer is
 * taken from the cache only while its blob is still in the store.
 */
import { createHash } from 'node:crypto';
import type { LayerEntry } from '../layer/entry.js';
import { writeLayer } from '../layer/write-layer.js';
import { storeLayer, type Layer } from '../oci/image.js';
import type { Store } from '../store/store.js';
import type { BuildReporter } from './reporter.js';

export type Compression = 'gzip' | 'zstd';

/** A step's cache key: its kind and its inputs (JSON, in a fixed key order by construction). */
export function stepKey(kind: string, inputs: unknown): string {
  return createHash('sha256').update(kind).update('\0').update(JSON.stringify(inputs)).digest('hex');
}

export interface CachedLayer {
  layer: Layer;
  /** The SOURCE_DATE_EPOCH the layer was written with. */
  sde: number;
}

/** The store's cache kind for layer records: `<store>/cache/layers-v1/<step key>`. */
export const LAYER_CACHE = 'layers-v1';

/** What a step reads from the cache; BuildOptions and the step options carry it. */
export interface LayerCacheOptions {
  /** Take no layer from the cache (each step is redone); what is written is still recorded. */
  noCache?: boolean;
}

/** A layer record: the layer a step wrote. `createdBy` only in records written since it was added. */
export interface LayerRecord {
  digest: string;
  diffId: string;
  size: number;
  mediaType: string;
  sde: number;
  createdBy?: string;
}

export function parseLayerRecord(data: Buffer): LayerRecord | undefined {
  try {
    const d = JSON.parse(data.toString('utf8')) as Partial<LayerRecord>;
    if (typeof d.digest !== 'string' || typeof d.diffId !== 'string' || typeof d.size !== 'number' || typeof d.mediaType !== 'string' || typeof d.sde !== 'number') return undefined;
    return { digest: d.digest, diffId: d.diffId, size: d.size, mediaType: d.mediaType, sde: d.sde, ...(typeof d.createdBy === 'string' ? { createdBy: d.createdBy } : {}) };
  } catch {
    return undefined;
  }
}

export async function cachedLayer(store: Store, key: string, createdBy: string, opts: LayerCacheOptions = {}): Promise<CachedLayer | undefined> {
  if (opts.noCache) return undefined;
  const data = await store.readCacheFile(LAYER_CACHE, key);
  if (!data) return undefined;
  const d = parseLayerRecord(data);
  // has() also marks the blob used, and keeps it from a prune running meanwhile.
  if (!d || !(await store.has(d.digest).catch(() => false))) return undefined;
  return { layer: storeLayer(store, { digest: d.digest, diffId: d.diffId, size: d.size, mediaType: d.mediaType, history: { createdBy } }), sde: d.sde };
}

export async function writeAndCache(
  store: Store,
  key: string,
  entries: LayerEntry[],
  compression: Compression,
  sde: number,
  createdBy: string,
  label: string,
  progress: BuildReporter,
  signal?: AbortSignal,
): Promise<CachedLayer> {
  progress.phase(label, entries.reduce((n, e) => n + (e.type === 'file' ? e.size : 0), 0));
  // A failed write leaves the phase open: the error says what happened, not a "wrote" line.
  const written = await writeLayer(entries, {
    store: countingStore(store, (n) => progress.phaseBytes(n)),
    compression,
    sourceDateEpoch: sde,
    ...(signal ? { signal } : {}),
  });
  progress.endPhase(written.digest);
  const record: LayerRecord = { digest: written.digest, diffId: written.diffId, size: written.size, mediaType: written.mediaType, sde, createdBy };
  await store.writeCacheFile(LAYER_CACHE, key, Buffer.from(JSON.stringify(record)));
  return { layer: storeLayer(store, { ...written, history: { createdBy } }), sde };
}

/**
 * The store, with the bytes of each blob counted as they go in: the progress of a
 * layer write, measured at the end of the writer's pipeline so that its own fast
 * paths for file contents stay as they are.
 */
function countingStore(store: Store, onBytes: (n: number) => void): Store {
  const counting = Object.create(store) as Store;
  counting.putStream = (src, expect, where, signal) => {
    let n = 0;
    const counted = (async function* () {
      for await (const chunk of src as AsyncIterable<Uint8Array>) {
        n += chunk.length;
        onBytes(n);
        yield chunk;
      }
    })();
    return store.putStream(counted, expect, where, signal);
  };
  return counting;
}

