import { Command, CommanderError } from 'commander';
import { OcibuildError, EXIT_FAILURE, EXIT_USAGE } from '../errors.js';
import { VERSION } from '../version.js';

/** Runs the ocibuild command line and returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  // Ctrl-C aborts downloads through the AbortSignal; writes are atomic, so nothing half-written stays.
  const abort = new AbortController();
  const onSigint = (): void => abort.abort(new OcibuildError('interrupted', { exitCode: 130 }));
  process.once('SIGINT', onSigint);
  try {
    return await run(argv, abort.signal);
  } finally {
    process.removeListener('SIGINT', onSigint);
  }
}

async function run(argv: string[], signal: AbortSignal): Promise<number> {
  const program = new Command('ocibuild')
    .description('Build OCI container images without a Docker daemon')
    .version(VERSION)
    .exitOverride()
    .showHelpAfterError('(run ocibuild --help for usage)');

  program
    .command('lock')
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
      process.stderr.write('ocibuild: interrupted\n');
      return 130;
    }
    if (err instanceof OcibuildError) {
      process.stderr.write(`ocibuild: ${err.format()}\n`);
      return err.exitCode;
    }
    process.stderr.write(`ocibuild: internal error: ${err instanceof Error ? err.stack : String(err)}\n`);
    return EXIT_FAILURE;
  }
}
