/**
 * `ocibuild verify`: is the image reproducible? The spec is rebuilt from its lockfiles
 * (which must be fresh, as `build --locked`) in a fresh scratch store (verify-store.ts:
 * no cached layer and no extracted rootfs of an earlier build can be reused, only the
 * verified inputs are shared) and compared layer by layer (image-diff.ts) with a
 * reference: an OCI layout, a registry image, or by default a second build in a
 * second scratch store.
 *
 * The inputs a build takes from outside the spec and the locks (options such as
 * --source-date-epoch, --annotation) are the caller's to give the same; only the
 * layer compression is taken from the reference when not given, since it says
 * nothing about reproducibility and a zstd image would otherwise never verify.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { inputsDigest, parseLockfile } from '../apt/lockfile.js';
import type { OutputHandler } from '../sandbox/process.js';
import { OcibuildError, usageError } from '../errors.js';
import type { Descriptor } from '../oci/descriptor.js';
import type { BuiltImage } from '../oci/image.js';
import { compareDocuments, compareImages, type DocumentComparison, type ImageComparison } from '../oci/image-diff.js';
import { artifactImages, isIndex } from '../oci/index.js';
import { isIndexType, layerCompression } from '../oci/media-types.js';
import { parseLayoutRef, readLayoutImage } from '../oci/read-layout.js';
import { RepositoryClient } from '../registry/client.js';
import { pullImage, selectPlatform } from '../registry/pull.js';
import { formatReference, parseReference, type ImageReference } from '../registry/reference.js';
import { RegistryTransport, type TransportOptions } from '../registry/transport.js';
import { formatPlatform } from '../spec/platform.js';
import type { ImageSpec, Platform, SandboxChoiceSpec } from '../spec/types.js';
import { fetchDebs } from '../store/fetch-debs.js';
import type { Store } from '../store/store.js';
import { BaseImages, baseReference } from './base.js';
import { buildFromSpec, type Compression } from './build.js';
import { lockfilePath, lockInputs } from './lock.js';
import { SILENT, type BuildReporter } from './reporter.js';
import { scratchStore, type ScratchStore } from './verify-store.js';

export interface VerifyOptions {
  /** The main store: the .debs and base images come from it (and are fetched into it). */
  store: Store;
  /** `oci:DIR[:TAG]` or a registry reference; default: a second independent build. */
  against?: string;
  /** Default: the spec's. Given: only these platforms' images are compared. */
  platforms?: Platform[];
  registry?: TransportOptions;
  /** Default: the reference's layer compression, else gzip. */
  compression?: Compression;
  sourceDateEpoch?: number;
  mergedUsr?: boolean;
  sandbox?: SandboxChoiceSpec;
  annotations?: Record<string, string>;
  source?: string;
  revision?: string;
  /** Differing paths listed per layer, and differing members per document (default 50). */
  limit?: number;
  log?: (line: string) => void;
  progress?: BuildReporter;
  onStepOutput?: OutputHandler;
  signal?: AbortSignal;
}

/** One side of the comparison: its images and, when it is one, its image index. */
export interface ImageSet {
  label: string;
  images: BuiltImage[];
  index?: { descriptor: Descriptor; bytes: Buffer };
}

export interface PlatformComparison {
  platform: string;
  /** Absent when only one side has an image for the platform. */
  comparison?: ImageComparison;
  onlyIn?: 'a' | 'b';
}

export interface VerifyResult {
  /** a: the rebuild; b: the reference. */
  labels: { a: string; b: string };
  /** What the rebuild and the reference name at their top (manifest or index). */
  top: { a: Descriptor; b: Descriptor };
  platforms: PlatformComparison[];
  /** Both sides are image indices (and every platform was compared). */
  index?: DocumentComparison;
  /** Set when one side is an image index and the other a single manifest. */
  shape?: string;
  match: boolean;
}

export async function verifySpec(spec: ImageSpec, opts: VerifyOptions): Promise<VerifyResult> {
  const log = opts.log ?? (() => {});
  const platforms = opts.platforms ?? spec.platforms;
  // The reference first: a wrong name fails before a long build.
  const reference = opts.against !== undefined ? await loadReference(opts.against, platforms, opts) : undefined;
  let compression = opts.compression;
  if (compression === undefined && reference) {
    compression = referenceCompression(reference);
    if (compression !== 'gzip') log(`layer compression: ${compression}, as the reference's layers (--compression to choose)`);
  }
  const inputs = await prefetchInputs(spec, platforms, opts);
  const scratches: ScratchStore[] = [];
  try {
    const rebuild = async (n: number, of: number): Promise<ImageSet> => {
      log(`build ${n} of ${of}, in a fresh layer cache`);
      const scratch = await scratchStore(opts.store, `verify-${n}`, inputs);
      scratches.push(scratch);
      return buildIn(spec, scratch, { ...opts, compression: compression ?? 'gzip' }, of === 1 ? 'rebuild' : `build ${n}`);
    };
    const a = await rebuild(1, reference ? 1 : 2);
    const b = reference ?? (await rebuild(2, 2));
    log(`comparing with ${b.label}`);
    return await compareSets(a, b, { ...opts, allPlatforms: opts.platforms === undefined });
  } finally {
    for (const s of scratches) await s.dispose();
  }
}

/** A build like `build --locked` into the scratch store; its layers are read from there. */
async function buildIn(spec: ImageSpec, scratch: ScratchStore, opts: VerifyOptions & { compression: Compression }, label: string): Promise<ImageSet> {
  // buildFromSpec needs an output: a layout next to the scratch store (blobs hard-linked),
  // which is no business of the user's, so its "wrote" line is not passed on.
  const output = `oci:${path.join(scratch.dir, 'out')}:verify`;
  const log = opts.log;
  const result = await buildFromSpec(spec, {
    store: scratch.store,
    output,
    locked: true,
    compression: opts.compression,
    ...(opts.platforms ? { platforms: opts.platforms } : {}),
    ...(opts.registry ? { registry: opts.registry } : {}),
    ...(opts.sourceDateEpoch !== undefined ? { sourceDateEpoch: opts.sourceDateEpoch } : {}),
    ...(opts.mergedUsr !== undefined ? { mergedUsr: opts.mergedUsr } : {}),
    ...(opts.sandbox !== undefined ? { sandbox: opts.sandbox } : {}),
    ...(opts.annotations ? { annotations: opts.annotations } : {}),
    ...(opts.source !== undefined ? { source: opts.source } : {}),
    ...(opts.revision !== undefined ? { revision: opts.revision } : {}),
    ...(opts.onStepOutput ? { onStepOutput: opts.onStepOutput } : {}),
    ...(log ? { log: (line: string) => (line.startsWith(`wrote ${output}`) ? undefined : log(line)) } : {}),
    ...(opts.progress ? { progress: opts.progress } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  const set: ImageSet = { label, images: artifactImages(result.artifact) };
  if (isIndex(result.artifact)) set.index = result.artifact.index;
  return set;
}

/**
 * The inputs a rebuild may share, fetched into the main store: each fresh lock's .debs
 * (verified against the lock as they arrive) and the base image's blobs. A missing or
 * stale lock is left for the build to refuse with its usual message.
 */
async function prefetchInputs(spec: ImageSpec, platforms: Platform[], opts: VerifyOptions): Promise<string[]> {
  const progress = opts.progress ?? SILENT;
  const digests: string[] = [];
  const baseRef = baseReference(spec);
  const bases = baseRef
    ? new BaseImages(baseRef, { store: opts.store, ...(opts.registry ? { registry: opts.registry } : {}), ...(opts.log ? { log: opts.log } : {}), ...(opts.signal ? { signal: opts.signal } : {}) })
    : undefined;
  for (const platform of platforms) {
    const base = bases ? await bases.get(platform) : undefined;
    if (base) digests.push(base.image.manifest.descriptor.digest, base.image.config.descriptor.digest, ...base.image.layers.map((l) => l.digest));
    if (!spec.apt || spec.apt.packages.length === 0) continue;
    const file = lockfilePath(spec, platform);
    const text = await readFile(file, 'utf8').catch(() => undefined);
    if (text === undefined) continue;
    const lock = parseLockfile(text, file);
    if (lock.inputsDigest !== inputsDigest(lockInputs(spec, platform, base?.dpkgStatus))) continue;
    progress.beginDownloads(lock.entries.length, lock.entries.reduce((n, e) => n + e.size, 0), platforms.length > 1 ? formatPlatform(platform) : undefined);
    try {
      await fetchDebs(lock.entries, { store: opts.store, onProgress: (ev) => progress.download(ev), ...(opts.signal ? { signal: opts.signal } : {}) });
    } finally {
      progress.endDownloads();
    }
    digests.push(...lock.entries.map((e) => `sha256:${e.sha256}`));
  }
  return digests;
}

/** `oci:DIR[:TAG]` read from the layout; anything else is a registry reference, pulled. */
async function loadReference(against: string, platforms: Platform[], opts: VerifyOptions): Promise<ImageSet> {
  const transport = /^([a-z-]+):/.exec(against)?.[1];
  if (transport !== undefined && ['oci-archive', 'docker-archive', 'docker-daemon', 'dir', 'docker'].includes(transport)) {
    throw usageError(`verify cannot read ${transport}: references`, '--against', 'give an OCI layout (oci:DIR[:TAG]) or a registry reference (host/name:tag)');
  }
  if (against.startsWith('oci:')) {
    const { dir, tag } = parseLayoutRef(against);
    const layout = await readLayoutImage(path.resolve(dir), tag);
    return { label: against, images: layout.images, ...(layout.index ? { index: layout.index } : {}) };
  }
  return pullReference(parseReference(against, '--against'), platforms, opts);
}

/**
 * The registry image for each platform, pinned to the digest the reference resolved
 * to once (a tag moving meanwhile cannot mix two images), pulled into the main store.
 */
async function pullReference(ref: ImageReference, platforms: Platform[], opts: VerifyOptions): Promise<ImageSet> {
  const label = formatReference(ref);
  const transport = new RegistryTransport(ref.registry, opts.registry ?? {});
  const repo = new RepositoryClient(transport, ref.repository, opts.signal ? { signal: opts.signal } : {});
  const top = await repo.getManifest(ref.digest ?? ref.tag ?? 'latest');
  await opts.store.putBytes(top.bytes, { digest: top.digest, size: top.bytes.length }, label);
  const pinned: ImageReference = { ...ref, digest: top.digest };
  const pull = (platform: Platform): Promise<BuiltImage> =>
    pullImage(pinned, { ...(opts.registry ?? {}), store: opts.store, platform, transport, ...(opts.signal ? { signal: opts.signal } : {}) });
  if (!isIndexType(top.mediaType)) return { label, images: [await pull(platforms[0]!)] };
  const listed = (JSON.parse(top.bytes.toString('utf8')) as { manifests?: Descriptor[] }).manifests ?? [];
  const images: BuiltImage[] = [];
  for (const p of platforms) {
    // A platform the index lacks shows in the report as one the rebuild alone has.
    try {
      selectPlatform(listed, p, label);
    } catch (err) {
      if (err instanceof OcibuildError) continue;
      throw err;
    }
    images.push(await pull(p));
  }
  return { label, images, index: { descriptor: { mediaType: top.mediaType, digest: top.digest, size: top.bytes.length }, bytes: top.bytes } };
}

/** The compression of the reference's own layers (its last one: base layers come first). */
function referenceCompression(ref: ImageSet): Compression {
  const last = ref.images[0]?.layers.at(-1);
  return last && layerCompression(last.mediaType) === 'zstd' ? 'zstd' : 'gzip';
}

async function compareSets(a: ImageSet, b: ImageSet, opts: VerifyOptions & { allPlatforms: boolean }): Promise<VerifyResult> {
  const log = opts.log ?? (() => {});
  const platforms: PlatformComparison[] = [];
  const single = a.images.length === 1 && b.images.length === 1;
  const unpaired = new Set(b.images);
  for (const img of a.images) {
    const key = platformKey(img);
    const other = single ? b.images[0] : b.images.find((x) => platformKey(x) === key);
    if (!other) {
      platforms.push({ platform: key, onlyIn: 'a' });
      continue;
    }
    unpaired.delete(other);
    const comparison = await compareImages(img, other, {
      ...(opts.limit !== undefined ? { limit: opts.limit } : {}),
      onLayerDiff: (i) => log(`layer ${i}${a.images.length > 1 ? ` of ${key}` : ''}: the tars differ; comparing their entries`),
    });
    platforms.push({ platform: key, comparison });
  }
  // With --platform, the reference's other platforms are not this verification's business.
  if (opts.allPlatforms) for (const img of unpaired) platforms.push({ platform: platformKey(img), onlyIn: 'b' });
  const result: VerifyResult = {
    labels: { a: a.label, b: b.label },
    top: { a: topOf(a), b: topOf(b) },
    platforms,
    match: platforms.every((p) => p.comparison?.match === true),
  };
  if (opts.allPlatforms) {
    if (a.index && b.index) result.index = compareDocuments(a.index, b.index, opts.limit);
    else if (a.index || b.index) result.shape = `${a.index ? a.label : b.label} is an image index, ${a.index ? b.label : a.label} a single image manifest`;
    result.match &&= (result.index?.match ?? true) && result.shape === undefined;
  }
  return result;
}

function topOf(set: ImageSet): Descriptor {
  return set.index?.descriptor ?? set.images[0]!.manifest.descriptor;
}

/** `linux/amd64`: from the manifest's descriptor, else from the config. */
function platformKey(img: BuiltImage): string {
  const p = img.manifest.descriptor.platform;
  if (p) return formatPlatform(p);
  try {
    const c = JSON.parse(img.config.bytes.toString('utf8')) as { os?: string; architecture?: string; variant?: string };
    if (c.os && c.architecture) return formatPlatform({ os: c.os, architecture: c.architecture, ...(c.variant ? { variant: c.variant } : {}) });
  } catch {
    // Not JSON: the comparison of the configs will say so.
  }
  return 'unknown platform';
}
