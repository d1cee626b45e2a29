import path from 'node:path';
import { usageError } from '../errors.js';
import { loadSpec } from '../spec/parse.js';
import { formatPlatform, parsePlatform, samePlatform } from '../spec/platform.js';
import { annotationProblem, REVISION_KEY, SOURCE_KEY } from '../spec/annotations.js';
import type { Platform } from '../spec/types.js';
import type { OutputHandler } from '../sandbox/process.js';
import { buildFromSpec, type Compression } from '../build/build.js';
import { baseReference } from '../build/base.js';
import { cliLog, parseSandboxOption, storeAt } from './common.js';
import type { Progress } from './progress.js';
import { depfileTarget } from '../build/depfile.js';
import { parseOutput } from '../oci/output.js';
import { parsePushReferences, registryOptions, writePushFiles, type RegistryCliOptions } from './registry.js';
import { inspectImage } from '../oci/inspect.js';

export interface BuildCliOptions extends RegistryCliOptions {
  file: string;
  output?: string;
  push?: string[];
  metadataFile?: string;
  platform?: string;
  locked?: boolean;
  compression: string;
  sourceDateEpoch?: string;
  mergedUsr: boolean;
  sandbox?: string;
  digestFile?: string;
  depfile?: string;
  annotation?: string[];
  source?: string;
  revision?: string;
  cacheDir?: string;
  /** false with --no-cache (commander's negated option). */
  cache?: boolean;
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
  const platforms = opts.platform !== undefined ? parsePlatformList(opts.platform) : undefined;
  const annotations = parseAnnotations(opts.annotation ?? [], opts);
  const push = opts.push && opts.push.length > 0 ? parsePushReferences(opts.push, '--push') : undefined;
  if (opts.output === undefined && !push) throw usageError('give --output DEST and/or --push REF', undefined, 'e.g. --output oci:out:latest or --push registry.example.com/team/app:1.0');
  if (opts.metadataFile && !push) throw usageError('--metadata-file describes a push; give --push REF too');
  const sandbox = parseSandboxOption(opts.sandbox);
  const spec = await loadSpec(opts.file);
  const base = baseReference(spec);
  const registry = await registryOptions(opts, push ?? (base ? [base] : []));
  const store = storeAt(opts.cacheDir);
  const { progress, log } = cliLog(opts.quiet);
  const stepOutput = stepOutputPrinter((line) => progress.line(`  | ${line}`));
  if (opts.insecureNoVerify) log('WARNING: --insecure-no-verify: repository signatures are NOT checked');
  try {
    const result = await buildFromSpec(spec, {
      store,
      ...(opts.output !== undefined ? { output: opts.output } : {}),
      ...(push ? { push } : {}),
      registry,
      locked: Boolean(opts.locked),
      compression: opts.compression as Compression,
      ...(sde !== undefined ? { sourceDateEpoch: sde } : {}),
      mergedUsr: opts.mergedUsr,
      ...(sandbox !== undefined ? { sandbox } : {}),
      ...(opts.quiet ? {} : { onStepOutput: stepOutput.onOutput }),
      ...(opts.digestFile ? { digestFile: path.resolve(opts.digestFile) } : {}),
      ...(opts.depfile ? { depfile: path.resolve(opts.depfile) } : {}),
      ...(opts.depfile ? depfileTargetOption(opts) : {}),
      ...(platforms ? { platforms } : {}),
      annotations,
      ...(opts.source !== undefined ? { source: opts.source } : {}),
      ...(opts.revision !== undefined ? { revision: opts.revision } : {}),
      insecureNoVerify: Boolean(opts.insecureNoVerify),
      ignoreValidUntil: Boolean(opts.ignoreValidUntil),
      ...(opts.cache === false ? { noCache: true } : {}),
      log: (line) => {
        stepOutput.flush();
        log(line);
      },
      progress: flushingFirst(progress, stepOutput.flush),
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    progress.done();
    if (result.pushed) {
      const target = 'images' in result.artifact ? { images: result.artifact.images, index: result.artifact.index } : { images: [result.artifact] };
      await writePushFiles(target, result.pushed, opts.metadataFile ? { metadataFile: opts.metadataFile } : {});
    }
    process.stdout.write(`${result.digest}\n`);
  } finally {
    progress.done();
  }
}

/** A sandboxed step's output as whole lines (stdout and stderr each buffered to its newline). */
function stepOutputPrinter(print: (line: string) => void): { onOutput: OutputHandler; flush: () => void } {
  const pending = { stdout: '', stderr: '' };
  const onOutput: OutputHandler = (chunk, stream) => {
    const text = pending[stream] + chunk.toString('utf8');
    const lines = text.split('\n');
    pending[stream] = lines.pop() ?? '';
    // A runaway line without newlines is printed in pieces rather than held forever.
    if (pending[stream].length > 4096) {
      lines.push(pending[stream]);
      pending[stream] = '';
    }
    for (const l of lines) print(l.replace(/\r$/, ''));
  };
  // A last line without a newline is printed when the build says something next.
  const flush = (): void => {
    for (const stream of ['stdout', 'stderr'] as const) {
      if (pending[stream] !== '') print(pending[stream]);
      pending[stream] = '';
    }
  };
  return { onOutput, flush };
}

/** The progress display with the step output's last line printed before a new phase starts. */
function flushingFirst(progress: Progress, flush: () => void): Progress {
  const wrapped = Object.create(progress) as Progress;
  wrapped.phase = (label, totalBytes) => {
    flush();
    progress.phase(label, totalBytes);
  };
  return wrapped;
}

/** The depfile's target as written on the command line: --digest-file, else the output. */
function depfileTargetOption(opts: BuildCliOptions): { depfileTarget?: string } {
  const target = depfileTarget(opts.output !== undefined ? parseOutput(opts.output) : undefined, opts.digestFile);
  return target !== undefined ? { depfileTarget: target } : {};
}

/** `linux/amd64,linux/arm64` → platforms, each once. */
export function parsePlatformList(list: string): Platform[] {
  const hint = 'write one or more platforms separated by commas, e.g. --platform linux/amd64,linux/arm64';
  const out: Platform[] = [];
  for (const item of list.split(',')) {
    if (item.trim() === '') throw usageError(`${JSON.stringify(list)} has an empty item`, '--platform', hint);
    const p = parsePlatform(item.trim(), '--platform');
    if (out.some((q) => samePlatform(p, q))) throw usageError(`${formatPlatform(p)} is listed twice`, '--platform', 'name each platform once');
    out.push(p);
  }
  return out;
}

/** `--annotation KEY=VALUE` options → a map; each key once, and not the one --source/--revision set. */
export function parseAnnotations(items: string[], opts: { source?: string; revision?: string } = {}): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq <= 0) {
      throw usageError(`${JSON.stringify(item)} is not KEY=VALUE`, '--annotation', 'e.g. --annotation com.example.team=platform');
    }
    const key = item.slice(0, eq);
    const value = item.slice(eq + 1);
    if (Object.hasOwn(out, key)) throw usageError(`${key} is given twice`, '--annotation', 'give each key once');
    const problem = annotationProblem(key, value);
    if (problem) throw usageError(problem.message, `--annotation ${item}`, problem.hint);
    for (const [k, option, given] of [[SOURCE_KEY, '--source', opts.source], [REVISION_KEY, '--revision', opts.revision]] as const) {
      if (key === k && given !== undefined) throw usageError(`${k} is given by both --annotation and ${option}`, '--annotation', `keep one of them (${option} also takes "git")`);
    }
    out[key] = value;
  }
  return out;
}

export async function inspectCommand(image: string): Promise<void> {
  process.stdout.write(await inspectImage(image));
}
