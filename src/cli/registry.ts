/**
 * `ocibuild pull` and `ocibuild push`, and the registry options every command that
 * talks to a registry shares (insecure hosts, credentials from the command line).
 */
import path from 'node:path';
import { text } from 'node:stream/consumers';
import { OcibuildError, usageError } from '../errors.js';
import { parseLayoutRef } from '../oci/inspect.js';
import { parseOutput, writeOutput } from '../oci/output.js';
import { readLayoutImage } from '../oci/read-layout.js';
import type { Credential } from '../registry/credentials.js';
import { pullImage } from '../registry/pull.js';
import { pushImage, pushMetadata, type PushResult, type PushTarget } from '../registry/push.js';
import { parseReference, type ImageReference } from '../registry/reference.js';
import type { TransportOptions } from '../registry/transport.js';
import { parsePlatform } from '../spec/platform.js';
import { tempName, writeFileAtomic } from '../store/atomic.js';
import { Store } from '../store/store.js';
import { createProgress } from './progress.js';

export interface RegistryCliOptions {
  insecureRegistry?: string[];
  username?: string;
  passwordStdin?: boolean;
  quiet?: boolean;
  signal?: AbortSignal;
}

/** Transport options from the CLI flags and $OCIBUILD_INSECURE_REGISTRIES (comma separated). */
export async function registryOptions(opts: RegistryCliOptions, env: NodeJS.ProcessEnv = process.env): Promise<TransportOptions> {
  const insecure = [...(opts.insecureRegistry ?? []), ...(env.OCIBUILD_INSECURE_REGISTRIES ?? '').split(',')]
    .map((h) => h.trim())
    .filter((h) => h !== '');
  let credential: Credential | undefined;
  if (opts.passwordStdin && !opts.username) throw usageError('--password-stdin needs --username');
  if (opts.username !== undefined) {
    if (!opts.passwordStdin) throw usageError('--username needs --password-stdin (a password on the command line would show in ps and shell history)');
    const password = (await text(process.stdin)).replace(/\r?\n$/, '');
    if (password === '') throw usageError('--password-stdin: standard input was empty');
    credential = { kind: 'basic', username: opts.username, password };
  }
  return {
    insecureRegistries: insecure,
    ...(credential ? { credential } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
  };
}

/** `--push a,b` / several `--push`: references, each checked. */
export function parsePushReferences(values: readonly string[], flag: string): ImageReference[] {
  const refs = values.flatMap((v) => v.split(',')).map((v) => v.trim());
  if (refs.some((r) => r === '')) throw usageError(`${flag} has an empty reference`, flag, 'e.g. --push registry.example.com/team/app:1.0');
  return refs.map((r) => parseReference(r, flag));
}

export interface PullCliOptions extends RegistryCliOptions {
  output: string;
  platform?: string;
  cacheDir?: string;
  digestFile?: string;
}

export async function pullCommand(reference: string, opts: PullCliOptions): Promise<void> {
  const ref = parseReference(reference, 'pull');
  const out = parseOutput(opts.output);
  const platform = parsePlatform(opts.platform ?? `linux/${hostArch()}`, '--platform');
  const store = new Store(opts.cacheDir ? path.resolve(opts.cacheDir) : Store.defaultRoot());
  const progress = createProgress({ stream: process.stderr, quiet: Boolean(opts.quiet) });
  const say = quietable(progress, opts.quiet);
  try {
    const transport = await registryOptions(opts);
    const image = await pullImage(ref, {
      ...transport,
      store,
      platform,
      log: (line) => say(line),
      onLayer: (done, total) => say(`pulled layer ${done}/${total}`),
    });
    await writeOutput(out, image, { store, ...(ref.tag ? { tag: ref.tag } : {}), ...(opts.signal ? { signal: opts.signal } : {}) });
    if (opts.digestFile) await writeSmallFile(opts.digestFile, `${image.digest}\n`);
    process.stdout.write(`${image.digest}\n`);
  } finally {
    progress.done();
  }
}

export interface PushCliOptions extends RegistryCliOptions {
  digestFile?: string;
  metadataFile?: string;
}

export async function pushCommand(source: string, references: string, opts: PushCliOptions): Promise<void> {
  const refs = parsePushReferences([references], 'push');
  const { dir, tag } = parseLayoutRef(source);
  const target = await readLayoutImage(dir, tag);
  const results = await pushTarget(target, refs, opts);
  await writePushFiles(target, results, opts);
  process.stdout.write(`${results[0]?.digest ?? ''}\n`);
}

/** Pushes with progress lines; shared with `build --push`. */
export async function pushTarget(target: PushTarget, refs: readonly ImageReference[], opts: RegistryCliOptions & { mountSources?: ReadonlyMap<string, { registry: string; repository: string }> }): Promise<PushResult[]> {
  const progress = createProgress({ stream: process.stderr, quiet: Boolean(opts.quiet) });
  const say = quietable(progress, opts.quiet);
  try {
    const transport = await registryOptions(opts);
    const results = await pushImage(target, refs, {
      ...transport,
      ...(opts.mountSources ? { mountSources: opts.mountSources } : {}),
      log: (line) => say(line),
    });
    for (const r of results) {
      const b = r.blobs;
      say(`pushed ${r.reference}@${r.digest} (${b.uploaded} blobs uploaded, ${b.mounted} mounted, ${b.existing} already there)`);
    }
    return results;
  } finally {
    progress.done();
  }
}

export async function writePushFiles(target: PushTarget, results: readonly PushResult[], opts: { digestFile?: string; metadataFile?: string }): Promise<void> {
  const digest = results[0]?.digest;
  if (opts.digestFile && digest) await writeSmallFile(opts.digestFile, `${digest}\n`);
  if (opts.metadataFile) {
    await writeSmallFile(opts.metadataFile, `${JSON.stringify(pushMetadata(target, results), null, 2)}\n`);
  }
}

/** Progress lines, except with --quiet (warnings still pass). */
function quietable(progress: { line(text: string): void }, quiet: boolean | undefined): (line: string) => void {
  return (line) => {
    if (!quiet || /^warning/i.test(line)) progress.line(line);
  };
}

async function writeSmallFile(file: string, data: string): Promise<void> {
  const dest = path.resolve(file);
  try {
    await writeFileAtomic(dest, data, tempName(path.dirname(dest)));
  } catch (err) {
    throw new OcibuildError(`cannot write ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, { where: file, cause: err });
  }
}

function hostArch(): string {
  const map: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64', ia32: '386' };
  const a = map[process.arch];
  if (!a) throw new OcibuildError(`no OCI architecture for this host (${process.arch})`, { hint: 'pass --platform' });
  return a;
}

