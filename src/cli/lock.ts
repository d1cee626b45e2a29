import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { OcibuildError, usageError } from '../errors.js';
import { loadSpec } from '../spec/parse.js';
import { parsePlatform } from '../spec/platform.js';
import { storeAt } from './common.js';
import { lockImage } from '../build/lock.js';
import { BaseImages, baseReference } from '../build/base.js';
import type { Platform } from '../spec/types.js';
import { registryOptions, type RegistryCliOptions } from './registry.js';

export interface LockCliOptions extends RegistryCliOptions {
  file: string;
  platform?: string;
  check?: boolean;
  locked?: boolean;
  cacheDir?: string;
  insecureNoVerify?: boolean;
  ignoreValidUntil?: boolean;
  baseStatus?: string;
  quiet?: boolean;
  signal?: AbortSignal;
}

export async function lockCommand(opts: LockCliOptions): Promise<void> {
  const spec = await loadSpec(opts.file);
  const platforms = opts.platform
    ? opts.platform.split(',').map((p) => parsePlatform(p.trim(), '--platform'))
    : undefined;
  if (platforms && platforms.length === 0) throw usageError('--platform needs at least one platform, e.g. linux/amd64');
  const store = storeAt(opts.cacheDir);
  let baseStatus: { text: string; where: string } | undefined;
  if (opts.baseStatus) {
    const where = path.resolve(opts.baseStatus);
    try {
      baseStatus = { text: await readFile(where, 'utf8'), where };
    } catch (err) {
      throw new OcibuildError(`cannot read the base status file: ${(err as Error).message}`, { where, exitCode: 2 });
    }
  }
  const log = (line: string): void => {
    // Warnings always reach the user; progress lines only without --quiet.
    if (!opts.quiet || /^warning|^WARNING/.test(line)) process.stderr.write(`${line}\n`);
  };
  if (opts.insecureNoVerify) {
    log('WARNING: --insecure-no-verify: repository signatures are NOT checked; anyone on the network path can change what gets locked');
  }
  // From a registry base, its dpkg status is read from its layers (unless --base-status gives one);
  // --check needs it too: it is an input of the lock.
  let baseStatusFor: ((p: Platform) => Promise<{ text: string; where: string } | undefined>) | undefined;
  const ref = baseReference(spec);
  if (ref && !baseStatus) {
    const bases = new BaseImages(ref, { store, registry: await registryOptions(opts, [ref]), log, ...(opts.signal ? { signal: opts.signal } : {}) });
    baseStatusFor = async (p) => (await bases.get(p)).dpkgStatus;
  }
  await lockImage(spec, {
    store,
    ...(baseStatusFor ? { baseStatusFor } : {}),
    ...(platforms ? { platforms } : {}),
    check: Boolean(opts.check || opts.locked),
    insecureNoVerify: Boolean(opts.insecureNoVerify),
    ignoreValidUntil: Boolean(opts.ignoreValidUntil),
    ...(baseStatus ? { baseStatus } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
    log,
  });
}
