/**
 * `ocibuild build`: spec + lockfile → .debs in the store → apt layer and files layer
 * (deterministic tarballs) → OCI config and manifest → the requested output.
 *
 * Every layer is cached in the store under a key made of everything that decides
 * its bytes (the locked .debs' digests, options, SOURCE_DATE_EPOCH, compression), so
 * an unchanged rebuild only hashes its inputs.
 */
import { createHash } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tempName, writeFileAtomic } from '../store/atomic.js';
import { pipeline } from 'node:stream/promises';
import { createReadStream } from 'node:fs';
import path from 'node:path';
import { OcibuildError, EXIT_USAGE } from '../errors.js';
import type { ImageSpec, Platform } from '../spec/types.js';
import { debianArch, formatPlatform } from '../spec/platform.js';
import type { Store } from '../store/store.js';
import { parseLockfile, inputsDigest, type LockEntry } from '../apt/lockfile.js';
import { fetchDebs, type ProgressEvent } from '../store/fetch-debs.js';
import { writeLayer } from '../layer/write-layer.js';
import type { LayerEntry } from '../layer/entry.js';
import { buildImage, storeLayer, rfc3339Seconds, type Layer } from '../oci/image.js';
import { parseOutput, writeOutput } from '../oci/output.js';
import { buildAptLayerTree } from './apt-layer.js';
import { lockImage, lockfilePath, lockInputs } from './lock.js';
import { VERSION } from '../version.js';

export type Compression = 'gzip' | 'zstd';

export interface BuildOptions {
  store: Store;
  /** oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REF] */
  output: string;
  /** Fail instead of updating a missing or stale lockfile. */
  locked?: boolean;
  compression?: Compression;
  /** Seconds; default: $SOURCE_DATE_EPOCH, else the newest file date in the locked packages. */
  sourceDateEpoch?: number;
  /** Link bin, sbin, lib* into usr/ as debootstrap does (default true). */
  mergedUsr?: boolean;
  digestFile?: string;
  platform?: Platform;
  insecureNoVerify?: boolean;
  ignoreValidUntil?: boolean;
  log?: (line: string) => void;
  onProgress?: (ev: ProgressEvent) => void;
  signal?: AbortSignal;
}

export interface BuildResult {
  manifestDigest: string;
  configDigest: string;
  layers: Array<{ digest: string; size: number; createdBy: string }>;
}

export async function buildFromSpec(spec: ImageSpec, opts: BuildOptions): Promise<BuildResult> {
  const log = opts.log ?? (() => {});
  const output = parseOutput(opts.output);
  checkSupported(spec);
  const platform = opts.platform ?? pickPlatform(spec);
  const arch = debianArch(platform);
  const compression = opts.compression ?? 'gzip';

  // The lock: used as it is when fresh; created or updated unless --locked.
  const entries = spec.apt && spec.apt.packages.length > 0 ? await lockEntries(spec, platform, opts) : [];

  // Scratch space next to the store's blobs (same filesystem), removed at the end.
  await mkdir(path.join(opts.store.root, 'tmp'), { recursive: true });
  const workDir = await mkdtemp(path.join(opts.store.root, 'tmp', 'build-'));
  try {
    const layers: Layer[] = [];
    let sde = opts.sourceDateEpoch ?? envEpoch();

    if (entries.length > 0) {
      const debs = await fetchDebs(entries, {
        store: opts.store,
        ...(opts.signal ? { signal: opts.signal } : {}),
        ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
      });
      const mergedUsr = opts.mergedUsr ?? true;
      const names = entries.map((e) => e.package);
      const createdBy = `ocibuild apt install (unpack): ${spec.apt!.packages.map((p) => p.name).join(' ')} (${entries.length} packages)`;
      const key = stepKey('apt-unpack-v1', { debs: entries.map((e) => e.sha256), arch, mergedUsr, compression, sde: sde ?? null, version: VERSION });
      let layer = await cachedLayer(opts.store, key, createdBy);
      if (!layer) {
        log(`unpacking ${names.length} packages into the apt layer`);
        const tree = await buildAptLayerTree({
          debs: entries.map((e) => ({ package: e.package, version: e.version, path: debs.get(e.package)!.path })),
          arch,
          mergedUsr,
          workDir: path.join(workDir, 'apt'),
          ...(opts.signal ? { signal: opts.signal } : {}),
        });
        sde ??= tree.newestMtime;
        layer = await writeAndCache(opts.store, key, tree.entries, compression, sde, createdBy, opts.signal);
      } else if (sde === undefined) {
        sde = layer.sde;
      }
      layers.push(layer.layer);
    }
    sde ??= 0;

    if (spec.files.length > 0) {
      const filesEntries = await filesLayerEntries(spec, sde);
      const createdBy = `ocibuild files: ${spec.files.map((f) => f.dest).join(' ')}`;
      const key = stepKey('files-v1', { files: await Promise.all(spec.files.map(fileIdentity)), compression, sde, version: VERSION });
      const layer = (await cachedLayer(opts.store, key, createdBy)) ?? (await writeAndCache(opts.store, key, filesEntries, compression, sde, createdBy, opts.signal));
      layers.push(layer.layer);
    }

    const created = new Date(sde * 1000);
    const env = Object.entries(spec.config.env).map(([k, v]) => `${k}=${v}`);
    const image = buildImage(
      {
        architecture: platform.architecture,
        os: platform.os,
        ...(platform.variant ? { variant: platform.variant } : {}),
        created,
        env,
        ...(spec.config.entrypoint ? { entrypoint: spec.config.entrypoint } : {}),
        ...(spec.config.cmd ? { cmd: spec.config.cmd } : {}),
        ...(spec.config.workdir ? { workingDir: spec.config.workdir } : {}),
        ...(spec.config.user ? { user: spec.config.user } : {}),
        labels: spec.config.labels,
        exposedPorts: spec.config.expose,
      },
      layers,
      { 'org.opencontainers.image.created': rfc3339Seconds(created) },
    );
    await writeOutput(output, image, { store: opts.store, ...(opts.signal ? { signal: opts.signal } : {}) });
    if (opts.digestFile) await atomicWrite(opts.digestFile, `${image.manifest.descriptor.digest}\n`);
    log(`wrote ${opts.output}: ${image.manifest.descriptor.digest}`);
    return {
      manifestDigest: image.manifest.descriptor.digest,
      configDigest: image.config.descriptor.digest,
      layers: layers.map((l) => ({ digest: l.digest, size: l.size, createdBy: l.history?.createdBy ?? '' })),
    };
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

function checkSupported(spec: ImageSpec): void {
  if (spec.from !== 'scratch') {
    throw new OcibuildError(`base images from a registry (from: ${spec.from}) are not supported by this version`, {
      where: spec.path,
      hint: 'use from: scratch with debian_version/ubuntu_version or apt.sources (pulling base images comes with registry support)',
    });
  }
  if (spec.apt && spec.apt.packages.length > 0 && spec.apt.install !== 'unpack') {
    throw new OcibuildError('install: dpkg runs maintainer scripts in a sandbox, which this version cannot do yet', {
      where: spec.path,
      hint: 'use install: unpack (files and the dpkg database, no maintainer scripts)',
    });
  }
  if (spec.run.length > 0) {
    throw new OcibuildError('run: needs a sandbox (bubblewrap or systemd-nspawn), which this version cannot drive yet', {
      where: spec.path,
      hint: 'remove the run: lines for now',
    });
  }
}

function pickPlatform(spec: ImageSpec): Platform {
  if (spec.platforms.length !== 1) {
    throw new OcibuildError(`the spec lists ${spec.platforms.length} platforms; build one at a time`, {
      where: spec.path,
      hint: `pass --platform ${spec.platforms.map(formatPlatform).join(' or --platform ')}`,
      exitCode: EXIT_USAGE,
    });
  }
  return spec.platforms[0]!;
}

async function lockEntries(spec: ImageSpec, platform: Platform, opts: BuildOptions): Promise<LockEntry[]> {
  const file = lockfilePath(spec, platform);
  const digest = inputsDigest(lockInputs(spec, platform));
  let text: string | undefined;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    text = undefined;
  }
  const fresh = text !== undefined && parseLockfile(text, file).inputsDigest === digest;
  if (!fresh) {
    if (opts.locked) {
      throw new OcibuildError(text === undefined ? 'no lockfile' : 'the lockfile is stale: the spec\'s apt inputs changed', {
        where: file,
        hint: 'run ocibuild lock and commit the lockfile, or build without --locked',
      });
    }
    await lockImage(spec, {
      store: opts.store,
      platforms: [platform],
      insecureNoVerify: opts.insecureNoVerify ?? false,
      ignoreValidUntil: opts.ignoreValidUntil ?? false,
      ...(opts.log ? { log: opts.log } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    text = await readFile(file, 'utf8');
  }
  return parseLockfile(text!, file).entries;
}

function envEpoch(): number | undefined {
  const v = process.env.SOURCE_DATE_EPOCH;
  if (v === undefined || v === '') return undefined;
  if (!/^\d+$/.test(v)) {
    throw new OcibuildError(`SOURCE_DATE_EPOCH must be whole seconds since 1970, not ${JSON.stringify(v)}`, { exitCode: EXIT_USAGE });
  }
  return Number(v);
}

function stepKey(kind: string, inputs: unknown): string {
  return createHash('sha256').update(kind).update('\0').update(JSON.stringify(inputs)).digest('hex');
}

interface CachedLayer {
  layer: Layer;
  sde: number;
}

const LAYER_CACHE = 'layers-v1';

async function cachedLayer(store: Store, key: string, createdBy: string): Promise<CachedLayer | undefined> {
  const data = await store.readCacheFile(LAYER_CACHE, key);
  if (!data) return undefined;
  try {
    const d = JSON.parse(data.toString('utf8')) as { digest: string; diffId: string; size: number; mediaType: string; sde: number };
    if (!(await store.has(d.digest))) return undefined;
    return { layer: storeLayer(store, { ...d, history: { createdBy } }), sde: d.sde };
  } catch {
    return undefined;
  }
}

async function writeAndCache(
  store: Store,
  key: string,
  entries: LayerEntry[],
  compression: Compression,
  sde: number,
  createdBy: string,
  signal?: AbortSignal,
): Promise<CachedLayer> {
  const written = await writeLayer(entries, { store, compression, sourceDateEpoch: sde, ...(signal ? { signal } : {}) });
  await store.writeCacheFile(LAYER_CACHE, key, Buffer.from(JSON.stringify({ ...written, sde })));
  return { layer: storeLayer(store, { ...written, history: { createdBy } }), sde };
}

/**
 * The files layer: each spec file at its destination, parents created root 0755.
 * Every date is SOURCE_DATE_EPOCH: a checkout's file times must not reach the image.
 */
async function filesLayerEntries(spec: ImageSpec, sde: number): Promise<LayerEntry[]> {
  const tree = new Map<string, LayerEntry>();
  for (const f of spec.files) {
    const st = await lstat(f.src).catch((err: NodeJS.ErrnoException) => {
      throw new OcibuildError(`cannot read ${f.src}: ${err.code ?? err.message}`, { where: spec.path, hint: 'paths in files: are relative to the spec file' });
    });
    if (!st.isFile()) {
      throw new OcibuildError(`${f.src} is not a regular file`, { where: spec.path, hint: 'files: takes regular files (directories come later)' });
    }
    const dest = f.dest.replace(/^\/+/, '');
    const src = f.src;
    tree.set(dest, {
      type: 'file',
      path: dest,
      mode: f.mode ?? st.mode & 0o7777,
      uid: f.uid ?? 0,
      gid: f.gid ?? 0,
      mtime: sde,
      size: st.size,
      content: () => createReadStream(src),
    });
    for (let p = path.posix.dirname(dest); p !== '.' && p !== '/'; p = path.posix.dirname(p)) {
      if (!tree.has(p)) tree.set(p, { type: 'directory', path: p, mode: 0o755, uid: 0, gid: 0, mtime: sde });
    }
  }
  return [...tree.values()];
}

/** What decides a files-layer entry's bytes: content hash, destination, mode, owner. */
async function fileIdentity(f: ImageSpec['files'][number]): Promise<unknown> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(f.src), hash).catch(() => undefined);
  const st = await lstat(f.src).catch(() => undefined);
  return { dest: f.dest, sha256: hash.digest('hex'), mode: f.mode ?? (st ? st.mode & 0o7777 : 0), uid: f.uid ?? 0, gid: f.gid ?? 0 };
}

async function atomicWrite(file: string, text: string): Promise<void> {
  try {
    await writeFileAtomic(file, text, tempName(path.dirname(file)));
  } catch (err) {
    throw new OcibuildError(`cannot write ${file}: ${(err as Error).message}`, { where: file });
  }
}
