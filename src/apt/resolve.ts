/**
 * Dependency resolution with apt as the oracle.
 *
 * The algorithm follows apt 2.6's internal solver as `apt-get install` drives it
 * (pkgDepCache::MarkInstall), so that for the same indices and installed set the
 * chosen (package, version) set is the one apt would install:
 *  - every requested package is marked first, then each resolves its dependencies
 *    depth-first, in request order;
 *  - a package's or-groups are visited in field order (Pre-Depends, Depends, then
 *    Recommends when enabled); a group already satisfied by what is marked or
 *    installed is skipped;
 *  - an unsatisfied group tries the candidates of every alternative: installed
 *    packages first, then, per alternative, the providers sorted the way apt's
 *    CompareProviders sorts them (the named package before providers, Essential,
 *    Important, Priority, then apt's package-creation order);
 *  - a package whose critical dependencies cannot be met is discarded (it loses
 *    its candidate) and the next solution is tried — apt's only backtracking.
 * What apt then hands to its problem resolver (conflicts between marked packages,
 * dependencies left unmet) is reported here as an error that shows the chain.
 */
import { OcibuildError } from '../errors.js';
import type { InstalledPackage, PackageRecord, PackageUniverse } from './types.js';
import { compareVersions, satisfies } from './version.js';
import { parseProvides, parseRelations, formatOrGroup, type OrGroup, type Relation } from './relation.js';
import { nearestNames } from './nearest.js';

export interface PackageWanted {
  name: string;
  /** Exact version (from `name=version`). */
  version?: string;
  /** Where the request was written, for errors. */
  where?: string;
}

export interface ResolveOptions {
  universe: PackageUniverse;
  packages: PackageWanted[];
  /** Packages already installed (the base image's dpkg status). */
  installed?: InstalledPackage[];
  /** Follow Recommends as apt does with --install-recommends. */
  recommends?: boolean;
  /** Add every Essential: yes package (bootstrapping a root file system for dpkg). */
  essential?: boolean;
}

export interface ResolvedPackage {
  record: PackageRecord;
  /** Named in the request (or pulled in as Essential). */
  requested: boolean;
  /** Why it is here: 'requested', 'essential', or the names of the packages that depend on it. */
  reasons: string[];
}

export interface Resolution {
  /** Packages to install, dependencies before dependants. */
  packages: ResolvedPackage[];
  /** Requests that an installed package already satisfies. */
  alreadyInstalled: string[];
}

/** apt's Priority ranking (pkgCache::State::VerPriority); an absent field is 0. */
const PRIORITY_RANK: Record<string, number> = { required: 1, important: 2, standard: 3, optional: 4, extra: 5 };

interface Provide {
  name: string;
  version?: string;
}

/** One version of a package as the solver sees it: an index record or an installed package. */
interface Ver {
  pkg: string;
  /** The solver's native architecture (every version is native or arch: all). */
  nativeArch: string;
  version: string;
  multiArch: PackageRecord['multiArch'];
  essential: boolean;
  important: boolean;
  priority: number;
  preDepends: OrGroup[];
  depends: OrGroup[];
  recommends: OrGroup[];
  conflicts: OrGroup[];
  breaks: OrGroup[];
  provides: Provide[];
  record?: PackageRecord;
  installed: boolean;
}

interface Solver {
  opts: ResolveOptions;
  arch: string;
  byName: Map<string, PackageRecord[]>;
  providersOf: Map<string, Array<{ rec: PackageRecord; version?: string }>>;
  installed: Map<string, Ver>;
  verOf: Map<PackageRecord, Ver>;
  /** Current candidate per package; null once apt would have discarded it. */
  candidate: Map<string, Ver | null>;
  /** What each package will be after the run: marked installs and kept installed packages. */
  state: Map<string, Ver>;
  /** Packages marked for (new) install or upgrade. */
  marked: Set<string>;
  /** Names provided by packages in `state`. */
  providedBy: Map<string, Set<Ver>>;
  /** Packages whose MarkInstall is on the call stack (apt's temporary Protected flag). */
  inProgress: Set<string>;
  /** Lazily computed: apt's package creation order, its last tie-breaker. */
  creationOrder?: Map<string, number>;
}

export function resolve(opts: ResolveOptions): Resolution {
  const s = newSolver(opts);
  const requests = collectRequests(s, opts);

  // apt-get install: first mark every requested package without its dependencies
  // (TryToInstall), then let each pull in its dependencies in request order.
  for (const r of requests) markInstall(s, r.name, false, true);
  for (const r of requests) markInstall(s, r.name, true, true);

  checkNothingBroken(s, requests);
  return finish(s, requests);
}

function newSolver(opts: ResolveOptions): Solver {
  const arch = opts.universe.arch;
  const byName = new Map<string, PackageRecord[]>();
  const providersOf = new Map<string, Array<{ rec: PackageRecord; version?: string }>>();
  for (const rec of opts.universe.records) {
    if (rec.architecture !== arch && rec.architecture !== 'all') continue;
    let list = byName.get(rec.package);
    if (!list) byName.set(rec.package, (list = []));
    list.push(rec);
    if (rec.provides) {
      for (const p of parseProvides(rec.provides, `${rec.package} ${rec.version}`)) {
        let provs = providersOf.get(p.name);
        if (!provs) providersOf.set(p.name, (provs = []));
        provs.push(p.version === undefined ? { rec } : { rec, version: p.version });
      }
    }
  }
  const s: Solver = {
    opts,
    arch,
    byName,
    providersOf,
    installed: new Map(),
    verOf: new Map(),
    candidate: new Map(),
    state: new Map(),
    marked: new Set(),
    providedBy: new Map(),
    inProgress: new Set(),
  };
  for (const inst of opts.installed ?? []) {
    // The same version in an index is the same package (apt merges them).
    const rec = byName.get(inst.package)?.find((r) => r.version === inst.version);
    const ver = rec ? { ...verFromRecord(s, rec), installed: true } : verFromInstalled(inst, arch);
    if (rec) s.verOf.set(rec, ver);
    s.installed.set(inst.package, ver);
    setState(s, inst.package, ver);
  }
  return s;
}

function verFromRecord(s: Solver, rec: PackageRecord): Ver {
  const cached = s.verOf.get(rec);
  if (cached) return cached;
  const where = `${rec.package} ${rec.version}`;
  const ver: Ver = {
    pkg: rec.package,
    nativeArch: s.arch,
    version: rec.version,
    multiArch: rec.multiArch,
    essential: rec.essential,
    important: rec.important === true,
    priority: rec.priority ? (PRIORITY_RANK[rec.priority] ?? PRIORITY_RANK.extra!) : 0,
    preDepends: rec.preDepends ? parseRelations(rec.preDepends, where) : [],
    depends: rec.depends ? parseRelations(rec.depends, where) : [],
    recommends: rec.recommends ? parseRelations(rec.recommends, where) : [],
    conflicts: rec.conflicts ? parseRelations(rec.conflicts, where) : [],
    breaks: rec.breaks ? parseRelations(rec.breaks, where) : [],
    provides: rec.provides ? parseProvides(rec.provides, where) : [],
    record: rec,
    installed: false,
  };
  s.verOf.set(rec, ver);
  return ver;
}

function verFromInstalled(inst: InstalledPackage, nativeArch: string): Ver {
  const where = `${inst.package} ${inst.version} (installed)`;
  return {
    pkg: inst.package,
    nativeArch,
    version: inst.version,
    multiArch: inst.multiArch,
    essential: inst.essential,
    important: false,
    priority: 0,
    preDepends: inst.preDepends ? parseRelations(inst.preDepends, where) : [],
    depends: inst.depends ? parseRelations(inst.depends, where) : [],
    recommends: [],
    conflicts: inst.conflicts ? parseRelations(inst.conflicts, where) : [],
    breaks: inst.breaks ? parseRelations(inst.breaks, where) : [],
    provides: inst.provides ? parseProvides(inst.provides, where) : [],
    installed: true,
  };
}

/** apt's default candidate: the highest version, never a downgrade of what is installed. */
function candidateOf(s: Solver, name: string): Ver | null {
  const known = s.candidate.get(name);
  if (known !== undefined) return known;
  let best: PackageRecord | undefined;
  for (const rec of s.byName.get(name) ?? []) {
    if (!best || compareVersions(rec.version, best.version) > 0) best = rec;
  }
  const inst = s.installed.get(name);
  let cand: Ver | null = best ? verFromRecord(s, best) : null;
  if (inst && (!best || compareVersions(inst.version, best.version) >= 0)) cand = inst;
  s.candidate.set(name, cand);
  return cand;
}

function setState(s: Solver, name: string, ver: Ver | undefined): void {
  const old = s.state.get(name);
  if (old) for (const p of old.provides) s.providedBy.get(p.name)?.delete(old);
  if (!ver) {
    s.state.delete(name);
    return;
  }
  s.state.set(name, ver);
  for (const p of ver.provides) {
    let set = s.providedBy.get(p.name);
    if (!set) s.providedBy.set(p.name, (set = new Set()));
    set.add(ver);
  }
}

/**
 * Every version the solver sees is of the native architecture or arch: all, so a
 * relation qualified with another architecture ("libc6-i386:x32") matches nothing:
 * that architecture is not configured.
 */
function foreignQualifier(rel: Relation, nativeArch: string): boolean {
  const q = rel.archQualifier;
  return q !== undefined && q !== 'any' && q !== 'native' && q !== nativeArch;
}

function relationMatchesVer(rel: Relation, ver: Ver): boolean {
  if (ver.pkg !== rel.name) return false;
  if (foreignQualifier(rel, ver.nativeArch)) return false;
  // dpkg: `pkg:any` is satisfied only by a Multi-Arch: allowed package.
  if (rel.archQualifier === 'any' && ver.multiArch !== 'allowed') return false;
  return rel.op === undefined || satisfies(ver.version, rel.op, rel.version!);
}

function provideMatches(rel: Relation, p: { version?: string }, nativeArch: string): boolean {
  if (foreignQualifier(rel, nativeArch)) return false;
  if (rel.op === undefined) return true;
  // Policy 7.5: an unversioned Provides never satisfies a versioned dependency.
  return p.version !== undefined && satisfies(p.version, rel.op, rel.version!);
}

/** Is the relation met by what will be installed (apt's DepInstall)? */
function relationSatisfied(s: Solver, rel: Relation, exclude?: Ver): boolean {
  const v = s.state.get(rel.name);
  if (v && v !== exclude && relationMatchesVer(rel, v)) return true;
  const provs = s.providedBy.get(rel.name);
  if (provs) {
    for (const pv of provs) {
      if (pv === exclude) continue;
      for (const p of pv.provides) if (p.name === rel.name && provideMatches(rel, p, s.arch)) return true;
    }
  }
  return false;
}

function groupSatisfied(s: Solver, group: OrGroup): boolean {
  return group.some((rel) => relationSatisfied(s, rel));
}

/** Versions in the install state that a negative relation (Conflicts/Breaks) of `ver` hits. */
function conflictingWith(s: Solver, ver: Ver, rel: Relation): Ver[] {
  const hits: Ver[] = [];
  const v = s.state.get(rel.name);
  // A package never conflicts with itself (Conflicts on a virtual name it provides).
  if (v && v.pkg !== ver.pkg && relationMatchesVer(rel, v)) hits.push(v);
  for (const pv of s.providedBy.get(rel.name) ?? []) {
    if (pv.pkg === ver.pkg || hits.includes(pv)) continue;
    if (pv.provides.some((p) => p.name === rel.name && provideMatches(rel, p, s.arch))) hits.push(pv);
  }
  return hits;
}

/** apt's InstBroken/InstPolicyBroken: a marked version whose dependencies or conflicts are not met. */
function isInstBroken(s: Solver, ver: Ver): boolean {
  if (importantGroups(s, ver).some((g) => !groupSatisfied(s, g))) return true;
  return [...ver.conflicts, ...ver.breaks].some((g) => g.some((rel) => conflictingWith(s, ver, rel).length > 0));
}

function importantGroups(s: Solver, ver: Ver): OrGroup[] {
  return s.opts.recommends ? [...ver.preDepends, ...ver.depends, ...ver.recommends] : [...ver.preDepends, ...ver.depends];
}

/** pkgDepCache::MarkInstall, reduced to a system whose packages are all installable. */
function markInstall(s: Solver, name: string, autoInst: boolean, fromUser: boolean): boolean {
  const cand = candidateOf(s, name);
  if (!cand) return false;
  const current = s.state.get(name);
  if (cand.installed && current === cand) return true; // kept as installed
  // Already marked: done, unless its dependencies are still unmet (a requested
  // package marked by the first pass) — apt then resolves them right here, even
  // when it is reached as somebody's dependency.
  if (s.marked.has(name) && current === cand && (s.inProgress.has(name) || !isInstBroken(s, cand))) return true;
  const failEarly = !s.inProgress.has(name) && !fromUser;

  if (!autoInst) {
    markState(s, name, cand);
    return true;
  }

  // Conflicts of the new version against what is already marked or installed:
  // an installed package whose candidate no longer conflicts is upgraded, anything
  // else is a conflict apt would leave to its problem resolver; a dependency pulled
  // in automatically is refused instead (failEarly), so another alternative wins.
  const toUpgrade: string[] = [];
  for (const group of [...cand.conflicts, ...cand.breaks]) {
    for (const rel of group) {
      for (const hit of conflictingWith(s, cand, rel)) {
        const hitCand = candidateOf(s, hit.pkg);
        if (hit.installed && !s.marked.has(hit.pkg) && hitCand && hitCand !== hit && !relationMatchesVer(rel, hitCand)) {
          toUpgrade.push(hit.pkg);
        } else if (failEarly) {
          return false;
        }
      }
    }
  }

  markState(s, name, cand);
  const alreadyProtected = s.inProgress.has(name);
  s.inProgress.add(name);
  try {
    for (const up of toUpgrade) markInstall(s, up, true, false);
    let failed = false;
    for (const group of importantGroups(s, cand)) {
      if (groupSatisfied(s, group)) continue;
      let found = false;
      for (const sol of possibleSolutions(s, group)) {
        if (candidateOf(s, sol.pkg) !== sol) continue;
        if (markInstall(s, sol.pkg, true, false)) {
          found = true;
          break;
        }
      }
      const critical = cand.preDepends.includes(group) || cand.depends.includes(group);
      if (!found && critical) {
        failed = true;
        if (!fromUser) break;
      }
    }
    if (failed && failEarly) {
      discardInstall(s, name);
      return false;
    }
    return !failed;
  } finally {
    if (!alreadyProtected) s.inProgress.delete(name);
  }
}

function markState(s: Solver, name: string, ver: Ver): void {
  if (ver.installed && s.installed.get(name) === ver) s.marked.delete(name);
  else s.marked.add(name);
  setState(s, name, ver);
}

/** MarkInstall_DiscardInstall: back to what is installed, and no candidate any more. */
function discardInstall(s: Solver, name: string): void {
  s.marked.delete(name);
  setState(s, name, s.installed.get(name));
  s.candidate.set(name, s.installed.get(name) ?? null);
}

/** getAllPossibleSolutions(CANDIDATE, sorted): installed first, then new installs. */
function possibleSolutions(s: Solver, group: OrGroup): Ver[] {
  const upgrades: Ver[] = [];
  const fresh: Ver[] = [];
  for (const rel of group) {
    const list = targetsOf(s, rel);
    list.sort((a, b) => compareProviders(s, rel.name, a, b));
    for (const v of list) (s.installed.has(v.pkg) ? upgrades : fresh).push(v);
  }
  const out: Ver[] = [];
  for (const v of [...upgrades, ...fresh]) if (!out.includes(v)) out.push(v);
  return out;
}

/** Candidate versions that satisfy one relation: the package itself and its providers. */
function targetsOf(s: Solver, rel: Relation): Ver[] {
  const out: Ver[] = [];
  const own = candidateOf(s, rel.name);
  if (own && relationMatchesVer(rel, own)) out.push(own);
  for (const p of s.providersOf.get(rel.name) ?? []) {
    if (!provideMatches(rel, p, s.arch)) continue;
    const cand = candidateOf(s, p.rec.package);
    if (cand && cand.record === p.rec && !out.includes(cand)) out.push(cand);
  }
  // Providers among installed packages that are not in any index.
  for (const inst of s.installed.values()) {
    if (inst.record || out.includes(inst) || candidateOf(s, inst.pkg) !== inst) continue;
    if (inst.provides.some((p) => p.name === rel.name && provideMatches(rel, p, s.arch))) out.push(inst);
  }
  return out;
}

/** apt's CompareProviders: negative when a should be tried before b. */
function compareProviders(s: Solver, target: string, a: Ver, b: Ver): number {
  const order = (x: boolean, y: boolean): number => (x === y ? 0 : x ? -1 : 1);
  const protectedFirst = order(s.inProgress.has(a.pkg), s.inProgress.has(b.pkg));
  if (protectedFirst) return protectedFirst;
  if (a.multiArch === 'same' || b.multiArch === 'same') {
    const r = order(a.multiArch === 'same' && s.installed.has(a.pkg), b.multiArch === 'same' && s.installed.has(b.pkg));
    if (r) return r;
  }
  const installed = order(s.installed.has(a.pkg), s.installed.has(b.pkg));
  if (installed) return installed;
  const named = order(a.pkg === target, b.pkg === target);
  if (named) return named;
  const essential = order(a.essential, b.essential);
  if (essential) return essential;
  const important = order(a.important, b.important);
  if (important) return important;
  if (a.priority !== b.priority) return a.priority - b.priority;
  // Unable to decide: apt prefers the package created later in its cache.
  return creationIndex(s, b.pkg) - creationIndex(s, a.pkg);
}

/**
 * apt numbers packages in the order its cache generator first meets their names:
 * walking the indices in order, each paragraph's own package, then every name its
 * Pre-Depends, Depends, Conflicts, Breaks, Recommends, Suggests, Replaces,
 * Enhances and Provides mention. Installed-only packages come after.
 */
function creationIndex(s: Solver, name: string): number {
  if (!s.creationOrder) {
    const order = new Map<string, number>();
    const see = (n: string): void => {
      if (!order.has(n)) order.set(n, order.size);
    };
    const seeField = (field: string | undefined): void => {
      if (!field) return;
      for (const part of field.split(/[,|]/)) {
        const m = /^\s*([^\s(:[<]+)/.exec(part);
        if (m) see(m[1]!);
      }
    };
    for (const rec of s.opts.universe.records) {
      if (rec.architecture !== s.arch && rec.architecture !== 'all') continue;
      see(rec.package);
      seeField(rec.preDepends);
      seeField(rec.depends);
      seeField(rec.conflicts);
      seeField(rec.breaks);
      seeField(rec.recommends);
      seeField(rec.suggests);
      seeField(rec.replaces);
      seeField(rec.enhances);
      seeField(rec.provides);
    }
    for (const name of s.installed.keys()) see(name);
    s.creationOrder = order;
  }
  return s.creationOrder.get(name) ?? Number.MAX_SAFE_INTEGER;
}

interface Request {
  name: string;
  where?: string;
  essential?: boolean;
}

/** Validates the requested names, applies version pins, and maps virtual names like apt-get. */
function collectRequests(s: Solver, opts: ResolveOptions): Request[] {
  const out: Request[] = [];
  const seen = new Set<string>();
  const add = (r: Request): void => {
    if (seen.has(r.name)) return;
    seen.add(r.name);
    out.push(r);
  };
  if (opts.essential) {
    const names = [...s.byName.keys()].filter((n) => candidateOf(s, n)?.essential).sort();
    for (const n of names) add({ name: n, essential: true });
  }
  for (const want of opts.packages) {
    const where = want.where;
    if (want.version !== undefined) {
      const rec = (s.byName.get(want.name) ?? []).find((r) => r.version === want.version);
      const inst = s.installed.get(want.name);
      if (rec) s.candidate.set(want.name, verFromRecord(s, rec));
      else if (inst && inst.version === want.version) s.candidate.set(want.name, inst);
      else if (s.byName.has(want.name)) {
        const versions = s.byName.get(want.name)!.map((r) => r.version);
        throw new OcibuildError(`version ${want.version} of ${want.name} is not available`, {
          where,
          hint: `available: ${[...new Set(versions)].sort(compareVersions).reverse().join(', ')}`,
        });
      }
    }
    if (s.byName.has(want.name) || s.installed.has(want.name)) {
      add({ name: want.name, ...(where ? { where } : {}) });
      continue;
    }
    const providers = [...new Set((s.providersOf.get(want.name) ?? []).map((p) => p.rec.package))].filter(
      (n) => candidateOf(s, n) !== null,
    );
    if (providers.length === 1) {
      // apt-get: "Note, selecting 'X' instead of 'Y'".
      add({ name: providers[0]!, ...(where ? { where } : {}) });
      continue;
    }
    if (providers.length > 1) {
      throw new OcibuildError(`${want.name} is a virtual package provided by ${providers.sort().join(', ')}`, {
        where,
        hint: 'name one of the providers in apt.packages',
      });
    }
    const near = nearestNames(want.name, [...s.byName.keys(), ...s.providersOf.keys()]);
    throw new OcibuildError(`unknown package ${want.name}: no index of the configured sources has it`, {
      where,
      hint: near.length ? `did you mean ${near.join(', ')}?` : 'check the package name and the sources\' suites and components',
    });
  }
  return out;
}

/** What apt's CheckNothingBroken and problem resolver would complain about, as an error with the chain. */
function checkNothingBroken(s: Solver, requests: Request[]): void {
  const problems: string[] = [];
  for (const r of requests) {
    if (!s.state.get(r.name)) problems.push(explainUninstallable(s, r.name, r.name, new Set()));
  }
  for (const name of [...s.marked].sort()) {
    const ver = s.state.get(name)!;
    for (const group of [...ver.preDepends, ...ver.depends]) {
      if (!groupSatisfied(s, group)) problems.push(explainGroup(s, chainTo(s, name, requests), group, new Set([name])));
    }
    for (const group of [...ver.conflicts, ...ver.breaks]) {
      for (const rel of group) {
        for (const hit of conflictingWith(s, ver, rel)) {
          const kind = ver.conflicts.includes(group) ? 'conflicts with' : 'breaks';
          const state = hit.installed && !s.marked.has(hit.pkg) ? 'is installed' : 'is to be installed';
          problems.push(`${chainTo(s, name, requests)} ${kind} ${formatOrGroup([rel])}, but ${hit.pkg} ${hit.version} ${state} (${chainTo(s, hit.pkg, requests)})`);
        }
      }
    }
  }
  if (problems.length) {
    const unique = [...new Set(problems)];
    throw new OcibuildError(`the requested packages cannot be installed together:\n    ${unique.join('\n    ')}`, {
      where: requests.find((r) => r.where)?.where,
      hint: 'pin versions (name=version), add the missing suite or component, or drop one of the conflicting packages',
    });
  }
}

/** Follows an unmet or-group down to the first reason nothing in it can be installed. */
function explainGroup(s: Solver, chain: string, group: OrGroup, seen: Set<string>): string {
  const next = group.flatMap((rel) => targetsOfUnfiltered(s, rel)).find((v) => !seen.has(v.pkg));
  if (!next) return `${chain} → ${formatOrGroup(group)}, but ${whyUnsatisfiable(s, group)}`;
  return explainUninstallable(s, next.pkg, `${chain} → ${next.pkg}`, seen);
}

/** Why a package could not be installed, following its first unsatisfiable dependency. */
function explainUninstallable(s: Solver, name: string, chain: string, seen: Set<string>): string {
  seen.add(name);
  const recs = s.byName.get(name) ?? [];
  const cand = recs.length ? recs.reduce((a, b) => (compareVersions(a.version, b.version) >= 0 ? a : b)) : undefined;
  if (!cand) return `${chain} has no installable version`;
  const ver = verFromRecord(s, cand);
  for (const group of [...ver.preDepends, ...ver.depends]) {
    if (!groupSatisfied(s, group)) return explainGroup(s, chain, group, seen);
  }
  for (const group of [...ver.conflicts, ...ver.breaks]) {
    for (const rel of group) {
      const hit = conflictingWith(s, ver, rel)[0];
      if (hit) return `${chain} conflicts with ${formatOrGroup([rel])} (${hit.pkg} ${hit.version})`;
    }
  }
  return `${chain} cannot be installed`;
}

/** Like targetsOf, but ignoring discarded candidates: what the indices could offer. */
function targetsOfUnfiltered(s: Solver, rel: Relation): Ver[] {
  const out: Ver[] = [];
  for (const rec of s.byName.get(rel.name) ?? []) {
    const v = verFromRecord(s, rec);
    if (relationMatchesVer(rel, v)) out.push(v);
  }
  for (const p of s.providersOf.get(rel.name) ?? []) if (provideMatches(rel, p, s.arch)) out.push(verFromRecord(s, p.rec));
  return out;
}

/** "the newest libfoo is 1.8 in bookworm/main" style explanation for one or-group. */
function whyUnsatisfiable(s: Solver, group: OrGroup): string {
  const parts: string[] = [];
  for (const rel of group) {
    const recs = s.byName.get(rel.name) ?? [];
    const inst = s.installed.get(rel.name);
    if (recs.length === 0 && !inst) {
      const provs = (s.providersOf.get(rel.name) ?? []).map((p) => p.rec.package);
      parts.push(provs.length ? `${rel.name} is only provided by ${[...new Set(provs)].join(', ')}, none installable` : `no package ${rel.name} exists in the configured sources`);
      continue;
    }
    const newest = recs.reduce<PackageRecord | undefined>((a, b) => (!a || compareVersions(b.version, a.version) > 0 ? b : a), undefined);
    if (newest && rel.op && !satisfies(newest.version, rel.op, rel.version!)) {
      const o = s.opts.universe.origins[newest.origin];
      parts.push(`the newest ${rel.name} is ${newest.version}${o ? ` in ${o.suite}/${o.component}` : ''}`);
    } else if (inst && rel.op && !satisfies(inst.version, rel.op, rel.version!)) {
      parts.push(`${rel.name} ${inst.version} is installed`);
    } else if (rel.archQualifier === 'any' && newest && newest.multiArch !== 'allowed') {
      parts.push(`${rel.name} is not Multi-Arch: allowed, so ${rel.name}:any cannot be met`);
    } else {
      parts.push(`${rel.name} cannot be installed`);
    }
  }
  return parts.join('; ');
}

/** The dependency path from a request to a package: "app → libfoo". */
function chainTo(s: Solver, target: string, requests: Request[]): string {
  const reqNames = requests.map((r) => r.name);
  const prev = new Map<string, string | null>();
  const queue: string[] = [];
  for (const n of reqNames) {
    if (s.state.has(n) && !prev.has(n)) {
      prev.set(n, null);
      queue.push(n);
    }
  }
  while (queue.length) {
    const n = queue.shift()!;
    if (n === target) break;
    const ver = s.state.get(n);
    if (!ver) continue;
    for (const dep of satisfiersOf(s, ver)) {
      if (!prev.has(dep)) {
        prev.set(dep, n);
        queue.push(dep);
      }
    }
  }
  if (!prev.has(target)) return target;
  const path: string[] = [];
  for (let n: string | null | undefined = target; n; n = prev.get(n)) path.unshift(n);
  return path.join(' → ');
}

/** The packages in the install state that meet each critical or-group of ver (first satisfier per group). */
function satisfiersOf(s: Solver, ver: Ver, groups: OrGroup[] = importantGroups(s, ver)): string[] {
  const out: string[] = [];
  for (const group of groups) {
    for (const rel of group) {
      const hit = satisfierOf(s, rel);
      if (hit) {
        if (!out.includes(hit)) out.push(hit);
        break;
      }
    }
  }
  return out;
}

function satisfierOf(s: Solver, rel: Relation): string | undefined {
  const v = s.state.get(rel.name);
  if (v && relationMatchesVer(rel, v)) return v.pkg;
  const provs = [...(s.providedBy.get(rel.name) ?? [])]
    .filter((pv) => pv.provides.some((p) => p.name === rel.name && provideMatches(rel, p, s.arch)))
    .map((pv) => pv.pkg)
    .sort();
  return provs[0];
}

/** Install order and reasons for the marked packages. */
function finish(s: Solver, requests: Request[]): Resolution {
  const names = [...s.marked].sort();
  const requested = new Map(requests.map((r) => [r.name, r]));
  const reasons = new Map<string, Set<string>>(names.map((n) => [n, new Set<string>()]));
  const edges = new Map<string, { pre: string[]; dep: string[] }>();
  for (const n of names) {
    const ver = s.state.get(n)!;
    const pre = satisfiersOf(s, ver, ver.preDepends).filter((d) => d !== n);
    const dep = satisfiersOf(s, ver, importantGroups(s, ver).filter((g) => !ver.preDepends.includes(g))).filter((d) => d !== n);
    edges.set(n, { pre, dep });
    for (const d of [...pre, ...dep]) reasons.get(d)?.add(n);
  }
  const order = installOrder(names, edges);
  const packages: ResolvedPackage[] = order.map((n) => {
    const req = requested.get(n);
    const why = [...(reasons.get(n) ?? [])].sort();
    if (req) why.unshift(req.essential ? 'essential' : 'requested');
    return { record: s.state.get(n)!.record!, requested: req !== undefined, reasons: why };
  });
  const alreadyInstalled = requests.filter((r) => !s.marked.has(r.name) && s.state.has(r.name)).map((r) => r.name);
  return { packages, alreadyInstalled };
}

/**
 * Dependencies before dependants. Strongly connected components (dependency
 * cycles) are kept together; inside one, Pre-Depends are honoured first, then
 * the order is by name, so the output never depends on hash or insertion order.
 */
export function installOrder(names: string[], edges: Map<string, { pre: string[]; dep: string[] }>): string[] {
  const sccs = tarjan(names, (n) => {
    const e = edges.get(n);
    return e ? [...e.pre, ...e.dep].filter((d) => edges.has(d)) : [];
  });
  // Tarjan emits components in reverse topological order of the "depends on"
  // graph, i.e. dependencies first — exactly the install order we want.
  const out: string[] = [];
  for (const comp of sccs) {
    if (comp.length === 1) {
      out.push(comp[0]!);
      continue;
    }
    const inComp = new Set(comp);
    const sub = tarjan([...comp].sort(), (n) => (edges.get(n)?.pre ?? []).filter((d) => inComp.has(d)));
    for (const c of sub) out.push(...[...c].sort());
  }
  return out;
}

function tarjan(nodes: string[], succ: (n: string) => string[]): string[][] {
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const out: string[][] = [];
  // Iterative, so that long dependency chains cannot overflow the call stack.
  for (const root of nodes) {
    if (idx.has(root)) continue;
    const work: Array<{ n: string; succs: string[]; i: number }> = [];
    const enter = (n: string): void => {
      idx.set(n, index);
      low.set(n, index);
      index++;
      stack.push(n);
      onStack.add(n);
      work.push({ n, succs: [...succ(n)].sort(), i: 0 });
    };
    enter(root);
    while (work.length) {
      const top = work[work.length - 1]!;
      if (top.i < top.succs.length) {
        const m = top.succs[top.i++]!;
        if (!idx.has(m)) enter(m);
        else if (onStack.has(m)) low.set(top.n, Math.min(low.get(top.n)!, idx.get(m)!));
        continue;
      }
      work.pop();
      if (work.length) {
        const parent = work[work.length - 1]!;
        low.set(parent.n, Math.min(low.get(parent.n)!, low.get(top.n)!));
      }
      if (low.get(top.n) === idx.get(top.n)) {
        const comp: string[] = [];
        let m: string;
        do {
          m = stack.pop()!;
          onStack.delete(m);
          comp.push(m);
        } while (m !== top.n);
        out.push(comp);
      }
    }
  }
  return out;
}
