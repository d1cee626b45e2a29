/**
 * `ocibuild push`, and the registry options every command that talks to a registry
 * shares (insecure hosts, credentials from the command line). Only what a push needs
 * is imported here: `ocibuild pull` (cli/pull.ts) brings the output writers.
 */
import path from 'node:path';
import { text } from 'node:stream/consumers';
import { OcibuildError, usageError } from '../errors.js';
import { parseLayoutRef, readLayoutImage } from '../oci/read-layout.js';
import type { Credential } from '../registry/credentials.js';
import { pushedLine, pushImage, pushMetadata, type PushResult, type PushTarget } from '../registry/push.js';
import { parseReference, type ImageReference } from '../registry/reference.js';
import { loadRegistryPolicy } from '../registry/registries-conf.js';
import type { TransportOptions } from '../registry/transport.js';
import { tempName, writeFileAtomic } from '../store/atomic.js';
import { createProgress } from './progress.js';

export interface RegistryCliOptions {
  insecureRegistry?: string[];
  certDir?: string;
  username?: string;
  passwordStdin?: boolean;
  quiet?: boolean;
  signal?: AbortSignal;
}

/**
 * Transport options from the CLI flags, $OCIBUILD_INSECURE_REGISTRIES (comma
 * separated), and the registries configuration podman and docker keep
 * (registries-conf.ts: plain-HTTP and blocked registries).
 *
 * `--username`/`--password-stdin` are for `target`, the one registry the command is
 * about (push: the destination; pull: the source; build: --push's, else the base's);
 * every other registry the command talks to gets its config-file credentials only.
 */
export async function registryOptions(opts: RegistryCliOptions, target: readonly ImageReference[], env: NodeJS.ProcessEnv = process.env): Promise<TransportOptions> {
  const policy = await loadRegistryPolicy({ env });
  const insecure = [...(opts.insecureRegistry ?? []), ...(env.OCIBUILD_INSECURE_REGISTRIES ?? '').split(','), ...policy.insecure]
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
  const registries = [...new Set(target.map((r) => r.registry))];
  if (credential && registries.length !== 1) {
    throw usageError(
      registries.length === 0
        ? '--username: this command talks to no registry the credentials could be for'
        : `--username is for one registry, and this command's targets are on ${registries.length} (${registries.join(', ')})`,
      '--username',
      registries.length === 0 ? 'drop --username and --password-stdin' : 'log in to each registry instead (docker login / podman login), or push to one registry per command',
    );
  }
  return {
    insecureRegistries: insecure,
    ...(policy.blocked.length > 0 ? { blocked: { patterns: policy.blocked, sources: policy.sources } } : {}),
    ...(opts.certDir !== undefined ? { certDir: opts.certDir } : {}),
    ...(credential ? { credential, credentialRegistries: registries } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
  };
}

/** `--push a,b` / several `--push`: references, each checked. */
export function parsePushReferences(values: readonly string[], flag: string): ImageReference[] {
  const refs = values.flatMap((v) => v.split(',')).map((v) => v.trim());
  if (refs.some((r) => r === '')) throw usageError(`${flag} has an empty reference`, flag, 'e.g. --push registry.example.com/team/app:1.0');
  return refs.map((r) => parseReference(r, flag));
}

export interface PushCliOptions extends RegistryCliOptions {
  digestFile?: string;
  metadataFile?: string;
}

export async function pushCommand(source: string, references: string, opts: PushCliOptions): Promise<void> {
  const transport = /^(oci-archive|docker-archive|docker-daemon|docker|dir|containers-storage):/.exec(source)?.[1];
  if (transport !== undefined) {
    throw usageError(`push reads an OCI image layout, not ${transport}: (${source})`, 'push', 'give oci:DIR[:TAG]; for an archive, build or pull to an oci: layout first');
  }
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
    const transport = await registryOptions(opts, refs);
    const results = await pushImage(target, refs, {
      ...transport,
      ...(opts.mountSources ? { mountSources: opts.mountSources } : {}),
      log: (line) => say(line),
    });
    for (const r of results) say(pushedLine(r));
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
export function quietable(progress: { line(text: string): void }, quiet: boolean | undefined): (line: string) => void {
  return (line) => {
    if (!quiet || /^warning/i.test(line)) progress.line(line);
  };
}

/** A digest or metadata file the user asked for, written atomically. */
export async function writeSmallFile(file: string, data: string): Promise<void> {
  const dest = path.resolve(file);
  try {
    await writeFileAtomic(dest, data, tempName(path.dirname(dest)));
  } catch (err) {
    throw new OcibuildError(`cannot write ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, { where: file, cause: err });
  }
}
