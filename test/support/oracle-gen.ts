// Seeded random package universes for the differential test of the resolver against
// apt-get (test/apt/oracle-differential.test.ts). Everything here is deterministic
// in the seed, so a failing seed can be regenerated and shrunk by hand.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseDpkgStatus } from '../../src/apt/dpkg-status.js';
import { loadUniverse } from '../../src/apt/repository.js';
import { resolve } from '../../src/apt/resolve.js';
import type { InstalledPackage, PackageUniverse } from '../../src/apt/types.js';
import { compareVersions } from '../../src/apt/version.js';
import { OcibuildError } from '../../src/errors.js';
import { Store } from '../../src/store/store.js';
import { createAptSandbox, diffPackageSets, parseSimulation } from './apt-oracle.js';
import { buildAptRepo, type TestKey } from './aptrepo.js';
import { controlParagraph, type FixturePackage } from './deb.js';
import { serveDirectory } from './http.js';

/** mulberry32: tiny, fast, and good enough to drive a generator. */
export function prng(seed: number): Rng {
  let a = (seed * 0x9e3779b1 + 0x6d2b79f5) >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const rng: Rng = {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    chance: (p) => next() < p,
    pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!,
  };
  return rng;
}

export interface Rng {
  next(): number;
  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number;
  chance(p: number): boolean;
  pick<T>(xs: readonly T[]): T;
}

/** A package of a generated universe and the suite that publishes it. */
export interface GenPackage {
  suite: 'stable' | 'stable-updates';
  pkg: FixturePackage;
}

export interface GenUniverse {
  seed: number;
  prefix: string;
  packages: GenPackage[];
  /** Names with at least one real version, in generation order. */
  real: string[];
  /** Purely virtual names (only provided). */
  virtual: string[];
}

const OPS = ['<<', '<=', '=', '>=', '>>'] as const;
const PRIORITIES = ['required', 'important', 'standard', 'optional', 'optional', 'extra', ''] as const;
const VIRTUAL_VERSIONS = ['1.0', '1.2', '2.0'] as const;

function randomVersion(r: Rng): string {
  const epoch = r.chance(0.12) ? `${r.int(1, 2)}:` : '';
  const tilde = r.chance(0.2) ? `~${r.pick(['rc', 'beta', ''])}${r.int(1, 3)}` : '';
  const rev = r.chance(0.5) ? `-${r.int(1, 4)}` : '';
  return `${epoch}${r.int(0, 3)}.${r.int(0, 9)}${tilde}${rev}`;
}

/** A version strictly newer than `v` (by dpkg's rules), in one of the ways archives bump. */
function newerVersion(r: Rng, v: string): string {
  for (let i = 0; i < 20; i++) {
    const kind = r.int(0, 4);
    let cand: string;
    if (kind === 0 && v.includes('~')) cand = v.replace(/~[a-z]*\d+/, ''); // 1.2~rc1 -> 1.2
    else if (kind === 1) cand = `${v}+deb${r.int(1, 3)}u${r.int(1, 2)}`;
    else if (kind === 2 && !/^\d+:/.test(v)) cand = `1:${randomVersion(r).replace(/^\d+:/, '')}`;
    else if (kind === 3) cand = v.includes('-') ? `${v}.1` : `${v}-1`;
    else cand = randomVersion(r);
    if (compareVersions(cand, v) > 0) return cand;
  }
  return `${v}+1`;
}

/**
 * A universe of `count` real packages (some with an older version beside, or a newer
 * version in stable-updates) and a few virtual names, with every kind of relation
 * apt's solver distinguishes. Biased toward installable packages; some are not.
 */
export function generateUniverse(seed: number, prefix = `s${seed}-`): GenUniverse {
  const r = prng(seed);
  const count = r.int(25, 40);
  const real = Array.from({ length: count }, (_, i) => `${prefix}p${i}`);
  const virtual = Array.from({ length: r.int(2, 5) }, (_, i) => `${prefix}v${i}`);
  const missing = (): string => `${prefix}missing${r.int(0, 2)}`;

  interface Shape {
    name: string;
    arch: string;
    multiArch?: FixturePackage['multiArch'];
    versions: Array<{ version: string; suite: GenPackage['suite'] }>;
  }
  const shapes: Shape[] = real.map((name) => {
    const base = randomVersion(r);
    const versions: Shape['versions'] = [{ version: base, suite: 'stable' }];
    if (r.chance(0.15)) versions.unshift({ version: olderThan(r, base), suite: 'stable' });
    if (r.chance(0.3)) versions.push({ version: newerVersion(r, base), suite: 'stable-updates' });
    // The pool path drops the epoch: 1:1.2 and 1.2 of one package would collide.
    const paths = new Set<string>();
    for (const v of versions) {
      while (paths.has(v.version.replace(/^\d+:/, ''))) v.version += '+x';
      paths.add(v.version.replace(/^\d+:/, ''));
    }
    const ma = r.next();
    const arch = r.chance(0.1) ? 'all' : 'amd64';
    // apt: "Architecture: all package can't be Multi-Arch: same".
    const multiArch = ma < 0.15 ? 'allowed' : ma < 0.2 ? 'foreign' : ma < 0.22 && arch !== 'all' ? 'same' : undefined;
    return { name, arch, multiArch, versions };
  });

  const relation = (from: number, negative: boolean): string => {
    const roll = r.next();
    if (roll < (negative ? 0.35 : 0.18)) {
      const v = r.pick(virtual);
      if (r.chance(0.3)) return `${v} (${r.pick(OPS)} ${r.pick(VIRTUAL_VERSIONS)})`;
      return v;
    }
    if (!negative && roll < 0.21) return missing();
    // Mostly forward (toward higher indices) so most closures stay small; some back
    // edges make cycles.
    const i = r.chance(0.8) ? r.int(Math.min(from + 1, count - 1), count - 1) : r.int(0, count - 1);
    const target = shapes[i]!;
    let name = target.name;
    if (!negative && r.chance(target.multiArch === 'allowed' ? 0.5 : 0.02)) name += ':any';
    if (r.chance(negative ? 0.6 : 0.3)) {
      const tv = r.pick(target.versions).version;
      // Mostly a constraint some version meets, so that most closures are installable.
      if (!negative && r.chance(0.75)) return `${name} (${r.pick(['>=', '<=', '='] as const)} ${tv})`;
      return `${name} (${r.pick(OPS)} ${r.chance(0.8) ? tv : randomVersion(r)})`;
    }
    return name;
  };
  const orGroup = (from: number): string => {
    const n = r.chance(0.3) ? r.int(2, 3) : 1;
    const alts = Array.from({ length: n }, () => relation(from, false));
    // A first alternative that does not exist at all.
    if (n > 1 && r.chance(0.25)) alts[0] = missing();
    return [...new Set(alts)].join(' | ');
  };
  const list = (n: number, f: () => string): string | undefined => {
    const xs = [...new Set(Array.from({ length: n }, f))];
    return xs.length ? xs.join(', ') : undefined;
  };

  const packages: GenPackage[] = [];
  shapes.forEach((shape, idx) => {
    // Flags are per package in apt's cache; mostly keep them the same across versions.
    const essential = r.chance(0.06);
    const important = r.chance(0.06);
    let priority: string = r.pick(PRIORITIES);
    for (const { version, suite } of shape.versions) {
      if (r.chance(0.2)) priority = r.pick(PRIORITIES);
      const pkg: FixturePackage = {
        name: shape.name,
        version,
        arch: shape.arch,
        priority,
        dataCompression: 'none',
        controlCompression: 'none',
        description: `${shape.name} generated by oracle-gen seed ${seed}`,
        files: {},
      };
      if (shape.multiArch) pkg.multiArch = shape.multiArch;
      if (essential) pkg.essential = true;
      if (important) pkg.extraControl = { Important: 'yes' };
      const depends = list(r.int(0, r.chance(0.3) ? 4 : 2), () => orGroup(idx));
      if (depends) pkg.depends = depends;
      if (r.chance(0.12)) pkg.preDepends = orGroup(idx);
      const provides: string[] = [];
      if (r.chance(0.3)) {
        for (const v of new Set(Array.from({ length: r.int(1, 2) }, () => r.pick(virtual)))) {
          if (r.chance(0.35)) {
            const pv = r.pick(VIRTUAL_VERSIONS);
            provides.push(`${v} (= ${pv})`);
          } else provides.push(v);
        }
        pkg.provides = provides.join(', ');
      }
      const conflicts: string[] = [];
      if (r.chance(0.1)) conflicts.push(relation(idx, true));
      // Debian's "only one provider at a time" idiom: conflict with a name one provides.
      if (provides.length && r.chance(0.3)) conflicts.push(provides[0]!.replace(/ \(.*/, ''));
      if (conflicts.length) pkg.conflicts = [...new Set(conflicts)].join(', ');
      if (r.chance(0.08)) pkg.breaks = relation(idx, true);
      packages.push({ suite, pkg });
    }
  });
  return { seed, prefix, packages, real, virtual };
}

function olderThan(r: Rng, v: string): string {
  for (let i = 0; i < 20; i++) {
    const cand = r.chance(0.3) ? `${v.replace(/-\d+$/, '')}~pre${r.int(1, 3)}` : randomVersion(r);
    if (compareVersions(cand, v) < 0) return cand;
  }
  return `${v}~old`;
}

/** A request as `apt-get install` takes it: `name` or `name=version`. */
export interface GenRequest {
  name: string;
  version?: string;
}

export function formatRequest(req: GenRequest[]): string {
  return req.map((q) => (q.version === undefined ? q.name : `${q.name}=${q.version}`)).join(' ');
}

/** 1–3 names: mostly real packages, sometimes a virtual name or an older version pinned. */
export function generateRequest(u: GenUniverse, r: Rng): GenRequest[] {
  const n = r.int(1, 3);
  const out: GenRequest[] = [];
  for (let i = 0; i < n; i++) {
    if (r.chance(0.08)) {
      out.push({ name: r.pick(u.virtual) });
      continue;
    }
    const name = r.pick(u.real);
    const versions = u.packages.filter((p) => p.pkg.name === name).map((p) => p.pkg.version);
    if (versions.length > 1 && r.chance(0.25)) out.push({ name, version: r.pick(versions) });
    else out.push({ name });
  }
  const seen = new Set<string>();
  return out.filter((q) => !seen.has(q.name) && seen.add(q.name));
}

/** The names a relation field mentions (without versions and arch qualifiers). */
export function relationNames(field: string | undefined): string[] {
  if (!field) return [];
  return field
    .split(/[,|]/)
    .map((s) => s.trim().replace(/[\s(:].*$/, ''))
    .filter(Boolean);
}

/**
 * The packages a request can reach: the dependency closure (through the providers of
 * every name met), plus the packages one of them conflicts with or breaks, or that
 * conflict with or break one of them — what a reader needs to follow apt's choice.
 */
export function involvedPackages(all: GenPackage[], roots: string[]): GenPackage[] {
  const seen = new Set<string>();
  const queue = [...roots];
  while (queue.length) {
    const n = queue.shift()!;
    if (seen.has(n)) continue;
    seen.add(n);
    for (const { pkg } of all) {
      if (pkg.name === n) queue.push(...relationNames(pkg.depends), ...relationNames(pkg.preDepends));
      else if (relationNames(pkg.provides).includes(n)) queue.push(pkg.name);
    }
  }
  const closure = new Set(seen);
  for (const { pkg } of all) {
    const negatives = [...relationNames(pkg.conflicts), ...relationNames(pkg.breaks)];
    const names = [pkg.name, ...relationNames(pkg.provides)];
    if (closure.has(pkg.name)) negatives.forEach((m) => seen.add(m));
    else if (negatives.some((m) => closure.has(m))) seen.add(pkg.name);
    else if (names.some((m) => closure.has(m))) seen.add(pkg.name);
  }
  for (const { pkg } of all) if (relationNames(pkg.provides).some((m) => seen.has(m))) seen.add(pkg.name);
  return all.filter((p) => seen.has(p.pkg.name));
}

/** The relation-relevant control fields, as a reader wants them in a failure message. */
export function controlText(g: GenPackage): string {
  const p = g.pkg;
  const fields: Array<[string, string | undefined]> = [
    ['Package', p.name],
    ['Version', p.version],
    ['Architecture', p.arch ?? 'amd64'],
    ['Essential', p.essential ? 'yes' : undefined],
    ['Important', p.extraControl?.Important],
    ['Priority', p.priority],
    ['Multi-Arch', p.multiArch],
    ['Pre-Depends', p.preDepends],
    ['Depends', p.depends],
    ['Conflicts', p.conflicts],
    ['Breaks', p.breaks],
    ['Provides', p.provides],
  ];
  return `# suite ${g.suite}\n` + fields.filter(([, v]) => v).map(([k, v]) => `${k}: ${v}`).join('\n');
}

// ---------------------------------------------------------------------------
// Running one comparison: apt-get in a sandbox, resolve() on the loaded universe.

export interface AptAnswer {
  ok: boolean;
  installs: Map<string, string>;
  removes: string[];
  /** apt's problem resolver had to repair the marks (broken count > 0). */
  problemResolver: boolean;
  output: string;
}

/**
 * apt-get install -s --no-install-recommends in the sandbox whose environment is
 * `aptEnv`, optionally with another dpkg status file; never throws on apt's refusal.
 * Async on purpose: the repository is served by this very process.
 */
export function aptSimulate(aptEnv: Record<string, string>, request: GenRequest[], statusFile?: string, extra: string[] = []): Promise<AptAnswer> {
  const args = ['-q', 'install', '-s', '--no-install-recommends', '-o', 'Debug::pkgProblemResolver=1', '-o', 'Debug::NoLocking=1', '-o', 'APT::Get::Show-Versions=1', ...extra];
  // A cache built for one status file must not serve another: build it in memory.
  if (statusFile) args.push('-o', `Dir::State::status=${statusFile}`, '-o', 'Dir::Cache::pkgcache=', '-o', 'Dir::Cache::srcpkgcache=');
  args.push('--', ...request.map((q) => (q.version === undefined ? q.name : `${q.name}=${q.version}`)));
  return new Promise((done) => {
    execFile(
      'apt-get',
      args,
      { env: { ...process.env, ...aptEnv, LC_ALL: 'C.UTF-8', LANG: 'C.UTF-8', DEBIAN_FRONTEND: 'noninteractive' }, encoding: 'utf8', maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        const output = `${stdout}\n${stderr}`;
        // Resolution succeeded but apt's simulated install order gave up (Pre-Depends
        // loops): not a resolver question, so the chosen set is read from the summary.
        const orderingFailed = !!err && /MaxLoopCount|SmartUnPack|Could not perform immediate configuration|Couldn't configure .*dependency cycle/.test(stderr);
        const ok = !err || orderingFailed;
        done({
          ok,
          installs: !err ? parseSimulation(stdout, 'amd64') : orderingFailed ? parseSummary(stdout) : new Map(),
          removes: stdout.split('\n').filter((l) => l.startsWith('Remv ')).map((l) => l.split(' ')[1]!),
          problemResolver: /Starting pkgProblemResolver with broken count: [1-9]/.test(output),
          output,
        });
      },
    );
  });
}

/** Name → version from the NEW/upgraded lists of apt-get's summary (APT::Get::Show-Versions). */
function parseSummary(stdout: string): Map<string, string> {
  const out = new Map<string, string>();
  let inList = false;
  for (const line of stdout.split('\n')) {
    if (/^The following (NEW packages will be installed|packages will be upgraded):/.test(line)) {
      inList = true;
      continue;
    }
    if (!line.startsWith(' ')) {
      inList = false;
      continue;
    }
    if (!inList) continue;
    for (const m of line.matchAll(/(\S+) \((?:\S+ => )?([^)\s]+)\)/g)) out.set(m[1]!.replace(/:amd64$/, ''), m[2]!);
  }
  return out;
}

export type OciAnswer = { ok: true; installs: Map<string, string> } | { ok: false; error: string; internal: boolean };

export function ociResolve(universe: PackageUniverse, request: GenRequest[], installed?: InstalledPackage[]): OciAnswer {
  try {
    const res = resolve({
      universe,
      packages: request.map((q) => (q.version === undefined ? { name: q.name } : { name: q.name, version: q.version })),
      ...(installed ? { installed } : {}),
      recommends: false,
    });
    return { ok: true, installs: new Map(res.packages.map((p) => [p.record.package, p.record.version])) };
  } catch (err) {
    if (err instanceof OcibuildError) return { ok: false, error: err.format(), internal: false };
    return { ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err), internal: true };
  }
}

/** The kind of disagreement, '' when apt and ocibuild agree (the shrinker keeps the kind). */
export function disagreement(apt: AptAnswer, oci: OciAnswer): string {
  if (!oci.ok && oci.internal) return 'crash';
  if (apt.ok && !oci.ok) return 'oci-throws';
  if (!apt.ok && oci.ok) return 'apt-refuses';
  if (apt.ok && oci.ok && diffPackageSets(apt.installs, oci.installs)) return 'sets-differ';
  if (apt.ok && apt.removes.length) return 'apt-removes';
  return '';
}

/** '' when apt and ocibuild agree, else a report a person can reproduce from. */
export function compareAnswers(label: string, request: GenRequest[], apt: AptAnswer, oci: OciAnswer, context: GenPackage[], statusText?: string): string {
  const kind = disagreement(apt, oci);
  if (!kind) return '';
  let diff: string;
  if (!oci.ok && oci.internal) diff = `resolve() crashed (not an OcibuildError):\n${oci.error}`;
  else if (apt.ok && !oci.ok) diff = `apt-get installs, resolve() throws:\n${oci.error}\napt-get would install: ${formatSet(apt.installs)}`;
  else if (!apt.ok && oci.ok) diff = `apt-get refuses, resolve() returns: ${formatSet(oci.installs)}`;
  else if (kind === 'sets-differ' && apt.ok && oci.ok) diff = diffPackageSets(apt.installs, oci.installs);
  else diff = `apt-get removes ${apt.removes.join(' ')} (resolve() never removes)`;
  const roots = [...request.map((q) => q.name), ...(apt.ok ? apt.installs.keys() : []), ...(oci.ok ? oci.installs.keys() : [])];
  const paragraphs = involvedPackages(context, roots).map(controlText).join('\n\n');
  const aptTail = apt.output
    .split('\n')
    .filter((l) => /^(E:| |Inst |Remv |Note|Broken|Investigating|Fixing|Try|Done|Package|The following)/.test(l) || l.includes('pkgProblemResolver'))
    .join('\n')
    .trim();
  return [
    `=== ${label}`,
    `request: apt-get install ${formatRequest(request)}`,
    `apt-get: ${apt.ok ? 'ok' : 'FAILED'}${apt.problemResolver ? ' (after its problem resolver)' : ''}; resolve(): ${oci.ok ? 'ok' : 'threw'}`,
    diff,
    ...(statusText ? ['installed (dpkg status):', statusText.trim()] : []),
    'apt-get output:',
    aptTail,
    'involved packages:',
    paragraphs,
  ].join('\n');
}

export function formatSet(m: Map<string, string>): string {
  return [...m].sort(([a], [b]) => a.localeCompare(b)).map(([n, v]) => `${n}=${v}`).join(' ') || '(nothing)';
}

/** A dpkg status file holding `versions` (name → version) of the generated packages as installed. */
export function statusFor(pool: GenPackage[], versions: Map<string, string>): string {
  const paragraphs: string[] = [];
  for (const [name, version] of versions) {
    const g = pool.find((p) => p.pkg.name === name && p.pkg.version === version);
    if (!g) throw new Error(`no generated package ${name}=${version}`);
    paragraphs.push(controlParagraph(g.pkg).replace(/^(Package: .*\n)/, '$1Status: install ok installed\n'));
  }
  return paragraphs.join('\n');
}

export interface CaseResult {
  apt: AptAnswer;
  oci: OciAnswer;
  kind: string;
  report: string;
}

/**
 * One case in a repository of its own (stable + stable-updates, served on
 * 127.0.0.1, read by apt and by loadUniverse): for reproducing and shrinking a
 * discrepancy outside the shared differential run. `aptExtra` adds apt-get
 * options, e.g. the Debug::pkgDepCache::* switches.
 */
export async function runCase(
  packages: GenPackage[],
  request: GenRequest[],
  opts: { installed?: string[]; aptExtra?: string[]; key?: TestKey } = {},
): Promise<CaseResult> {
  const tmp = await mkdtemp(join(tmpdir(), 'ocibuild-oracle-case-'));
  try {
    const repo = await buildAptRepo(
      join(tmp, 'repo'),
      [
        { name: 'stable', components: { main: packages.filter((p) => p.suite === 'stable').map((p) => p.pkg) } },
        { name: 'stable-updates', components: { main: packages.filter((p) => p.suite === 'stable-updates').map((p) => p.pkg) } },
      ],
      opts.key ? { key: opts.key } : {},
    );
    const server = await serveDirectory(repo.dir);
    try {
      const sources = [{ url: server.url, suites: ['stable', 'stable-updates'], components: ['main'], keyring: repo.keyringPath }];
      let statusText: string | undefined;
      let statusFile: string | undefined;
      let installed: InstalledPackage[] | undefined;
      if (opts.installed) {
        statusText = statusFor(packages, new Map(opts.installed.map((s) => s.split('=') as [string, string])));
        statusFile = join(tmp, 'status');
        await writeFile(statusFile, statusText);
        installed = parseDpkgStatus(statusText, statusFile, 'amd64');
      }
      const sandbox = await createAptSandbox({ sources, arch: 'amd64', workDir: join(tmp, 'apt') });
      await sandbox.update();
      const universe = await loadUniverse(sources, 'amd64', { store: new Store(join(tmp, 'store')) });
      const apt = await aptSimulate(sandbox.env, request, statusFile, opts.aptExtra);
      const oci = ociResolve(universe, request, installed);
      return { apt, oci, kind: disagreement(apt, oci), report: compareAnswers('case', request, apt, oci, packages, statusText) };
    } finally {
      await server.close();
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
