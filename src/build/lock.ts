/**
 * `ocibuild lock`: spec → package universe → resolution → lockfile, per platform.
 * The lockfile is written atomically, so a failure never leaves a partial one.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { tempName, writeFileAtomic } from '../store/atomic.js';
import path from 'node:path';
import { OcibuildError, EXIT_USAGE } from '../errors.js';
import type { ImageSpec, Platform } from '../spec/types.js';
import { debianArch, formatPlatform } from '../spec/platform.js';
import { sourcesForPlatform } from '../spec/presets.js';
import type { Store } from '../store/store.js';
import { loadUniverse } from '../apt/repository.js';
import { resolve } from '../apt/resolve.js';
import { formatLockfile, inputsDigest, parseLockfile, staleReason, LOCK_FORMAT, type LockEntry, type LockInputs } from '../apt/lockfile.js';
import { parseDpkgStatus } from '../apt/dpkg-status.js';
import type { InstalledPackage } from '../apt/types.js';

export interface LockOptions {
  store: Store;
  /** Platforms to lock; default: the spec's. */
  platforms?: Platform[];
  /** Only check that each lock exists and matches the inputs; never write. */
  check?: boolean;
  insecureNoVerify?: boolean;
  ignoreValidUntil?: boolean;
  /** The base image's var/lib/dpkg/status text, given by the user (--base-status): wins over baseStatusFor. */
  baseStatus?: { text: string; where: string };
  /** The pulled base image's dpkg status for a platform (undefined: the base has no dpkg). */
  baseStatusFor?: (platform: Platform) => Promise<{ text: string; where: string } | undefined>;
  log?: (line: string) => void;
  signal?: AbortSignal;
}

export interface LockResult {
  platform: Platform;
  path: string;
  packages: number;
  /** false when the existing lock already matched (check mode, or unchanged content). */
  written: boolean;
}

/** The lock path for one platform: the spec's template or Packages-<suite>-<arch>.lock next to the spec. */
export function lockfilePath(spec: ImageSpec, platform: Platform): string {
  const arch = debianArch(platform);
  const suite = sourcesForPlatform(spec, platform)[0]?.suites[0] ?? 'none';
  const template = spec.apt?.lockfile ?? path.join(spec.dir, 'Packages-{suite}-{arch}.lock');
  return template.replaceAll('{suite}', suite).replaceAll('{arch}', arch);
}

/**
 * One lockfile per architecture: an apt.lockfile name without {arch} would make the
 * platforms' locks overwrite each other. Platforms of one Debian architecture
 * (linux/amd64 and linux/amd64/v3) share a lock, which is right: same packages.
 */
export function checkLockfilePaths(spec: ImageSpec, platforms: Platform[]): void {
  checkArchQualifiers(spec, platforms);
  const archOf = new Map<string, string>();
  for (const p of platforms) {
    const file = lockfilePath(spec, p);
    const arch = debianArch(p);
    const other = archOf.get(file);
    if (other !== undefined && other !== arch) {
      throw new OcibuildError(`the lockfiles of ${other} and ${arch} would both be ${file}`, {
        where: spec.path,
        hint: 'put {arch} in apt.lockfile, e.g. lockfile: locks/Packages-{suite}-{arch}.lock',
        exitCode: EXIT_USAGE,
      });
    }
    archOf.set(file, arch);
  }
}

/**
 * `name:arch` is accepted for the architecture being locked only: a foreign
 * architecture would need a second package universe, which the resolver does not
 * load, and dropping the qualifier would lock the wrong package without a word.
 */
function checkArchQualifiers(spec: ImageSpec, platforms: Platform[]): void {
  for (const p of spec.apt?.packages ?? []) {
    if (p.arch === undefined || p.arch === 'any' || p.arch === 'native') continue;
    const other = platforms.find((platform) => debianArch(platform) !== p.arch);
    if (other) {
      throw new OcibuildError(`${p.name}:${p.arch} asks for architecture ${p.arch}, but ${formatPlatform(other)} is ${debianArch(other)}; other architectures than the image's are not supported`, {
        where: p.where,
        hint: `write ${p.name} without :${p.arch} (each platform gets its own architecture's package)`,
        exitCode: EXIT_USAGE,
      });
    }
  }
}

/** The normalized inputs of one platform's lock. */
export function lockInputs(spec: ImageSpec, platform: Platform, installed?: { text: string }): LockInputs {
  const apt = spec.apt;
  const inputs: LockInputs = {
    arch: debianArch(platform),
    sources: sourcesForPlatform(spec, platform).map((s) => ({ url: s.url, suites: s.suites, components: s.components })),
    packages: (apt?.packages ?? []).map((p) => (p.version === undefined ? p.name : `${p.name}=${p.version}`)),
    install: apt?.install ?? 'unpack',
    recommends: apt?.recommends ?? false,
    essential: needsEssential(spec),
  };
  if (installed) inputs.installedDigest = 'sha256:' + createHash('sha256').update(installed.text.replace(/\r\n?/g, '\n')).digest('hex');
  return inputs;
}

/** dpkg needs the Essential: yes set; from scratch nothing provides it but the lock (mmdebstrap's essential variant). */
function needsEssential(spec: ImageSpec): boolean {
  return spec.from === 'scratch' && spec.apt?.install === 'dpkg';
}

export async function lockImage(spec: ImageSpec, opts: LockOptions): Promise<LockResult[]> {
  if (!spec.apt) {
    throw new OcibuildError('the spec has no apt section: there is nothing to lock', {
      where: spec.path,
      hint: 'add apt.packages (and apt.sources or debian_version/ubuntu_version)',
    });
  }
  const log = opts.log ?? (() => {});
  const platforms = opts.platforms ?? spec.platforms;
  checkLockfilePaths(spec, platforms);
  if (spec.from !== 'scratch' && !opts.baseStatus && !opts.baseStatusFor) {
    log(`warning: the installed packages of ${spec.from} are not known; resolving as if it had none (pass --base-status FILE with its var/lib/dpkg/status)`);
  }
  const results: LockResult[] = [];
  for (const platform of platforms) {
    const target = lockfilePath(spec, platform);
    const baseStatus = opts.baseStatus ?? (await opts.baseStatusFor?.(platform));
    const inputs = lockInputs(spec, platform, baseStatus);
    const digest = inputsDigest(inputs);
    if (opts.check) {
      results.push(await checkLock(target, digest, inputs, platform));
      continue;
    }
    const arch = inputs.arch;
    const sources = sourcesForPlatform(spec, platform);
    log(`resolving ${inputs.packages.length} package(s) for ${formatPlatform(platform)} from ${sources.map((s) => `${s.url} ${s.suites.join(',')}`).join('; ')}`);
    const universe = await loadUniverse(sources, arch, {
      store: opts.store,
      insecureNoVerify: opts.insecureNoVerify ?? false,
      ignoreValidUntil: opts.ignoreValidUntil ?? false,
      ...(opts.signal ? { signal: opts.signal } : {}),
      log,
    });
    const installed: InstalledPackage[] = baseStatus ? parseDpkgStatus(baseStatus.text, baseStatus.where, arch) : [];
    const resolution = resolve({
      universe,
      packages: spec.apt.packages.map((p) => ({ name: p.name, ...(p.version !== undefined ? { version: p.version } : {}), where: p.where })),
      installed,
      recommends: inputs.recommends,
      essential: inputs.essential,
    });
    const entries: LockEntry[] = resolution.packages.map(({ record, reasons }) => {
      const origin = universe.origins[record.origin]!;
      const e: LockEntry = {
        package: record.package,
        version: record.version,
        architecture: record.architecture,
        filename: record.filename,
        size: record.size,
        sha256: record.sha256,
        url: origin.url,
        suite: origin.suite,
        component: origin.component,
        requiredBy: reasons,
      };
      if (record.multiArch !== 'no') e.multiArch = record.multiArch;
      if (record.essential) e.essential = true;
      if (record.source) e.source = record.source;
      return e;
    });
    const text = formatLockfile({ format: LOCK_FORMAT, inputsDigest: digest, arch, entries, requested: inputs.packages }, inputs);
    const written = await writeIfChanged(target, text);
    log(`${written ? 'wrote' : 'unchanged'} ${path.relative(process.cwd(), target) || target}: ${entries.length} package(s)`);
    results.push({ platform, path: target, packages: entries.length, written });
  }
  return results;
}

async function checkLock(target: string, digest: string, inputs: LockInputs, platform: Platform): Promise<LockResult> {
  let text: string;
  try {
    text = await readFile(target, 'utf8');
  } catch {
    throw new OcibuildError(`no lockfile for ${formatPlatform(platform)}`, { where: target, hint: 'run ocibuild lock to create it' });
  }
  const lock = parseLockfile(text, target);
  if (lock.inputsDigest !== digest) {
    throw new OcibuildError(`the lockfile is stale: ${staleReason(lock, inputs)}`, {
      where: target,
      hint: 'run ocibuild lock to update it and commit the result',
    });
  }
  return { platform, path: target, packages: lock.entries.length, written: false };
}

/** Atomic replace (temp file + rename); an identical file is left untouched. */
async function writeIfChanged(target: string, text: string): Promise<boolean> {
  try {
    if ((await readFile(target, 'utf8')) === text) return false;
  } catch {
    // no previous lock
  }
  try {
    // A lockfile: path of the spec may name a directory not made yet (locks/…).
    await mkdir(path.dirname(target), { recursive: true });
    await writeFileAtomic(target, text, tempName(path.dirname(target)));
  } catch (err) {
    throw new OcibuildError(`cannot write the lockfile: ${(err as Error).message}`, {
      where: target,
      hint: 'check that the directory exists and is writable',
    });
  }
  return true;
}
