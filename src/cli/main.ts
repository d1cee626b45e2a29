import { Command, CommanderError } from 'commander';
import { OcibuildError, EXIT_FAILURE, EXIT_USAGE } from '../errors.js';
import { VERSION } from '../version.js';

/** Runs the ocibuild command line and returns the exit code. */
export async function main(argv: string[]): Promise<number> {
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
      await lockCommand(opts);
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
    if (err instanceof OcibuildError) {
      process.stderr.write(`ocibuild: ${err.format()}\n`);
      return err.exitCode;
    }
    process.stderr.write(`ocibuild: internal error: ${err instanceof Error ? err.stack : String(err)}\n`);
    return EXIT_FAILURE;
  }
}
