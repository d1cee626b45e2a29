/**
 * The image index (image-spec image-index.md): several platform images under one
 * digest. Pure assembly, like buildImage: the same images and annotations always give
 * the same bytes. Sinks take a `BuiltArtifact`, either one image or an index with its
 * images, so a multi-platform build is one more value, not a second code path.
 */
import { canonicalJson, descriptorFor, descriptorJson, type Descriptor, type JsonValue } from './descriptor.js';
import type { BuiltImage } from './image.js';
import { OCI_INDEX } from './media-types.js';

export interface BuiltIndex {
  /** The index document; its descriptor has no platform (it spans several). */
  index: { descriptor: Descriptor; bytes: Buffer };
  /** In the order of the index's `manifests`. */
  images: BuiltImage[];
}

/** What an output holds at its top level: one image manifest, or an image index. */
export type BuiltArtifact = BuiltImage | BuiltIndex;

export function isIndex(a: BuiltArtifact): a is BuiltIndex {
  return 'index' in a && 'images' in a && Array.isArray(a.images);
}

/** The descriptor an output's index.json (or a registry tag) points at. */
export function topDescriptor(a: BuiltArtifact): Descriptor {
  return isIndex(a) ? a.index.descriptor : a.manifest.descriptor;
}

/** Every image of the artifact: the one image, or each of the index. */
export function artifactImages(a: BuiltArtifact): BuiltImage[] {
  return isIndex(a) ? [...a.images] : [a];
}

/**
 * image-index.md: `manifests` lists each image's manifest descriptor with its
 * `platform`, which is how runtimes and `skopeo copy --override-arch` pick one.
 */
export function buildIndex(images: BuiltImage[], annotations: Record<string, string> = {}): BuiltIndex {
  // Internal invariants: the builder hands over one image per distinct platform.
  if (images.length === 0) throw new Error('an image index needs at least one image');
  const seen = new Set<string>();
  for (const img of images) {
    const p = img.manifest.descriptor.platform;
    if (!p) throw new Error(`manifest ${img.manifest.descriptor.digest} has no platform for the index`);
    const key = `${p.os}/${p.architecture}/${p.variant ?? ''}`;
    if (seen.has(key)) throw new Error(`two images for platform ${key} in one index`);
    seen.add(key);
  }
  const doc: { [key: string]: JsonValue } = {
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: images.map((img) => descriptorJson(img.manifest.descriptor)),
  };
  if (Object.keys(annotations).length > 0) doc.annotations = { ...annotations };
  const bytes = Buffer.from(canonicalJson(doc), 'utf8');
  return { index: { descriptor: descriptorFor(OCI_INDEX, bytes), bytes }, images: [...images] };
}
