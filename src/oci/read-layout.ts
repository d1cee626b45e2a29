/**
 * An OCI image layout as a source: `oci:DIR[:TAG]` read back into `BuiltImage`
 * values (one, or one per platform under an index), every document checked against
 * its descriptor and every blob verified while it streams — what `ocibuild push`
 * and `verify --against` read.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { PassThrough, pipeline } from 'node:stream';
import { OcibuildError, EXIT_USAGE } from '../errors.js';
import { fileChunks } from '../store/file-chunks.js';
import { BlobCheck, verifyingTap, type Descriptor } from './descriptor.js';
import type { BuiltImage, Layer } from './image.js';
import { blobPath, readIndex, readLayoutBlob, selectManifest } from './layout.js';
import { isIndexType, isLayerType, isManifestType } from './media-types.js';

export interface LayoutImage {
  images: BuiltImage[];
  /** Present when the tag names an image index. */
  index?: { descriptor: Descriptor; bytes: Buffer };
}

/** `oci:DIR[:TAG]` or `DIR[:TAG]` → its parts (the path ends at the first colon). */
export function parseLayoutRef(ref: string): { dir: string; tag?: string } {
  const body = ref.startsWith('oci:') ? ref.slice(4) : ref;
  const colon = body.indexOf(':');
  const dir = colon < 0 ? body : body.slice(0, colon);
  const tag = colon < 0 ? undefined : body.slice(colon + 1);
  if (dir === '' || tag === '') {
    throw new OcibuildError(`not an image layout reference: ${JSON.stringify(ref)}`, {
      hint: 'use oci:DIR or oci:DIR:TAG',
      exitCode: EXIT_USAGE,
    });
  }
  return tag === undefined ? { dir } : { dir, tag };
}

export async function readLayoutImage(dir: string, tag: string | undefined): Promise<LayoutImage> {
  const where = `oci:${dir}${tag !== undefined ? `:${tag}` : ''}`;
  const { manifests } = await readIndex(dir).catch((err: unknown) => {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new OcibuildError('no OCI image layout here (index.json missing)', { where: dir, hint: 'build into oci:DIR first', cause: err });
    }
    throw err;
  });
  const top = selectManifest(manifests.map((m) => m.descriptor), tag, where);
  const plain: Descriptor = { mediaType: top.mediaType, digest: top.digest, size: top.size };
  if (top.platform) plain.platform = top.platform;
  if (isManifestType(top.mediaType)) return { images: [await readImage(dir, plain, where)] };
  if (!isIndexType(top.mediaType)) throw new OcibuildError(`the tag names a ${top.mediaType}, not an image`, { where });
  const bytes = await readLayoutBlob(dir, plain);
  const doc = parseJson(bytes, where) as { manifests?: Descriptor[] };
  const images: BuiltImage[] = [];
  for (const m of doc.manifests ?? []) {
    if (!isManifestType(m.mediaType)) throw new OcibuildError(`the index lists a ${m.mediaType}; nested indices are not supported`, { where });
    images.push(await readImage(dir, m, where));
  }
  if (images.length === 0) throw new OcibuildError('the image index lists no manifests', { where });
  return { images, index: { descriptor: plain, bytes } };
}

async function readImage(dir: string, desc: Descriptor, where: string): Promise<BuiltImage> {
  const manifestBytes = await readLayoutBlob(dir, desc);
  const manifest = parseJson(manifestBytes, where) as { config?: Descriptor; layers?: Descriptor[] };
  if (!manifest.config) throw new OcibuildError(`manifest ${desc.digest} has no config`, { where });
  const configBytes = await readLayoutBlob(dir, manifest.config);
  const config = parseJson(configBytes, where) as { rootfs?: { diff_ids?: string[] } };
  const diffIds = config.rootfs?.diff_ids ?? [];
  const layerDescs = manifest.layers ?? [];
  if (diffIds.length !== layerDescs.length) {
    throw new OcibuildError(`manifest ${desc.digest}: ${layerDescs.length} layers but ${diffIds.length} diff_ids`, { where });
  }
  const layers: Layer[] = [];
  for (const [i, l] of layerDescs.entries()) {
    if (!isLayerType(l.mediaType)) throw new OcibuildError(`layer ${l.digest} has media type ${l.mediaType}`, { where });
    const path = blobPath(dir, l.digest);
    const st = await stat(path).catch(() => undefined);
    if (!st?.isFile() || st.size !== l.size) {
      throw new OcibuildError(`layer blob ${l.digest} is missing or has the wrong size`, { where: path, hint: 'the layout is damaged; write the image again' });
    }
    layers.push({
      digest: l.digest,
      diffId: diffIds[i] as string,
      size: l.size,
      mediaType: l.mediaType,
      open: () => verifiedStream(path, l, where),
      chunks: () => verifiedChunks(path, l, where),
    });
  }
  return {
    config: { descriptor: { mediaType: manifest.config.mediaType, digest: manifest.config.digest, size: manifest.config.size }, bytes: configBytes },
    manifest: { descriptor: desc, bytes: manifestBytes },
    layers,
  };
}

/** The blob's bytes; the stream fails at its end when they do not match the descriptor. */
function verifiedStream(path: string, d: Descriptor, where: string): PassThrough {
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  pipeline(createReadStream(path, { highWaterMark: 1 << 20 }), verifyingTap(d, where), out, () => undefined);
  return out;
}

/** verifiedStream's bytes in the chunks of one reused buffer (Layer.chunks). */
async function* verifiedChunks(path: string, d: Descriptor, where: string): AsyncGenerator<Buffer> {
  const check = new BlobCheck(d, where);
  for await (const chunk of fileChunks(path)) {
    check.update(chunk);
    yield chunk;
  }
  check.finish();
}

function parseJson(bytes: Buffer, where: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new OcibuildError('a document in the layout is not JSON', { where });
  }
}
