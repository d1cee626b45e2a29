/**
 * One pass from layer entries to a stored blob: tar → sha256 (diffId) → compress →
 * sha256 + size (digest, in Store.putStream) → blobs/sha256/<hex>. Nothing is
 * buffered whole and nothing is read twice. An uncompressed layer is hashed once: its
 * digest is its diffId.
 */
import { createHash } from 'node:crypto';
import { Transform, pipeline, type TransformCallback } from 'node:stream';
import type { Store } from '../store/store.js';
import { compressor, type Compression } from './compress.js';
import type { LayerEntry } from './entry.js';
import { writeTar } from './tar-writer.js';

export interface WriteLayerOptions {
  store: Store;
  compression: Compression;
  /** Seconds; mtimes above it are clamped (SOURCE_DATE_EPOCH). */
  sourceDateEpoch: number;
  signal?: AbortSignal;
}

export interface WrittenLayer {
  /** sha256 of the compressed blob, as stored. */
  digest: string;
  /** sha256 of the uncompressed tar (OCI config rootfs.diff_ids). */
  diffId: string;
  /** Bytes of the compressed blob. */
  size: number;
  mediaType: string;
}

/** OCI image-spec media types; zstd exists only there (no Docker schema2 type). */
export const LAYER_MEDIA_TYPES: Readonly<Record<Compression, string>> = {
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  none: 'application/vnd.oci.image.layer.v1.tar',
};

export async function writeLayer(
  entries: Iterable<LayerEntry> | AsyncIterable<LayerEntry>,
  opts: WriteLayerOptions,
): Promise<WrittenLayer> {
  opts.signal?.throwIfAborted();
  if (opts.compression === 'none') {
    // The blob is the tar: the store's digest is the diffId, no second hash needed.
    const { digest, size } = await opts.store.putStream(writeTar(entries, opts), {}, undefined, opts.signal);
    return { digest, diffId: digest, size, mediaType: LAYER_MEDIA_TYPES.none };
  }
  const tarHash = createHash('sha256');
  const tap = new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
      tarHash.update(chunk);
      cb(null, chunk);
    },
  });
  // The callback form returns the last stream and destroys every stream on the first
  // error, so a failing tar or compressor fails putStream's own pipeline below.
  const compressed = pipeline(writeTar(entries, opts), tap, compressor(opts.compression), () => undefined);
  const { digest, size } = await opts.store.putStream(compressed, {}, undefined, opts.signal);
  return {
    digest,
    diffId: `sha256:${tarHash.digest('hex')}`,
    size,
    mediaType: LAYER_MEDIA_TYPES[opts.compression],
  };
}
