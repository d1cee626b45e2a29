import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { OcibuildError, usageError } from '../errors.js';
import { loadSpec } from '../spec/parse.js';
import { parsePlatform } from '../spec/platform.js';
import { Store } from '../store/store.js';
import { lockImage } from '../build/lock.js';

export interface LockCliOptions {
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
  const store = new Store(opts.cacheDir ? path.resolve(opts.cacheDir) : Store.defaultRoot());
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
  await lockImage(spec, {
    store,
    ...(platforms ? { platforms } : {}),
    check: Boolean(opts.check || opts.locked),
    insecureNoVerify: Boolean(opts.insecureNoVerify),
    ignoreValidUntil: Boolean(opts.ignoreValidUntil),
    ...(baseStatus ? { baseStatus } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
    log,
  });
}
