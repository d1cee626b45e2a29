/**
 * Pushing images (a sink, like the layout and archive writers): blobs first, in
 * parallel, each skipped when the repository has it and mounted when it came from
 * another repository of the same registry; then each image manifest; then, for a
 * multi-platform image, the index; then every tag. A re-push of an unchanged image
 * uploads no blob; a push interrupted and run again uploads only what is missing.
 */
import pMap from 'p-map';
import { Readable } from 'node:stream';
import { OcibuildError, EXIT_USAGE } from '../errors.js';
import type { Descriptor } from '../oci/descriptor.js';
import type { BuiltImage } from '../oci/image.js';
import { RepositoryClient, type RepositoryClientOptions, type UploadableBlob, type UploadOutcome } from './client.js';
import { formatReference, type ImageReference } from './reference.js';
import { RegistryTransport, type TransportOptions } from './transport.js';

/** What gets pushed: one image, or several platforms under an index. */
export interface PushTarget {
  images: BuiltImage[];
  /** The image index (multi-platform); its manifests are the images' manifests. */
  index?: { descriptor: Descriptor; bytes: Buffer };
}

export interface PushOptions extends TransportOptions, RepositoryClientOptions {
  /** Parallel blob uploads (default 4). */
  concurrency?: number;
  /** Blobs that came from a registry repository (pulled base layers): mount them from there. */
  mountSources?: ReadonlyMap<string, { registry: string; repository: string }>;
  onBlob?: (ev: { reference: string; digest: string; size: number; outcome: UploadOutcome }) => void;
  /** Transports to reuse per registry host (tokens stay cached across references). */
  transports?: Map<string, RegistryTransport>;
}

export interface PushResult {
  reference: string;
  /** The digest the reference now points to (the index for multi-platform images). */
  digest: string;
  mediaType: string;
  blobs: { uploaded: number; mounted: number; existing: number; bytesUploaded: number };
}

export async function pushImage(target: PushTarget, refs: readonly ImageReference[], opts: PushOptions = {}): Promise<PushResult[]> {
  if (target.images.length === 0) throw new Error('pushImage: no image');
  if (target.images.length > 1 && !target.index) throw new Error('pushImage: several images need an index');
  const top = target.index ?? target.images[0]!.manifest;
  for (const ref of refs) {
    if (ref.digest !== undefined && ref.digest !== top.descriptor.digest) {
      throw new OcibuildError(`cannot push to ${formatReference(ref)}: the image's digest is ${top.descriptor.digest}`, {
        where: formatReference(ref),
        hint: 'push to a tag; a digest reference only names the image that has that digest',
        exitCode: EXIT_USAGE,
      });
    }
  }
  const transports = opts.transports ?? new Map<string, RegistryTransport>();
  const results: PushResult[] = [];
  // Per registry, the first repository pushed: a later reference to another repository
  // of the same registry mounts every blob from it instead of uploading it again.
  const pushedTo = new Map<string, string>();
  // One reference after another: the second push to the same repository finds every blob there.
  for (const ref of refs) {
    let transport = transports.get(ref.registry);
    if (!transport) {
      transport = new RegistryTransport(ref.registry, opts);
      transports.set(ref.registry, transport);
    }
    const repo = new RepositoryClient(transport, ref.repository, opts);
    const name = formatReference(ref);
    const stats = { uploaded: 0, mounted: 0, existing: 0, bytesUploaded: 0 };

    const blobs = new Map<string, UploadableBlob>();
    for (const image of target.images) {
      for (const l of image.layers) blobs.set(l.digest, { digest: l.digest, size: l.size, open: () => l.chunks?.() ?? l.open() });
      const cfg = image.config;
      blobs.set(cfg.descriptor.digest, { digest: cfg.descriptor.digest, size: cfg.descriptor.size, open: () => Readable.from([cfg.bytes]) });
    }
    await pMap(
      [...blobs.values()],
      async (blob) => {
        const src = opts.mountSources?.get(blob.digest);
        const sibling = pushedTo.get(ref.registry);
        const mountFrom =
          src && src.registry === ref.registry && src.repository !== ref.repository ? src.repository : sibling !== undefined && sibling !== ref.repository ? sibling : undefined;
        const outcome = await repo.uploadBlob(blob, mountFrom);
        if (outcome === 'uploaded') {
          stats.uploaded++;
          stats.bytesUploaded += blob.size;
        } else if (outcome === 'mounted') stats.mounted++;
        else stats.existing++;
        opts.onBlob?.({ reference: name, digest: blob.digest, size: blob.size, outcome });
      },
      { concurrency: opts.concurrency ?? 4, ...(opts.signal ? { signal: opts.signal } : {}) },
    );

    // Manifests by digest before the index that lists them (a registry may refuse an
    // index whose manifests it does not have), the top document last, under the tag.
    if (target.index) {
      for (const image of target.images) {
        await repo.putManifest(image.manifest.descriptor.digest, image.manifest.bytes, image.manifest.descriptor.mediaType);
      }
    }
    const digest = await repo.putManifest(ref.tag ?? top.descriptor.digest, top.bytes, top.descriptor.mediaType);
    if (digest !== top.descriptor.digest) throw new Error(`pushed manifest digest ${digest} differs from ${top.descriptor.digest}`);
    results.push({ reference: name, digest, mediaType: top.descriptor.mediaType, blobs: stats });
    if (!pushedTo.has(ref.registry)) pushedTo.set(ref.registry, ref.repository);
  }
  return results;
}

/** One line per pushed reference, the same for `push` and `build --push`: REF@DIGEST (the digest once). */
export function pushedLine(r: PushResult): string {
  const b = r.blobs;
  const where = r.reference.endsWith(`@${r.digest}`) ? r.reference : `${r.reference}@${r.digest}`;
  return `pushed ${where} (${b.uploaded} blobs uploaded, ${b.mounted} mounted, ${b.existing} already there)`;
}

/** The `--metadata-file` document: what was pushed where, for CI steps that follow. */
export function pushMetadata(target: PushTarget, results: readonly PushResult[]): Record<string, unknown> {
  const top = target.index ?? target.images[0]!.manifest;
  return {
    references: results.map((r) => r.reference),
    digest: top.descriptor.digest,
    mediaType: top.descriptor.mediaType,
    images: target.images.map((image) => ({
      ...(image.manifest.descriptor.platform ? { platform: image.manifest.descriptor.platform } : {}),
      manifest: { digest: image.manifest.descriptor.digest, size: image.manifest.descriptor.size, mediaType: image.manifest.descriptor.mediaType },
      config: { digest: image.config.descriptor.digest, size: image.config.descriptor.size },
      layers: image.layers.map((l) => ({ digest: l.digest, size: l.size, mediaType: l.mediaType, diffId: l.diffId })),
    })),
    pushed: results.map((r) => ({ reference: r.reference, digest: r.digest, ...r.blobs })),
  };
}
