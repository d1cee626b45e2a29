import path from 'node:path';
import { usageError } from '../errors.js';
import { loadSpec } from '../spec/parse.js';
import { parsePlatform } from '../spec/platform.js';
import { Store } from '../store/store.js';
import { buildFromSpec, type Compression } from '../build/build.js';
import { createProgress } from './progress.js';
import { inspectImage } from '../oci/inspect.js';

export interface BuildCliOptions {
  file: string;
  output: string;
  platform?: string;
  locked?: boolean;
  compression: string;
  sourceDateEpoch?: string;
  mergedUsr: boolean;
  digestFile?: string;
  cacheDir?: string;
  insecureNoVerify?: boolean;
  ignoreValidUntil?: boolean;
  quiet?: boolean;
  signal?: AbortSignal;
}

export async function buildCommand(opts: BuildCliOptions): Promise<void> {
  if (opts.compression !== 'gzip' && opts.compression !== 'zstd') {
    throw usageError(`--compression must be gzip or zstd, not ${JSON.stringify(opts.compression)}`);
  }
  let sde: number | undefined;
  if (opts.sourceDateEpoch !== undefined) {
    if (!/^\d+$/.test(opts.sourceDateEpoch)) throw usageError(`--source-date-epoch takes whole seconds since 1970, not ${JSON.stringify(opts.sourceDateEpoch)}`);
    sde = Number(opts.sourceDateEpoch);
  }
  const spec = await loadSpec(opts.file);
  const store = new Store(opts.cacheDir ? path.resolve(opts.cacheDir) : Store.defaultRoot());
  const progress = createProgress({ stream: process.stderr, quiet: Boolean(opts.quiet) });
  const log = (line: string): void => {
    if (!opts.quiet || /^warning|^WARNING/.test(line)) progress.line(line);
  };
  if (opts.insecureNoVerify) log('WARNING: --insecure-no-verify: repository signatures are NOT checked');
  try {
    const result = await buildFromSpec(spec, {
      store,
      output: opts.output,
      locked: Boolean(opts.locked),
      compression: opts.compression as Compression,
      ...(sde !== undefined ? { sourceDateEpoch: sde } : {}),
      mergedUsr: opts.mergedUsr,
      ...(opts.digestFile ? { digestFile: path.resolve(opts.digestFile) } : {}),
      ...(opts.platform ? { platform: parsePlatform(opts.platform, '--platform') } : {}),
      insecureNoVerify: Boolean(opts.insecureNoVerify),
      ignoreValidUntil: Boolean(opts.ignoreValidUntil),
      log,
      onProgress: (ev) => progress.download(ev),
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    progress.done();
    process.stdout.write(`${result.manifestDigest}\n`);
  } finally {
    progress.done();
  }
}

export async function inspectCommand(image: string): Promise<void> {
  process.stdout.write(await inspectImage(image));
}
