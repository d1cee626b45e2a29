/**
 * `ocibuild build`: spec + lockfiles → .debs in the store → apt layer and files layer
 * (deterministic tarballs) → OCI config and manifest per platform (and an image index
 * over them when there are several) → the requested output.
 *
 * Every layer is cached in the store under a key made of everything that decides
 * its bytes (the locked .debs' digests, options, SOURCE_DATE_EPOCH, compression), so
 * an unchanged rebuild only hashes its inputs.
 */
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tempName, writeFileAtomic } from '../store/atomic.js';
import path from 'node:path';
import { OcibuildError, EXIT_USAGE, usageError } from '../errors.js';
import type { ImageSpec, Platform, SandboxChoiceSpec } from '../spec/types.js';
import type { OutputHandler } from '../sandbox/process.js';
import type { RunConfig } from '../sandbox/run-step.js';
import { readSecrets, runLayer } from './run-layer.js';
import { checkFileSources, fileIdentity, filesLayerEntries } from './files-layer.js';
import { chainId } from './tracked.js';
import { checkCanRun } from './platform-exec.js';
import { debianArch, formatPlatform, samePlatform } from '../spec/platform.js';
import { annotationProblem, revisionProblem, sourceProblem } from '../spec/annotations.js';
import type { Store } from '../store/store.js';
import { parseLockfile, inputsDigest, staleReason, type LockEntry } from '../apt/lockfile.js';
import { fetchDebs, type FetchedDeb } from '../store/fetch-debs.js';
import type { LayerEntry } from '../layer/entry.js';
import { bytesContent } from '../layer/content.js';
import { buildImage, type ImageConfigInput, type Layer } from '../oci/image.js';
import { buildIndex, topDescriptor, type BuiltArtifact } from '../oci/index.js';
import { imageAnnotations } from '../oci/annotations.js';
import { indexOutputError, indexUnsupported, parseOutput, writeOutput } from '../oci/output.js';
import { buildAptLayerTree } from './apt-layer.js';
import { EXTENDED_STATES, extendedStates } from './apt-states.js';
import { gitRevision, gitSourceUrl } from './git.js';
import { checkLockfilePaths, lockImage, lockfilePath, lockInputs } from './lock.js';
import { VERSION } from '../version.js';
import { pushedLine, pushImage, type PushResult } from '../registry/push.js';
import { formatReference, type ImageReference } from '../registry/reference.js';
import type { TransportOptions } from '../registry/transport.js';
import { BaseImages, baseReference, configOverBase, type BaseImage } from './base.js';
import { buildInputFiles, depfileTarget, formatDepfile } from './depfile.js';
import { cachedLayer, stepKey, writeAndCache, type CachedLayer, type Compression } from './layer-cache.js';
import { dpkgLayer } from './dpkg-layer.js';
import { sourcesList } from './sources-list.js';
import { holdStore } from '../store/builds.js';
import { SILENT, type BuildReporter } from './reporter.js';

export type { Compression } from './layer-cache.js';
export type { BuildReporter } from './reporter.js';

export interface BuildOptions {
  store: Store;
  /** oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REF]; optional when pushing. */
  output?: string;
  /** Registry references to push the result to (after the output is written). */
  push?: ImageReference[];
  /** How to reach registries: for `from:` pulls and pushes. */
  registry?: TransportOptions;
  /** Fail instead of updating a missing or stale lockfile. */
  locked?: boolean;
  compression?: Compression;
  /** Seconds; default: $SOURCE_DATE_EPOCH, else the newest file date in the locked packages. */
  sourceDateEpoch?: number;
  /** Link bin, sbin, lib* into usr/ as debootstrap does (default true). */
  mergedUsr?: boolean;
  /** Gets the digest the output names: the manifest's, or the image index's. */
  digestFile?: string;
  /** A Make/Ninja depfile listing every input file read (target: the digest file, else the output). */
  depfile?: string;
  /** The depfile's target as the user wrote it (Make matches target names literally). */
  depfileTarget?: string;
  /**
   * The platforms to build (default: the spec's). One gives an image manifest, as
   * always; several give an image index over one image per platform.
   */
  platforms?: Platform[];
  /** Manifest annotations on top of the spec's `annotations:` (same keys: these win). */
  annotations?: Record<string, string>;
  /** org.opencontainers.image.source: a URL, or 'git' for the spec checkout's origin remote. */
  source?: string;
  /** org.opencontainers.image.revision: an identifier, or 'git' for the spec checkout's HEAD. */
  revision?: string;
  /** Which sandbox runs `run:` and `install: dpkg` (default: the spec's `sandbox:`). */
  sandbox?: SandboxChoiceSpec;
  /** Gets what sandboxed steps print, as it comes (default: nothing; a failure still shows its tail). */
  onStepOutput?: OutputHandler;
  /** Take no layer from the layer cache: every step is redone (and recorded). Rootfs trees are still reused: they are keyed by content. */
  noCache?: boolean;
  insecureNoVerify?: boolean;
  ignoreValidUntil?: boolean;
  log?: (line: string) => void;
  progress?: BuildReporter;
  signal?: AbortSignal;
}

export interface BuiltPlatformImage {
  platform: Platform;
  manifestDigest: string;
  configDigest: string;
  layers: Array<{ digest: string; size: number; createdBy: string }>;
}

export interface BuildResult {
  /** What the output names at its top level: the manifest (one platform) or the image index. */
  digest: string;
  mediaType: string;
  /** What was pushed, when push references were given. */
  pushed?: PushResult[];
  /** The built artifact (for a --metadata-file). */
  artifact: BuiltArtifact;
  /** One per platform, in the order built (the index's order). */
  images: BuiltPlatformImage[];
}

/** The layers one platform contributes before the shared ones, and its default date. */
interface PlatformPart {
  platform: Platform;
  layers: Layer[];
  /** SOURCE_DATE_EPOCH this platform's packages suggest (their newest file), if any. */
  sde?: number;
  base?: BaseImage;
}

export async function buildFromSpec(spec: ImageSpec, opts: BuildOptions): Promise<BuildResult> {
  const log = opts.log ?? (() => {});
  const progress = opts.progress ?? SILENT;
  if (opts.output === undefined && (opts.push ?? []).length === 0) {
    throw usageError('nowhere to put the image', undefined, 'give --output oci:DIR[:TAG] (or an archive) and/or --push REF');
  }
  const output = opts.output !== undefined ? parseOutput(opts.output) : undefined;
  const platforms = buildPlatforms(spec, opts.platforms);
  // Refused before any work: a long build must not end in "this output cannot hold it".
  if (output && platforms.length > 1 && indexUnsupported(output) !== undefined) throw indexOutputError(output, platforms.length);
  const depTarget = opts.depfileTarget ?? depfileTarget(output, opts.digestFile);
  if (opts.depfile && depTarget === undefined) {
    throw usageError('--depfile needs a file to name as its target', '--depfile', 'give --output DEST or --digest-file FILE too');
  }
  // Spec errors found without the store stop the build before it registers there.
  const baseRef = baseReference(spec);
  if (spec.apt && spec.apt.packages.length > 0) checkLockfilePaths(spec, platforms);
  // Registered on the store from here on (store/builds.ts): what the build uses is kept from `cache prune`.
  const hold = await holdStore(opts.store);
  try {
    return await buildChecked(spec, opts, { log, progress, output, platforms, depTarget, baseRef });
  } finally {
    await hold.release();
  }
}

/** buildFromSpec once the request is known to make sense. */
async function buildChecked(
  spec: ImageSpec,
  opts: BuildOptions,
  { log, progress, output, platforms, depTarget, baseRef }: {
    log: (line: string) => void; progress: BuildReporter; output: ReturnType<typeof parseOutput> | undefined; platforms: Platform[]; depTarget: string | undefined; baseRef: ImageReference | undefined;
  },
): Promise<BuildResult> {
  const bases = baseRef
    ? new BaseImages(baseRef, { store: opts.store, ...(opts.registry ? { registry: opts.registry } : {}), ...(opts.log ? { log: opts.log } : {}), ...(opts.signal ? { signal: opts.signal } : {}) })
    : undefined;
  // The bases first: their dpkg status is an input of the locks.
  const baseImages = bases ? await Promise.all(platforms.map((p) => bases.get(p))) : platforms.map(() => undefined);
  const userAnnotations = await resolveAnnotations(spec, opts);
  const compression = opts.compression ?? 'gzip';
  const explicitSde = opts.sourceDateEpoch ?? envEpoch();

  // Inputs read late are checked now, so a typo fails in seconds, not after the apt layer.
  await checkFileSources(spec);
  if (spec.run) await readSecrets(spec.run);

  // Every platform's programs must be runnable (dpkg, RUN lines) before any is built.
  const runsPrograms = spec.run !== undefined || (spec.apt !== undefined && spec.apt.packages.length > 0 && spec.apt.install === 'dpkg');
  if (runsPrograms) for (const p of platforms) await checkCanRun(p, spec.run && spec.apt?.install !== 'dpkg' ? spec.run.where : spec.path);

  // install: dpkg runs the base's own dpkg (and /bin/sh): refused before locking and fetching when it has none.
  if (spec.apt && spec.apt.packages.length > 0 && spec.apt.install === 'dpkg') {
    for (const base of baseImages) {
      if (!base) continue;
      const missing = [...(base.dpkgStatus ? [] : ['/var/lib/dpkg/status']), ...(base.hasDpkg ? [] : ['/usr/bin/dpkg']), ...(base.hasShell ? [] : ['/bin/sh'])];
      if (missing.length > 0) {
        throw new OcibuildError(`install: dpkg needs dpkg and a shell in the base image, and ${spec.from} has no ${missing.join(', ')}`, {
          where: spec.path,
          hint: 'use install: unpack on this base (files and the dpkg database, no maintainer scripts)',
        });
      }
    }
  }

  // Every platform's lock first: a missing or stale one fails before anything is fetched.
  const locks = spec.apt && spec.apt.packages.length > 0 ? await lockEntries(spec, platforms, opts, baseImages) : platforms.map(() => []);

  // Scratch space next to the store's blobs (same filesystem), removed at the end.
  await mkdir(path.join(opts.store.root, 'tmp'), { recursive: true });
  const workDir = await mkdtemp(path.join(opts.store.root, 'tmp', 'build-'));
  try {
    const parts: PlatformPart[] = [];
    for (const [i, platform] of platforms.entries()) {
      const entries = locks[i] ?? [];
      const base = baseImages[i];
      const part: PlatformPart = { platform, layers: [...(base?.image.layers ?? [])], ...(base ? { base } : {}) };
      parts.push(part);
      if (entries.length === 0) continue;
      const suffix = platforms.length > 1 ? ` for ${formatPlatform(platform)}` : '';
      const arch = debianArch(platform);
      progress.beginDownloads(entries.length, entries.reduce((n, e) => n + e.size, 0), platforms.length > 1 ? formatPlatform(platform) : undefined);
      let debs: Map<string, FetchedDeb>;
      try {
        debs = await fetchDebs(entries, {
          store: opts.store,
          ...(opts.signal ? { signal: opts.signal } : {}),
          onProgress: (ev) => progress.download(ev),
        });
      } finally {
        progress.endDownloads();
      }
      // On a base, /bin decides: linking it over the base's /bin directory would hide its files.
      const mergedUsr = base?.mergedUsr ?? opts.mergedUsr ?? true;
      if (base && base.mergedUsr !== undefined && opts.mergedUsr !== undefined && opts.mergedUsr !== base.mergedUsr) {
        log(`warning: ${spec.from} ${base.mergedUsr ? 'has' : 'does not have'} a merged /usr; the apt layer follows the base`);
      }
      const label = `apt layer${suffix}`;
      let layer: CachedLayer;
      if (spec.apt!.install === 'dpkg') {
        await checkCanRun(platform, spec.path);
        const list = !base && entries.some((e) => e.package === 'apt') ? imageSourcesList(spec, log) : undefined;
        layer = await dpkgLayer({
          store: opts.store,
          ...(list !== undefined ? { sourcesList: list } : {}),
          ...(opts.noCache ? { noCache: true } : {}),
          debs: entries.map((e) => ({ entry: e, path: debPath(debs, e) })),
          below: part.layers,
          arch,
          mergedUsr,
          config: runConfig(spec, base, false),
          sandbox: opts.sandbox ?? spec.sandbox,
          compression,
          ...(explicitSde !== undefined ? { sourceDateEpoch: explicitSde } : {}),
          workDir: path.join(workDir, `dpkg-${i}`),
          label,
          where: spec.path,
          progress,
          log,
          ...(opts.onStepOutput ? { onOutput: opts.onStepOutput } : {}),
          ...(opts.signal ? { signal: opts.signal } : {}),
        });
      } else {
        layer = await unpackLayer(spec, opts, { entries, debs, arch, mergedUsr, base, compression, explicitSde, label, workDir: path.join(workDir, `apt-${i}`), progress, log });
      }
      part.sde = layer.sde;
      part.layers.push(layer.layer);
    }
    const dates = parts.flatMap((p) => (p.sde === undefined ? [] : [p.sde]));
    // A base image's own date counts as an input date (an image on a base alone gets the base's).
    for (const p of parts) {
      const t = p.base ? Date.parse(p.base.image.configDoc.created as string) : NaN;
      if (Number.isFinite(t)) dates.push(Math.floor(t / 1000));
    }
    const sde = explicitSde ?? (dates.length > 0 ? Math.max(...dates) : 0);

    // The RUN layer: on each platform's own rootfs (base + apt layer), so one per platform.
    if (spec.run) {
      for (const [i, part] of parts.entries()) {
        await checkCanRun(part.platform, spec.run.where);
        const suffix = platforms.length > 1 ? ` for ${formatPlatform(part.platform)}` : '';
        const layer = await runLayer({
          store: opts.store,
          ...(opts.noCache ? { noCache: true } : {}),
          run: spec.run,
          below: part.layers,
          config: runConfig(spec, part.base),
          sandbox: opts.sandbox ?? spec.sandbox,
          compression,
          sourceDateEpoch: sde,
          workDir: path.join(workDir, `run-${i}`),
          label: `run layer${suffix}`,
          where: spec.run.where,
          progress,
          log,
          ...(opts.onStepOutput ? { onOutput: opts.onStepOutput } : {}),
          ...(opts.signal ? { signal: opts.signal } : {}),
        });
        part.layers.push(layer.layer);
      }
    }

    // The files layer: resolved against each platform's layers below (symlinked and
    // existing parents, files-layer.ts); platforms whose trees agree share the layer.
    if (spec.files.length > 0) {
      const createdBy = `ocibuild files: ${spec.files.map((f) => f.dest).join(' ')}`;
      const identity = await Promise.all(spec.files.map(fileIdentity));
      for (const [i, part] of parts.entries()) {
        const label = `files layer${platforms.length > 1 ? ` for ${formatPlatform(part.platform)}` : ''}`;
        const below = part.layers.length > 0 ? chainId(part.layers.map((l) => l.diffId)) : null;
        const key = stepKey('files-v2', { files: identity, below, compression, sde, version: VERSION });
        const cached = await cachedLayer(opts.store, key, createdBy, opts);
        if (cached) log(`${label}: unchanged, from the layer cache (${cached.layer.digest})`);
        const layer = cached ?? (await writeAndCache(opts.store, key, await filesLayerEntries(spec, sde, part.layers), compression, sde, createdBy, label, progress, opts.signal));
        parts[i]!.layers.push(layer.layer);
      }
    }

    const created = new Date(sde * 1000);
    const annotations = imageAnnotations({ created, ...userAnnotations });
    const images = parts.map((part) => {
      const own = imageAnnotations({
        created,
        ...userAnnotations,
        ...(part.base ? { base: { name: formatReference(part.base.reference), digest: part.base.image.digest } } : {}),
      });
      return buildImage(configOverBase(imageConfig(spec, part.platform, created), spec, part.base?.image), [...part.layers], own);
    });
    const artifact: BuiltArtifact = images.length === 1 ? images[0]! : buildIndex(images, annotations);
    const top = topDescriptor(artifact);
    if (output) {
      await writeOutput(output, artifact, { store: opts.store, ...(opts.signal ? { signal: opts.signal } : {}) });
      log(`wrote ${opts.output}: ${top.digest}${images.length > 1 ? ` (image index of ${images.length} platforms)` : ''}`);
    }
    let pushed: PushResult[] | undefined;
    if (opts.push && opts.push.length > 0) {
      // Base layers are mounted from the base's repository when it is on the same registry.
      const mountSources = new Map<string, { registry: string; repository: string }>();
      for (const part of parts) for (const l of part.base?.image.layers ?? []) mountSources.set(l.digest, part.base!.image.source);
      const target = 'images' in artifact ? { images: artifact.images, index: artifact.index } : { images: [artifact] };
      pushed = await pushImage(target, opts.push, {
        ...(opts.registry ?? {}),
        mountSources,
        ...(opts.log ? { log: opts.log } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
      for (const r of pushed) log(pushedLine(r));
    }
    if (opts.digestFile) await atomicWrite(opts.digestFile, `${top.digest}\n`);
    if (opts.depfile && depTarget) await atomicWrite(opts.depfile, formatDepfile(depTarget, buildInputFiles(spec, platforms)));
    return {
      digest: top.digest,
      mediaType: top.mediaType,
      artifact,
      ...(pushed ? { pushed } : {}),
      images: images.map((image, i) => ({
        platform: parts[i]!.platform,
        manifestDigest: image.manifest.descriptor.digest,
        configDigest: image.config.descriptor.digest,
        layers: image.layers.map((l) => ({ digest: l.digest, size: l.size, createdBy: l.history?.createdBy ?? '' })),
      })),
    };
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

function imageConfig(spec: ImageSpec, platform: Platform, created: Date): ImageConfigInput {
  return {
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    created,
    env: Object.entries(spec.config.env).map(([k, v]) => `${k}=${v}`),
    ...(spec.config.entrypoint ? { entrypoint: spec.config.entrypoint } : {}),
    ...(spec.config.cmd ? { cmd: spec.config.cmd } : {}),
    ...(spec.config.workdir ? { workingDir: spec.config.workdir } : {}),
    ...(spec.config.user ? { user: spec.config.user } : {}),
    labels: spec.config.labels,
    exposedPorts: spec.config.expose,
  };
}

/** The sources.list of a from-scratch image with apt (sources-list.ts); says which sources are left out. */
function imageSourcesList(spec: ImageSpec, log: (line: string) => void): string | undefined {
  const { text, leftOut } = sourcesList(spec.apt!.sources);
  for (const s of leftOut) {
    log(`note: /etc/apt/sources.list in the image leaves out ${s.url} ${s.suites.join(',')}: it is signed by ${s.keyring}, a keyring of this host the image's apt does not trust (add the key and the source in a RUN line to use it there)`);
  }
  return text;
}

/** `install: unpack`: the .debs' files and a dpkg database, no maintainer scripts (apt-layer.ts). */
async function unpackLayer(
  spec: ImageSpec,
  opts: BuildOptions,
  p: {
    entries: LockEntry[]; debs: Map<string, FetchedDeb>; arch: string; mergedUsr: boolean; base: BaseImage | undefined; compression: Compression;
    explicitSde: number | undefined; label: string; workDir: string; progress: BuildReporter; log: (line: string) => void;
  },
): Promise<CachedLayer> {
  const baseStatus = p.base?.dpkgStatus?.text;
  // apt's auto marks, when the image has apt (locked now, or in the base's database).
  const hasApt = p.entries.some((e) => e.package === 'apt') || p.base?.aptExtendedStates !== undefined || /^Package: apt$/m.test(baseStatus ?? '');
  const states = hasApt ? extendedStates(p.entries, new Set(), p.arch, p.base?.aptExtendedStates) : undefined;
  const createdBy = `ocibuild apt install (unpack): ${spec.apt!.packages.map((x) => x.name).join(' ')} (${p.entries.length} packages)`;
  const list = p.base === undefined && p.entries.some((e) => e.package === 'apt') ? imageSourcesList(spec, p.log) : undefined;
  const key = stepKey('apt-unpack-v4', {
    ...(list !== undefined ? { sourcesList: list } : {}),
    debs: p.entries.map((e) => e.sha256),
    arch: p.arch,
    mergedUsr: p.mergedUsr,
    compression: p.compression,
    sde: p.explicitSde ?? null,
    version: VERSION,
    ...(baseStatus !== undefined ? { baseStatus: createHash('sha256').update(baseStatus).digest('hex') } : {}),
    ...(states !== undefined ? { extendedStates: createHash('sha256').update(states).digest('hex') } : {}),
  });
  const cached = await cachedLayer(opts.store, key, createdBy, opts);
  if (cached) {
    p.log(`${p.label}: unchanged, from the layer cache (${cached.layer.digest})`);
    return cached;
  }
  p.log(`unpacking ${p.entries.length} packages into the ${p.label}`);
  const tree = await buildAptLayerTree({
    debs: p.entries.map((e) => ({ package: e.package, version: e.version, path: debPath(p.debs, e) })),
    arch: p.arch,
    mergedUsr: p.mergedUsr,
    ...(baseStatus !== undefined ? { baseStatus } : {}),
    scriptFiles: true,
    ...(list !== undefined ? { sourcesList: list } : {}),
    workDir: p.workDir,
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  if (states !== undefined) withFile(tree.entries, EXTENDED_STATES, states, tree.newestMtime);
  // The default date is this platform's newest file. Layer bytes do not depend on
  // it beyond that (nothing is newer, so nothing is clamped), which is why another
  // platform's later date, chosen for the image, leaves this layer as it is.
  return writeAndCache(opts.store, key, tree.entries, p.compression, p.explicitSde ?? tree.newestMtime, createdBy, p.label, p.progress, opts.signal);
}

/**
 * Adds (or replaces) the file `rel` with `text`, 0644 root, and the directories above it
 * that the entries lack, 0755 root (a base image has them already; these then only
 * repeat them).
 */
function withFile(entries: LayerEntry[], rel: string, text: string, mtime: number): void {
  const have = new Set(entries.map((e) => e.path));
  const parts = rel.split('/');
  for (let i = 1; i < parts.length; i++) {
    const dir = parts.slice(0, i).join('/');
    if (!have.has(dir)) entries.push({ type: 'directory', path: dir, mode: 0o755, uid: 0, gid: 0, mtime });
  }
  const at = entries.findIndex((e) => e.path === rel);
  if (at >= 0) entries.splice(at, 1);
  entries.push({ type: 'file', path: rel, mode: 0o644, uid: 0, gid: 0, mtime, size: Buffer.byteLength(text), content: bytesContent(Buffer.from(text)) });
}

/**
 * What a RUN step inherits: the base's Env with the spec's config.env over it, and the
 * base's WorkingDir and User (the spec's are the runtime's; see run-layer.ts).
 */
/**
 * What a sandboxed step runs with: the base's Env, WorkingDir and User, and for RUN
 * lines the spec's config.env on top. The dpkg install step takes the base's alone:
 * the spec's runtime environment (a PATH for the app, say) is not the installer's, and
 * must not make an unchanged install run again.
 */
function runConfig(spec: ImageSpec, base: BaseImage | undefined, withSpecEnv = true): RunConfig {
  const c = base?.image.configDoc.config ?? {};
  const env = new Map<string, string>();
  for (const e of c.Env ?? []) {
    const i = e.indexOf('=');
    env.set(i < 0 ? e : e.slice(0, i), i < 0 ? '' : e.slice(i + 1));
  }
  if (withSpecEnv) for (const [k, v] of Object.entries(spec.config.env)) env.set(k, v);
  return {
    Env: [...env].map(([k, v]) => `${k}=${v}`),
    ...(c.WorkingDir ? { WorkingDir: c.WorkingDir } : {}),
    ...(c.User ? { User: c.User } : {}),
  };
}

/** fetchDebs keys an entry `package:arch` when the lock holds that name for several architectures. */
function debPath(debs: Map<string, FetchedDeb>, e: LockEntry): string {
  const deb = debs.get(`${e.package}:${e.architecture}`) ?? debs.get(e.package);
  if (!deb) throw new Error(`fetchDebs returned no blob for ${e.package} ${e.version} ${e.architecture}`);
  return deb.path;
}

function buildPlatforms(spec: ImageSpec, asked: Platform[] | undefined): Platform[] {
  const platforms = asked ?? spec.platforms;
  if (platforms.length === 0) throw usageError('no platform to build', spec.path, 'list platforms in the spec or pass --platform linux/amd64');
  platforms.forEach((p, i) => {
    const first = platforms.findIndex((q) => samePlatform(p, q));
    if (first !== i) throw usageError(`platform ${formatPlatform(p)} is listed twice`, asked ? '--platform' : spec.path, 'name each platform once');
  });
  return platforms;
}

/** The user's annotations, spec first then options, with --source/--revision git resolved. */
async function resolveAnnotations(spec: ImageSpec, opts: BuildOptions): Promise<{ extra: Record<string, string>; source?: string; revision?: string }> {
  const extra = { ...spec.annotations };
  for (const [k, v] of Object.entries(opts.annotations ?? {})) {
    const problem = annotationProblem(k, v);
    if (problem) throw usageError(problem.message, '--annotation', problem.hint);
    extra[k] = v;
  }
  const out: { extra: Record<string, string>; source?: string; revision?: string } = { extra };
  if (opts.source !== undefined) {
    const source = opts.source === 'git' ? await gitSourceUrl(spec.dir) : opts.source;
    const problem = sourceProblem(source);
    if (problem) throw usageError(problem.message, '--source', problem.hint);
    out.source = source;
  }
  if (opts.revision !== undefined) {
    const revision = opts.revision === 'git' ? await gitRevision(spec.dir) : opts.revision;
    const problem = revisionProblem(revision);
    if (problem) throw usageError(problem.message, '--revision', problem.hint);
    out.revision = revision;
  }
  return out;
}

/**
 * Each platform's locked packages. Locks that are fresh are used as they are; the
 * others are resolved (all in one `lock` run) unless --locked, which fails instead.
 */
async function lockEntries(spec: ImageSpec, platforms: Platform[], opts: BuildOptions, bases: Array<BaseImage | undefined>): Promise<LockEntry[][]> {
  checkLockfilePaths(spec, platforms);
  const statusOf = (platform: Platform): { text: string; where: string } | undefined => bases[platforms.findIndex((p) => samePlatform(p, platform))]?.dpkgStatus;
  const read = async (platform: Platform): Promise<{ file: string; text?: string; fresh: boolean; stale?: string }> => {
    const file = lockfilePath(spec, platform);
    const inputs = lockInputs(spec, platform, statusOf(platform));
    const digest = inputsDigest(inputs);
    const text = await readFile(file, 'utf8').catch(() => undefined);
    if (text === undefined) return { file, fresh: false };
    const lock = parseLockfile(text, file);
    return lock.inputsDigest === digest ? { file, text, fresh: true } : { file, text, fresh: false, stale: staleReason(lock, inputs) };
  };
  let states = await Promise.all(platforms.map(read));
  const stale = platforms.filter((_, i) => !states[i]!.fresh);
  if (stale.length > 0) {
    if (opts.locked) {
      const i = states.findIndex((s) => !s.fresh);
      const first = states[i]!;
      const which = platforms.length > 1 ? ` for ${formatPlatform(platforms[i]!)}` : '';
      const others = stale.length > 1 ? ` (also missing or stale: ${stale.slice(1).map(formatPlatform).join(', ')})` : '';
      throw new OcibuildError(first.text === undefined ? `no lockfile${which}` : `the lockfile${which} is stale: ${first.stale ?? "the spec's apt inputs changed"}`, {
        where: first.file,
        hint: `run ocibuild lock and commit the lockfile${stale.length > 1 ? 's' : ''}, or build without --locked${others}`,
      });
    }
    await lockImage(spec, {
      store: opts.store,
      platforms: stale,
      ...(spec.from !== 'scratch' ? { baseStatusFor: async (p: Platform) => statusOf(p) } : {}),
      insecureNoVerify: opts.insecureNoVerify ?? false,
      ignoreValidUntil: opts.ignoreValidUntil ?? false,
      ...(opts.log ? { log: opts.log } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    states = await Promise.all(platforms.map(read));
  }
  return states.map((s) => parseLockfile(s.text!, s.file).entries);
}

function envEpoch(): number | undefined {
  const v = process.env.SOURCE_DATE_EPOCH;
  if (v === undefined || v === '') return undefined;
  if (!/^\d+$/.test(v)) {
    throw new OcibuildError(`SOURCE_DATE_EPOCH must be whole seconds since 1970, not ${JSON.stringify(v)}`, { exitCode: EXIT_USAGE });
  }
  return Number(v);
}

async function atomicWrite(file: string, text: string): Promise<void> {
  try {
    await writeFileAtomic(file, text, tempName(path.dirname(file)));
  } catch (err) {
    throw new OcibuildError(`cannot write ${file}: ${(err as Error).message}`, { where: file });
  }
}
