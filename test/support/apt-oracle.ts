/**
 * apt-get as the oracle for the resolver: an isolated apt configuration in a temp
 * directory (never the host's /etc/apt, /var/lib/apt or /var/lib/dpkg), `apt-get
 * update` against the given sources and `apt-get install -s` to learn which
 * packages, at which versions, apt would install.
 *
 * What apt 2.6 (bookworm) does with an empty dpkg status file, checked by hand on
 * the bookworm index: `apt-get install -s X` installs X's dependency closure only —
 * it does NOT add the Essential: yes packages (bash, coreutils, ... are absent
 * unless something depends on them). Only `apt-get dist-upgrade` installs every
 * Essential package that is not installed (89 packages on bookworm, apt included,
 * because `pkgCacheGen::ForceEssential` defaults to "apt"). So the oracle compares
 * like with like: ocibuild's resolver must not add Essential packages on its own
 * either (they come from the base image's status file, passed here as `statusFile`).
 *
 * Requests apt refuses, checked on bookworm: a purely virtual name with several
 * providers (`awk`, `mail-transport-agent`) fails with "has no installation
 * candidate" (exit 100); a virtual name with exactly one provider (`libc-dev`,
 * provided only by libc6-dev) is silently replaced by that provider.
 */
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export interface AptOracleSource {
  url: string;
  suites: string[];
  components: string[];
  /** Path to a keyring (binary .gpg, or armored .asc) that signs the repository. */
  keyring: string;
}

export interface AptOracleOptions {
  sources: AptOracleSource[];
  /** Native architecture: amd64, arm64, ... */
  arch: string;
  /** dpkg status file of the installed set (copied into the sandbox); default: empty. */
  statusFile?: string;
  /** Default for APT::Install-Recommends; false unless given. */
  recommends?: boolean;
  /** Reuse this directory to keep downloaded lists between calls; kept by close(). */
  workDir?: string;
}

export interface AptSandbox {
  /** The sandbox directory (apt.conf, sources.list, lists, caches, status). */
  dir: string;
  /**
   * `apt-get ...aptArgs` reads this sandbox's apt.conf (`-c`). apt still reads the
   * host's /etc/apt/apt.conf.d before it, so for full isolation run apt with `env`.
   */
  aptArgs: string[];
  /** `{ APT_CONFIG }`: merge into a child's environment to run apt in this sandbox. */
  env: Record<string, string>;
  /** apt-get update. */
  update(): Promise<void>;
  /**
   * apt-get install -s: name (no `:arch` for native and `all` packages) → version of
   * every package apt would install or upgrade ("Inst" lines).
   */
  installSimulate(packages: string[], opts?: { recommends?: boolean }): Promise<Map<string, string>>;
  /** Removes the sandbox directory unless it was given as `workDir`. */
  close(): Promise<void>;
}

/** apt exited non-zero; the message holds apt's own explanation. */
export class AptOracleError extends Error {
  constructor(
    message: string,
    readonly args: string[],
    readonly exitCode: number | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(message);
    this.name = 'AptOracleError';
  }
}

/** One "Inst" line of `apt-get -s` output. */
export interface AptInstLine {
  /** As apt prints it, possibly with `:arch`. */
  name: string;
  /** The installed version being replaced (upgrades), else undefined. */
  oldVersion?: string;
  version: string;
  /** The architecture in the trailing `[arch]`. */
  arch: string;
}

// apt-get -s: "Inst NAME (VERSION RELEASE... [ARCH])" for new packages and
// "Inst NAME [OLDVER] (VERSION RELEASE... [ARCH])" for upgrades; apt may append
// " []" or " [pkg ...]" (packages whose configuration waits for this one).
const INST_LINE = /^Inst (\S+)(?: \[([^\]]*)\])? \((\S+)(?: [^[]*)?\[([^\]]+)\]\)/;

/** Parses the "Inst" lines of `apt-get install -s` output, in order. */
export function parseInstLines(output: string): AptInstLine[] {
  const out: AptInstLine[] = [];
  for (const line of output.split('\n')) {
    if (!line.startsWith('Inst ')) continue;
    const m = INST_LINE.exec(line);
    if (!m) throw new Error(`apt-oracle: cannot parse apt line: ${line}`);
    const [, name, oldVersion, version, arch] = m as unknown as [string, string, string | undefined, string, string];
    out.push(oldVersion === undefined ? { name, version, arch } : { name, oldVersion, version, arch });
  }
  return out;
}

/**
 * Name → version of the packages in `apt-get install -s` output. A `:arch` suffix is
 * dropped when it is the native architecture or `all`, kept for foreign ones.
 */
export function parseSimulation(output: string, nativeArch: string): Map<string, string> {
  const result = new Map<string, string>();
  for (const inst of parseInstLines(output)) {
    let name = inst.name;
    const colon = name.indexOf(':');
    if (colon >= 0) {
      const suffix = name.slice(colon + 1);
      if (suffix === nativeArch || suffix === 'all') name = name.slice(0, colon);
    }
    result.set(name, inst.version);
  }
  return result;
}

/** The sources.list text for the given sources (one-line format: one suite a line). */
export function sourcesList(sources: AptOracleSource[], arch: string): string {
  const lines: string[] = [];
  for (const s of sources) {
    const url = s.url.replace(/\/+$/, '');
    for (const suite of s.suites) {
      lines.push(`deb [arch=${arch} signed-by=${resolve(s.keyring)}] ${url} ${suite} ${s.components.join(' ')}`);
    }
  }
  return lines.join('\n') + '\n';
}

function q(value: string): string {
  if (/["\n]/.test(value)) throw new Error(`apt-oracle: cannot quote ${JSON.stringify(value)} for apt.conf`);
  return `"${value}"`;
}

/** The apt.conf that confines apt to `dir`. */
export function aptConf(dir: string, arch: string, recommends: boolean): string {
  const lines = [
    // Nothing from the host: apt reads $APT_CONFIG first, then the Dir::Etc::Parts
    // directory it names, then Dir::Etc::main, so the host's apt.conf(.d) is never read.
    `Dir "/";`,
    `Dir::Etc ${q(join(dir, 'etc'))};`,
    `Dir::Etc::main "/dev/null";`,
    `Dir::Etc::Parts ${q(join(dir, 'etc/apt.conf.d'))};`,
    `Dir::Etc::SourceList ${q(join(dir, 'sources.list'))};`,
    `Dir::Etc::SourceParts ${q(join(dir, 'etc/sources.list.d'))};`,
    `Dir::Etc::Preferences ${q(join(dir, 'etc/preferences'))};`,
    `Dir::Etc::PreferencesParts ${q(join(dir, 'etc/preferences.d'))};`,
    `Dir::Etc::Trusted ${q(join(dir, 'etc/trusted.gpg'))};`,
    `Dir::Etc::TrustedParts ${q(join(dir, 'etc/trusted.gpg.d'))};`,
    `Dir::State ${q(join(dir, 'state'))};`,
    `Dir::State::Lists ${q(join(dir, 'state/lists'))};`,
    // The dpkg admin dir (and its lock) is the status file's directory.
    `Dir::State::status ${q(join(dir, 'dpkg/status'))};`,
    `Dir::Cache ${q(join(dir, 'cache'))};`,
    `Dir::Log ${q(join(dir, 'log'))};`,
    `APT::Architecture ${q(arch)};`,
    // Set explicitly so apt does not ask the host's dpkg for foreign architectures.
    `APT::Architectures { ${q(arch)}; };`,
    `Acquire::Languages "none";`,
    `Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled "false";`,
    `APT::Install-Recommends ${recommends ? '"true"' : '"false"'};`,
    `APT::Install-Suggests "false";`,
    `APT::Get::Assume-Yes "true";`,
    // Temp dirs from mkdtemp are 0700: the _apt download sandbox could not write them.
    `APT::Sandbox::User "root";`,
    `Binary::apt-get::Acquire::AllowInsecureRepositories "false";`,
  ];
  return lines.join('\n') + '\n';
}

interface RunResult {
  stdout: string;
  stderr: string;
}

function runApt(confPath: string, args: string[]): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    execFile(
      'apt-get',
      args,
      {
        env: { ...process.env, APT_CONFIG: confPath, LC_ALL: 'C.UTF-8', LANG: 'C.UTF-8', DEBIAN_FRONTEND: 'noninteractive' },
        maxBuffer: 256 * 1024 * 1024,
        encoding: 'utf8',
      },
      (err, stdout, stderr) => {
        if (err) {
          const code = typeof err.code === 'number' ? err.code : null;
          const detail = [stderr.trim(), stdout.trim()].filter(Boolean).join('\n');
          reject(new AptOracleError(`apt-get ${args.join(' ')} failed (exit ${code ?? err.code}):\n${detail}`, args, code, stdout, stderr));
          return;
        }
        resolvePromise({ stdout, stderr });
      },
    );
  });
}

export async function createAptSandbox(opts: AptOracleOptions): Promise<AptSandbox> {
  if (opts.sources.length === 0) throw new Error('apt-oracle: no sources');
  const owned = opts.workDir === undefined;
  const dir = owned ? await mkdtemp(join(tmpdir(), 'ocibuild-apt-oracle-')) : resolve(opts.workDir!);
  for (const sub of [
    'etc/apt.conf.d',
    'etc/sources.list.d',
    'etc/preferences.d',
    'etc/trusted.gpg.d',
    'state/lists/partial',
    'cache/archives/partial',
    'log',
    'dpkg',
  ]) {
    await mkdir(join(dir, sub), { recursive: true });
  }
  const confPath = join(dir, 'apt.conf');
  await writeFile(confPath, aptConf(dir, opts.arch, opts.recommends ?? false));
  await writeFile(join(dir, 'sources.list'), sourcesList(opts.sources, opts.arch));
  const status = join(dir, 'dpkg/status');
  if (opts.statusFile !== undefined) await copyFile(opts.statusFile, status);
  else await writeFile(status, '');
  // A status file changes what apt would install: the cache built from the old one
  // must not be reused.
  await rm(join(dir, 'cache/pkgcache.bin'), { force: true });
  await rm(join(dir, 'cache/srcpkgcache.bin'), { force: true });

  const aptArgs = ['-c', confPath];
  return {
    dir,
    aptArgs,
    env: { APT_CONFIG: confPath },
    async update() {
      await runApt(confPath, ['-q', 'update']);
    },
    async installSimulate(packages, simOpts) {
      if (packages.length === 0) return new Map();
      const recommends = simOpts?.recommends ?? opts.recommends ?? false;
      const args = ['-q', 'install', '-s', '-o', `APT::Install-Recommends=${recommends ? 'true' : 'false'}`, '--', ...packages];
      const { stdout } = await runApt(confPath, args);
      return parseSimulation(stdout, opts.arch);
    },
    async close() {
      if (owned) await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * (Package, Version) pairs of a deb822 lockfile or Packages-style text. Paragraphs
 * without a Package field (the lockfile's header) are skipped; a `:arch` qualifier
 * never appears in a Package field, so names are taken as written.
 */
export function parseLockPackages(text: string): Map<string, string> {
  const result = new Map<string, string>();
  for (const paragraph of text.replace(/\r\n/g, '\n').split(/\n[ \t]*\n/)) {
    let pkg: string | undefined;
    let version: string | undefined;
    for (const line of paragraph.split('\n')) {
      if (line.startsWith(' ') || line.startsWith('\t') || line.startsWith('#')) continue;
      const colon = line.indexOf(':');
      if (colon < 0) continue;
      const key = line.slice(0, colon).toLowerCase();
      const value = line.slice(colon + 1).trim();
      if (key === 'package') pkg = value;
      else if (key === 'version') version = value;
    }
    if (pkg === undefined) continue;
    if (version === undefined) throw new Error(`apt-oracle: lock paragraph for ${pkg} has no Version`);
    if (result.has(pkg)) throw new Error(`apt-oracle: package ${pkg} appears twice in the lock`);
    result.set(pkg, version);
  }
  return result;
}

/**
 * A readable difference between apt's answer and ocibuild's, '' when they agree.
 * Lists names only in apt's set, only in ocibuild's, and version mismatches.
 */
export function diffPackageSets(apt: Map<string, string>, ocibuild: Map<string, string>): string {
  const onlyApt = [...apt.keys()].filter((n) => !ocibuild.has(n)).sort();
  const onlyOci = [...ocibuild.keys()].filter((n) => !apt.has(n)).sort();
  const differ = [...apt.keys()].filter((n) => ocibuild.has(n) && ocibuild.get(n) !== apt.get(n)).sort();
  const out: string[] = [];
  if (onlyApt.length > 0) out.push(`only in apt-get (${onlyApt.length}):`, ...onlyApt.map((n) => `  - ${n} ${apt.get(n)}`));
  if (onlyOci.length > 0) out.push(`only in ocibuild (${onlyOci.length}):`, ...onlyOci.map((n) => `  + ${n} ${ocibuild.get(n)}`));
  if (differ.length > 0) out.push(`version differs (${differ.length}):`, ...differ.map((n) => `  ~ ${n}: apt ${apt.get(n)}, ocibuild ${ocibuild.get(n)}`));
  return out.join('\n');
}
