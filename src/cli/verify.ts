/** `ocibuild verify`: arguments in, the comparison table and differences out (exit 1 on a mismatch). */
import type { Compression } from '../build/build.js';
import { verifySpec, type VerifyResult } from '../build/verify.js';
import { OcibuildError, usageError } from '../errors.js';
import { loadSpec } from '../spec/parse.js';
import { baseReference } from '../build/base.js';
import { parseReference } from '../registry/reference.js';
import { parseAnnotations, parsePlatformList } from './build.js';
import { cliLog, parseSandboxOption, storeAt } from './common.js';
import { registryOptions, type RegistryCliOptions } from './registry.js';
import { formatDifferences, formatTable } from './verify-report.js';

export interface VerifyCliOptions extends RegistryCliOptions {
  file: string;
  against?: string;
  platform?: string;
  compression?: string;
  sourceDateEpoch?: string;
  mergedUsr: boolean;
  sandbox?: string;
  annotation?: string[];
  source?: string;
  revision?: string;
  cacheDir?: string;
  quiet?: boolean;
  signal?: AbortSignal;
}

export async function verifyCommand(opts: VerifyCliOptions): Promise<void> {
  if (opts.compression !== undefined && opts.compression !== 'gzip' && opts.compression !== 'zstd') {
    throw usageError(`--compression must be gzip or zstd, not ${JSON.stringify(opts.compression)}`);
  }
  let sde: number | undefined;
  if (opts.sourceDateEpoch !== undefined) {
    if (!/^\d+$/.test(opts.sourceDateEpoch)) throw usageError(`--source-date-epoch takes whole seconds since 1970, not ${JSON.stringify(opts.sourceDateEpoch)}`);
    sde = Number(opts.sourceDateEpoch);
  }
  const sandbox = parseSandboxOption(opts.sandbox);
  if (opts.against !== undefined && opts.against.trim() === '') throw usageError('--against is empty', '--against', 'give oci:DIR[:TAG] or a registry reference');
  const platforms = opts.platform !== undefined ? parsePlatformList(opts.platform) : undefined;
  const annotations = parseAnnotations(opts.annotation ?? [], opts);
  const spec = await loadSpec(opts.file);
  // --username is for the image compared with, when that is a registry's; else the base's.
  const against = opts.against !== undefined && !/^(oci|oci-archive|docker-archive|docker-daemon|dir|docker):/.test(opts.against) ? parseReference(opts.against, '--against') : undefined;
  const base = baseReference(spec);
  const registry = await registryOptions(opts, against ? [against] : base ? [base] : []);
  const store = storeAt(opts.cacheDir);
  const { progress, log } = cliLog(opts.quiet);
  let result: VerifyResult;
  try {
    result = await verifySpec(spec, {
      store,
      ...(opts.against !== undefined ? { against: opts.against } : {}),
      ...(platforms ? { platforms } : {}),
      registry,
      ...(opts.compression !== undefined ? { compression: opts.compression as Compression } : {}),
      ...(sde !== undefined ? { sourceDateEpoch: sde } : {}),
      mergedUsr: opts.mergedUsr,
      ...(sandbox !== undefined ? { sandbox } : {}),
      annotations,
      ...(opts.source !== undefined ? { source: opts.source } : {}),
      ...(opts.revision !== undefined ? { revision: opts.revision } : {}),
      log,
      progress,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
  } finally {
    progress.done();
  }
  if (result.match) {
    if (!opts.quiet) process.stdout.write(`${formatTable(result)}reproducible: ${result.top.a.digest}\n`);
    return;
  }
  // The table and the differences are the result, on stdout; the verdict is the error.
  process.stdout.write(`${formatTable(result)}\n${formatDifferences(result)}`);
  throw new OcibuildError(`not reproducible: ${result.labels.a} is ${result.top.a.digest}, ${result.labels.b} is ${result.top.b.digest}`, {
    where: opts.against ?? opts.file,
    hint: mismatchHint(result),
  });
}

/** What to look at first, from the kind of difference found. */
function mismatchHint(r: VerifyResult): string {
  const comparisons = r.platforms.flatMap((p) => (p.comparison ? [p.comparison] : []));
  const sameFiles = comparisons.length > 0 && r.shape === undefined && comparisons.every((c) => c.layers.every((l) => l.diffIdMatch) && c.config.match);
  if (sameFiles && comparisons.every((c) => c.layers.every((l) => l.digestMatch))) {
    return 'the layers and configs are identical: only the manifest (or index) differs, in the members named above, e.g. an annotation such as base.name, source or revision';
  }
  if (sameFiles) return 'the layers hold the same files: only their compression differs (use the same tool and level, or compare diffIds)';
  const created = comparisons.some((c) => c.config.diff?.differences.some((d) => d.path === 'created'));
  if (created) return 'the dates differ: give verify the --source-date-epoch (or $SOURCE_DATE_EPOCH) the reference was built with';
  const differing = comparisons.flatMap((c) => c.layers.filter((l) => !l.diffIdMatch));
  if (differing.length > 0 && differing.every((l) => l.createdBy.startsWith('ocibuild apt install (dpkg)'))) {
    return 'the differences above name the files; in a dpkg layer, maintainer scripts that generate keys or certificates (ssh host keys, ssl-cert snakeoil, a Java keystore) are the usual cause: remove or regenerate them in a RUN line';
  }
  return 'the differences above name the layer and the files; a RUN step writing dates, random data or downloads is the usual cause';
}
