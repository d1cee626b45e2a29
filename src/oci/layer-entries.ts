/**
 * A layer read as a sequence of entry summaries — name, type, mode, ids, mtime, link
 * target, device numbers, xattrs and the sha256 of the data — decompressed and parsed
 * as it streams, nothing written to disk and file data only hashed. What a layer
 * comparison (layer-diff.ts) pairs up.
 *
 * The tar parser is the extractor's (src/sandbox/tar-reader.ts): it keeps pax xattr
 * values as bytes (a capability survives) and hashes the whole uncompressed stream,
 * which is the layer's true diffId. It hands entries over synchronously, a whole
 * chunk at a time, so a gate in front of it holds the next chunk back while the
 * consumer has many entries still to take: memory stays bounded however far apart
 * two layers being compared are read.
 */
import { createHash } from 'node:crypto';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { decompressor } from '../deb/decompress.js';
import { OcibuildError } from '../errors.js';
import { TarReader, type TarEntryHeader } from '../sandbox/tar-reader.js';
import { layerCompression } from './media-types.js';

/** A tar header as read (tar-reader.ts), with its place, its cleaned path and a hash of its data. */
export interface EntrySummary extends Omit<TarEntryHeader, 'xattrs'> {
  /** Position in the layer, from 0. */
  index: number;
  /** The name cleaned: no leading `./` or `/`, no trailing `/` (`name` is as written). */
  path: string;
  xattrs: ReadonlyMap<string, Buffer>;
  /** sha256 hex of the data (files; every other type has none). */
  sha256?: string;
}

/** What a layer reader needs of a layer: its compressed bytes and how they are compressed. */
export interface LayerBlob {
  digest: string;
  mediaType: string;
  open(): Readable;
}

/** Entries the consumer may lag behind before the reader waits. */
const QUEUE_MAX = 256;

/**
 * The layer's entries in order; the generator's return value is the sha256 of the
 * uncompressed tar (its actual diffId). Returning early stops the reading.
 */
export async function* layerEntries(layer: LayerBlob): AsyncGenerator<EntrySummary, string, undefined> {
  const kind = layerCompression(layer.mediaType);
  const queue: EntrySummary[] = [];
  let finished = false;
  let failure: { err: unknown } | undefined;
  let wakeConsumer: (() => void) | undefined;
  let releaseChunk: (() => void) | undefined;
  const notify = (): void => {
    const f = wakeConsumer;
    wakeConsumer = undefined;
    f?.();
  };
  let index = 0;
  const reader = new TarReader((h) => {
    const summary: EntrySummary = {
      index: index++,
      name: h.name,
      path: cleanPath(h.name),
      type: h.type,
      mode: h.mode,
      uid: h.uid,
      gid: h.gid,
      size: h.size,
      mtime: h.mtime,
      linkname: h.linkname,
      devmajor: h.devmajor,
      devminor: h.devminor,
      xattrs: h.xattrs,
    };
    if (h.type !== 'file') {
      queue.push(summary);
      notify();
      // A non-file member with data (never in practice) is read past, not hashed.
      return undefined;
    }
    const hash = createHash('sha256');
    return {
      write: (chunk) => hash.update(chunk),
      end: () => {
        summary.sha256 = hash.digest('hex');
        queue.push(summary);
        notify();
      },
    };
  });
  const gate = new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
      if (queue.length < QUEUE_MAX) cb(null, chunk);
      else releaseChunk = () => cb(null, chunk);
    },
  });
  const source = layer.open();
  const done = pipeline(source, kind === 'gzip' ? decompressor('gz') : kind === 'zstd' ? decompressor('zst') : decompressor('none'), gate, reader).then(
    () => {
      finished = true;
      notify();
    },
    (err: unknown) => {
      failure = { err };
      notify();
    },
  );
  try {
    for (;;) {
      const next = queue.shift();
      if (next) {
        if (queue.length < QUEUE_MAX && releaseChunk) {
          const f = releaseChunk;
          releaseChunk = undefined;
          f();
        }
        yield next;
        continue;
      }
      if (failure) {
        const err = failure.err;
        throw new OcibuildError(`cannot read layer ${layer.digest}: ${err instanceof Error ? err.message : String(err)}`, { where: layer.digest, cause: err });
      }
      if (finished) return reader.digest();
      await new Promise<void>((resolve) => (wakeConsumer = resolve));
    }
  } finally {
    if (!finished && !failure) {
      // The pipeline then fails with a premature close, which `done` absorbs.
      source.destroy();
      await done;
    }
  }
}

/** `./a/b/` → `a/b`; `./` → `` (the root). */
export function cleanPath(name: string): string {
  return name.replace(/^(\.\/)+/, '').replace(/^\/+/, '').replace(/\/+$/, '').replace(/^\.$/, '');
}
