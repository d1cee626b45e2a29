import { createRequire } from 'node:module';
import { OcibuildError, EXIT_FAILURE, EXIT_USAGE } from '../errors.js';
import { VERSION } from '../version.js';

// commander is CommonJS: required directly, since its ESM wrapper and Node's scan of
// a CommonJS module's exports for `import` add 3–5 ms to every start.
const { Command, CommanderError } = createRequire(import.meta.url)('commander') as typeof import('commander');

/** Commander: a repeatable option collected into a list. */
function appendValue(value: string, previous: string[]): string[] {
  return [...previous, value];
}

type CommandT = InstanceType<typeof Command>;

/** The options of every command that talks to a registry; `user` says what the user name is for. */
function registryFlags(cmd: CommandT, user: string): CommandT {
  return cmd
    .option('--insecure-registry <host>', 'talk plain HTTP to this registry (repeatable; localhost is unless TLS is configured for it)', appendValue, [])
    .option('--cert-dir <dir>', 'CA certificates (*.crt) and client certificate (*.cert, *.key) for the registries (default: certs.d/HOST directories)')
    .option('--username <name>', user)
    .option('--password-stdin', 'read the registry password or token from standard input');
}

/** Runs the ocibuild command line and returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  // Without root, a build re-runs as root of a user namespace when the user has
  // subordinate ids (rootless.ts); loaded only then.
  if (process.getuid?.() !== 0 && !process.env.OCIBUILD_IN_USERNS) {
    const { rootlessPlan, runRootless } = await import('./rootless.js');
    const plan = rootlessPlan(argv);
    const code = plan ? await runRootless(argv, plan) : undefined;
    if (code !== undefined) return code;
  }
  // Ctrl-C and SIGTERM (CI runners, timeout) abort the work through the AbortSignal;
  // writes are atomic and sandboxes, mounts and temp dirs are cleaned up on the way out.
  // The same signal again within a moment is the same request (a rootless parent passes
  // on what the terminal also sent); later, a second Ctrl-C gives up on cleaning up.
  const abort = new AbortController();
  let first = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (!abort.signal.aborted) {
      first = Date.now();
      const code = signal === 'SIGTERM' ? 143 : 130;
      abort.abort(new OcibuildError(signal === 'SIGTERM' ? 'terminated' : 'interrupted', { exitCode: code }));
    } else if (Date.now() - first > REPEAT_MS) {
      process.exit(signal === 'SIGTERM' ? 143 : 130);
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await run(argv, abort.signal);
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
}

/** A repeat of the interrupting signal within this time is not a second request. */
const REPEAT_MS = 2000;

async function run(argv: string[], signal: AbortSignal): Promise<number> {
  const program = new Command('ocibuild')
    .description('Build OCI container images without a Docker daemon')
    .version(VERSION)
    .exitOverride()
    .showHelpAfterError('(run ocibuild --help for usage)');

  registryFlags(program.command('lock'), 'registry user for pulling the base image (the password comes from --password-stdin)')
    .description('resolve the spec\'s apt packages into lockfiles (Packages-<suite>-<arch>.lock)')
    .option('-f, --file <image.yaml>', 'the image spec', 'image.yaml')
    .option('--platform <list>', 'platforms to lock, comma separated (default: the spec\'s platforms)')
    .option('--check', 'exit 1 if a lockfile is missing or stale; never write')
    .option('--locked', 'same as --check')
    .option('--cache-dir <dir>', 'store for indices (default $OCIBUILD_CACHE, $XDG_CACHE_HOME/ocibuild, ~/.cache/ocibuild)')
    .option('--insecure-no-verify', 'accept unsigned or badly signed repositories (DANGEROUS)')
    .option('--ignore-valid-until', 'accept expired Release files (snapshot mirrors)')
    .option('--base-status <file>', 'dpkg status file of the base image (its installed packages are not locked again)')
    .option('-q, --quiet', 'print errors and warnings only')
    .action(async (opts) => {
      const { lockCommand } = await import('./lock.js');
      await lockCommand({ ...opts, signal });
    });

  registryFlags(program.command('build'), 'registry user for pulls and pushes (the password comes from --password-stdin)')
    .description('build the image: lock if needed, fetch the .debs, write deterministic layers and the OCI image')
    .option('-f, --file <image.yaml>', 'the image spec', 'image.yaml')
    .option('-o, --output <dest>', 'oci:DIR[:TAG] (OCI layout), oci-archive:FILE[:TAG] or docker-archive:FILE[:REF]')
    .option('--push <refs>', 'push the image to registry references (REF[,REF2…], repeatable)', appendValue, [])
    .option('--metadata-file <file>', 'with --push: write a JSON summary (references, digests, layers)')
    .option('--platform <list>', 'platforms to build, comma separated, e.g. linux/amd64,linux/arm64 (default: the spec\'s platforms); several give an image index')
    .option('--locked', 'fail if the lockfile is missing or stale instead of updating it')
    .option('--compression <gzip|zstd>', 'layer compression (zstd layers need OCI-aware consumers)', 'gzip')
    .option('--source-date-epoch <seconds>', 'timestamp for files and the image (default: $SOURCE_DATE_EPOCH, else the newest date in the packages)')
    .option('--no-merged-usr', 'do not link bin, sbin and lib* into usr/')
    .option('--sandbox <auto|bwrap|nspawn>', 'what runs run: and install: dpkg (default: the spec\'s sandbox:, else auto: bwrap when usable)')
    .option('--digest-file <file>', 'write the digest of the output (the manifest, or the image index) to this file')
    .option('--depfile <file>', 'write a Make/Ninja depfile: every input file the build read (target: the digest file, else the output)')
    .option('--annotation <key=value>', 'add a manifest annotation (repeatable); wins over the spec\'s annotations:', appendValue, [])
    .option('--source <url|git>', 'org.opencontainers.image.source; git: the origin remote of the spec\'s checkout')
    .option('--revision <rev|git>', 'org.opencontainers.image.revision; git: the commit checked out (HEAD) in the spec\'s checkout')
    .option('--cache-dir <dir>', 'the store (default $OCIBUILD_CACHE, $XDG_CACHE_HOME/ocibuild, ~/.cache/ocibuild)')
    .option('--no-cache', 'take no layer from the layer cache: redo every step (the results are still recorded); rootfs trees are still reused, as they are keyed by their content')
    .option('--insecure-no-verify', 'accept unsigned or badly signed repositories (DANGEROUS)')
    .option('--ignore-valid-until', 'accept expired Release files (snapshot mirrors)')
    .option('-q, --quiet', 'print errors and warnings only')
    .action(async (opts) => {
      const { buildCommand } = await import('./build.js');
      await buildCommand({ ...opts, signal });
    });

  registryFlags(program.command('verify'), 'registry user (the password comes from --password-stdin)')
    .description('rebuild from the lockfiles in a fresh layer cache and compare layer by layer with a second build, an OCI layout or a registry image')
    .option('-f, --file <image.yaml>', 'the image spec', 'image.yaml')
    .option('--against <image>', 'oci:DIR[:TAG] or a registry reference (default: a second independent build)')
    .option('--platform <list>', 'platforms to verify, comma separated (default: the spec\'s platforms)')
    .option('--compression <gzip|zstd>', 'layer compression of the rebuild (default: the reference\'s, else gzip)')
    .option('--source-date-epoch <seconds>', 'as for build: give the value the reference was built with')
    .option('--no-merged-usr', 'as for build: do not link bin, sbin and lib* into usr/')
    .option('--sandbox <auto|bwrap|nspawn>', 'what runs run: and install: dpkg (default: the spec\'s sandbox:, else auto)')
    .option('--annotation <key=value>', 'as for build: a manifest annotation the reference was built with (repeatable)', appendValue, [])
    .option('--source <url|git>', 'as for build: org.opencontainers.image.source')
    .option('--revision <rev|git>', 'as for build: org.opencontainers.image.revision')
    .option('--cache-dir <dir>', 'the store the .debs and base images come from (default $OCIBUILD_CACHE, $XDG_CACHE_HOME/ocibuild, ~/.cache/ocibuild)')
    .option('-q, --quiet', 'print only errors, warnings and differences')
    .action(async (opts) => {
      const { verifyCommand } = await import('./verify.js');
      await verifyCommand({ ...opts, signal });
    });

  registryFlags(program.command('pull'), 'registry user (the password comes from --password-stdin)')
    .description('download an image from a registry into an OCI layout or archive')
    .argument('<reference>', 'e.g. registry.example.com/team/base:1.0 or name@sha256:…')
    .requiredOption('-o, --output <dest>', 'oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:REF]')
    .option('--platform <platform>', 'the platform to pick from a multi-platform image (default: this host\'s, linux/…)')
    .option('--digest-file <file>', 'write the pulled manifest digest to this file')
    .option('--cache-dir <dir>', 'the store (default $OCIBUILD_CACHE, $XDG_CACHE_HOME/ocibuild, ~/.cache/ocibuild)')
    .option('-q, --quiet', 'print errors and warnings only')
    .action(async (reference: string, opts) => {
      const { pullCommand } = await import('./pull.js');
      await pullCommand(reference, { ...opts, signal });
    });

  registryFlags(program.command('push'), 'registry user (the password comes from --password-stdin)')
    .description('upload an image from an OCI layout to one or more registry references')
    .argument('<source>', 'oci:DIR[:TAG]')
    .argument('<references>', 'REF[,REF2…], e.g. registry.example.com/team/app:1.0')
    .option('--digest-file <file>', 'write the pushed manifest (or index) digest to this file')
    .option('--metadata-file <file>', 'write a JSON summary: references, digests, layers')
    .option('-q, --quiet', 'print errors and warnings only')
    .action(async (source: string, references: string, opts) => {
      const { pushCommand } = await import('./registry.js');
      await pushCommand(source, references, { ...opts, signal });
    });

  program
    .command('inspect')
    .description('show the manifest, config and layers of an image in an OCI layout')
    .argument('<image>', 'oci:DIR[:TAG]')
    .action(async (image: string) => {
      const { inspectCommand } = await import('./build.js');
      await inspectCommand(image);
    });

  const cache = program.command('cache').description('list and prune what the store holds: layer cache, blobs, rootfs trees, cache mounts');
  cache
    .command('ls')
    .description('list the store\'s entries with their size and last use, and the total')
    .option('--cache-dir <dir>', 'the store (default $OCIBUILD_CACHE, $XDG_CACHE_HOME/ocibuild, ~/.cache/ocibuild)')
    .option('--json', 'print JSON (full ids, ISO dates) instead of a table')
    .action(async (opts) => {
      const { cacheLsCommand } = await import('./cache.js');
      await cacheLsCommand({ ...opts, signal });
    });
  cache
    .command('prune')
    .description('remove least recently used entries; never what a running build uses')
    .option('--keep-storage <size>', 'remove until the store holds at most SIZE, e.g. 10GB, 500MiB, 2G (K/KiB=1024, KB=1000)')
    .option('--older-than <duration>', 'remove what was not used for DURATION, e.g. 7d, 12h, 30m, 1h30m')
    .option('--all', 'remove everything not in use')
    .option('--dry-run', 'print what would be removed, remove nothing')
    .option('--cache-dir <dir>', 'the store (default $OCIBUILD_CACHE, $XDG_CACHE_HOME/ocibuild, ~/.cache/ocibuild)')
    .action(async (opts) => {
      const { cachePruneCommand } = await import('./cache.js');
      await cachePruneCommand({ ...opts, signal });
    });

  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end with code 0 through the same path.
      if (err.exitCode === 0) return 0;
      return EXIT_USAGE;
    }
    if (signal.aborted) {
      const reason: unknown = signal.reason;
      const terminated = reason instanceof OcibuildError && reason.exitCode === 143;
      process.stderr.write(`ocibuild: ${terminated ? 'terminated' : 'interrupted'}\n`);
      return terminated ? 143 : 130;
    }
    if (err instanceof OcibuildError) {
      process.stderr.write(`ocibuild: ${err.format()}\n`);
      return err.exitCode;
    }
    process.stderr.write(`ocibuild: internal error: ${err instanceof Error ? err.stack : String(err)}\n`);
    return EXIT_FAILURE;
  }
}
