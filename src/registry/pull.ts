/**
 * Pulling an image: the manifest (through an index or manifest list when the tag
 * names several platforms), its config and layers, each verified against digest
 * and size and kept in the store. The result is an `Image` whose layers are the
 * registry's blobs as they are (digests and media types unchanged, never
 * recompressed), so a build on top of it pushes them back untouched.
 */
import pMap from 'p-map';
import { OcibuildError } from '../errors.js';
import type { Descriptor, Platform } from '../oci/descriptor.js';
import { storeLayer, type BuiltImage, type Layer } from '../oci/image.js';
import { isIndexType, isLayerType, isManifestType } from '../oci/media-types.js';
import type { Store } from '../store/store.js';
import { RepositoryClient, type FetchedManifest, type RepositoryClientOptions } from './client.js';
import { formatReference, type ImageReference } from './reference.js';
import { RegistryTransport, type TransportOptions } from './transport.js';

export interface PullOptions extends TransportOptions, RepositoryClientOptions {
  store: Store;
  /** The platform to pick from an index (a single-platform manifest must match it). */
  platform: Platform;
  /** Parallel blob downloads (default 4). */
  concurrency?: number;
  /** Called as each layer lands in the store. */
  onLayer?: (done: number, total: number, digest: string) => void;
  /** Reuse an existing transport (and its tokens) for this registry. */
  transport?: RegistryTransport;
}

export interface PulledImage extends BuiltImage {
  reference: ImageReference;
  /** The digest the reference resolved to (the platform manifest, not the index). */
  digest: string;
  /** The parsed config document, for inheriting Env, Entrypoint, … */
  configDoc: ImageConfigDoc;
  /** Where each layer can be mounted from on push. */
  source: { registry: string; repository: string };
}

/** The parts of image-spec config.md that a build inherits. */
export interface ImageConfigDoc {
  architecture?: string;
  os?: string;
  variant?: string;
  config?: {
    Env?: string[];
    Entrypoint?: string[] | null;
    Cmd?: string[] | null;
    WorkingDir?: string;
    User?: string;
    Labels?: Record<string, string> | null;
    ExposedPorts?: Record<string, object> | null;
    [key: string]: unknown;
  };
  rootfs?: { type?: string; diff_ids?: string[] };
  history?: Array<{ created?: string; created_by?: string; comment?: string; empty_layer?: boolean }>;
  [key: string]: unknown;
}

interface ManifestDoc {
  mediaType?: string;
  config?: Descriptor;
  layers?: Descriptor[];
  manifests?: Descriptor[];
}

export async function pullImage(ref: ImageReference, opts: PullOptions): Promise<PulledImage> {
  const transport = opts.transport ?? new RegistryTransport(ref.registry, opts);
  const repo = new RepositoryClient(transport, ref.repository, opts);
  const name = formatReference(ref);

  let top = await cachedOrFetch(repo, ref.digest ?? ref.tag ?? 'latest', opts.store, ref.digest);
  if (isIndexType(top.mediaType)) {
    const desc = selectPlatform(parseDoc(top, name).manifests ?? [], opts.platform, name);
    top = await cachedOrFetch(repo, desc.digest, opts.store, desc.digest);
  }
  if (!isManifestType(top.mediaType)) {
    throw new OcibuildError(`${name} is a ${top.mediaType}, not an image manifest`, { where: name, hint: 'name a container image' });
  }
  const manifest = parseDoc(top, name);
  const configDesc = manifest.config;
  if (!configDesc || typeof configDesc.digest !== 'string' || typeof configDesc.size !== 'number') {
    throw new OcibuildError(`the manifest of ${name} has no config descriptor`, { where: name });
  }
  const layerDescs = manifest.layers ?? [];
  for (const l of layerDescs) {
    if (!isLayerType(l.mediaType)) {
      throw new OcibuildError(`${name} has a layer of type ${l.mediaType}, which ocibuild cannot use`, {
        where: `${name} layer ${l.digest}`,
        hint: 'foreign and non-distributable layers (Windows images) are not supported',
      });
    }
  }

  await repo.fetchBlob(configDesc, opts.store);
  const configBytes = await opts.store.readBlob(configDesc.digest);
  let configDoc: ImageConfigDoc;
  try {
    configDoc = JSON.parse(configBytes.toString('utf8')) as ImageConfigDoc;
  } catch {
    throw new OcibuildError(`the config of ${name} is not JSON`, { where: `${name} config ${configDesc.digest}` });
  }
  checkPlatform(configDoc, opts.platform, name);
  const diffIds = configDoc.rootfs?.diff_ids ?? [];
  if (diffIds.length !== layerDescs.length) {
    throw new OcibuildError(`the config of ${name} lists ${diffIds.length} diff_ids for ${layerDescs.length} layers`, { where: name });
  }

  let done = 0;
  await pMap(
    layerDescs,
    async (l) => {
      await repo.fetchBlob(l, opts.store);
      opts.onLayer?.(++done, layerDescs.length, l.digest);
    },
    { concurrency: opts.concurrency ?? 4, ...(opts.signal ? { signal: opts.signal } : {}) },
  );

  const history = (configDoc.history ?? []).filter((h) => !h.empty_layer);
  const layers: Layer[] = layerDescs.map((l, i) =>
    storeLayer(opts.store, {
      digest: l.digest,
      diffId: diffIds[i] as string,
      size: l.size,
      mediaType: l.mediaType,
      ...(history[i]?.created_by ? { history: { createdBy: history[i]?.created_by as string } } : {}),
    }),
  );
  const manifestDescriptor: Descriptor = { mediaType: top.mediaType, digest: top.digest, size: top.bytes.length };
  const platform: Platform = { architecture: configDoc.architecture ?? opts.platform.architecture, os: configDoc.os ?? opts.platform.os };
  if (configDoc.variant) platform.variant = configDoc.variant;
  manifestDescriptor.platform = platform;
  return {
    reference: ref,
    digest: top.digest,
    config: { descriptor: { mediaType: configDesc.mediaType, digest: configDesc.digest, size: configDesc.size }, bytes: configBytes },
    manifest: { descriptor: manifestDescriptor, bytes: top.bytes },
    layers,
    configDoc,
    source: { registry: ref.registry, repository: ref.repository },
  };
}

/** A manifest addressed by digest is read from the store when it is there (no network). */
async function cachedOrFetch(repo: RepositoryClient, reference: string, store: Store, digest: string | undefined): Promise<FetchedManifest> {
  if (digest && (await store.has(digest))) {
    const bytes = await store.readBlob(digest);
    const doc = JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown; manifests?: unknown };
    const mediaType = typeof doc.mediaType === 'string' ? doc.mediaType : Array.isArray(doc.manifests) ? 'application/vnd.oci.image.index.v1+json' : 'application/vnd.oci.image.manifest.v1+json';
    return { bytes, digest, mediaType };
  }
  const m = await repo.getManifest(reference);
  await store.putBytes(m.bytes, { digest: m.digest, size: m.bytes.length }, `manifest ${reference}`);
  return m;
}

function parseDoc(m: FetchedManifest, name: string): ManifestDoc {
  try {
    return JSON.parse(m.bytes.toString('utf8')) as ManifestDoc;
  } catch {
    throw new OcibuildError(`the manifest of ${name} is not JSON`, { where: name });
  }
}

/**
 * The index entry for `want`: os and architecture must match; the variant too when
 * one is asked for (arm64 without a variant means v8, as containerd reads it); with
 * no variant asked, an entry without one is preferred, then the highest variant.
 */
export function selectPlatform(manifests: Descriptor[], want: Platform, name: string): Descriptor {
  const norm = (p: Platform | undefined): Platform | undefined => (p ? normalizePlatform(p) : undefined);
  const w = normalizePlatform(want);
  const candidates = manifests.filter((m) => {
    const p = norm(m.platform);
    return p !== undefined && p.os === w.os && p.architecture === w.architecture && isManifestType(m.mediaType) && (w.variant === undefined || p.variant === w.variant);
  });
  candidates.sort((a, b) => variantRank(norm(b.platform)?.variant) - variantRank(norm(a.platform)?.variant));
  const pick = candidates[0];
  if (pick) return pick;
  const have = manifests
    .map((m) => m.platform)
    .filter((p): p is Platform => p !== undefined && p.os !== 'unknown')
    .map(formatPlatform);
  throw new OcibuildError(`${name} has no image for ${formatPlatform(want)}`, {
    where: name,
    hint: have.length > 0 ? `it has: ${[...new Set(have)].join(', ')}` : 'the index lists no platforms',
  });
}

function variantRank(v: string | undefined): number {
  if (v === undefined) return 1000;
  const m = /^v(\d+)$/.exec(v);
  return m ? Number(m[1]) : 0;
}

function normalizePlatform(p: Platform): Platform {
  const out: Platform = { os: p.os, architecture: p.architecture };
  let variant = p.variant === '' ? undefined : p.variant;
  if (p.architecture === 'arm64' && variant === 'v8') variant = undefined;
  if (variant !== undefined) out.variant = variant;
  return out;
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

function checkPlatform(config: ImageConfigDoc, want: Platform, name: string): void {
  if (config.architecture === undefined || config.os === undefined) return;
  if (config.os !== want.os || config.architecture !== want.architecture) {
    throw new OcibuildError(`${name} is an image for ${config.os}/${config.architecture}, not ${formatPlatform(want)}`, {
      where: name,
      hint: 'name a multi-platform tag or an image built for the wanted platform',
    });
  }
}
