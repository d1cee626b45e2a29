/**
 * Dependency resolution with apt as the oracle: `apt-get install --no-install-recommends`
 * on the same indices and installed set chooses the same (package, version) set.
 *
 * The marking itself is depcache.ts (apt's MarkInstall). This module does what
 * apt-get does around it — requested names checked and virtual names mapped to their
 * provider, versions pinned, every request protected and marked first, then each
 * resolved in request order, garbage swept — and turns what apt would hand to its
 * problem resolver into an error that shows the dependency chain. It then orders
 * the result for installation and records why each package is there.
 */
import { OcibuildError } from '../errors.js';
import type { InstalledPackage, PackageRecord, PackageUniverse } from './types.js';
import { compareVersions, satisfies } from './version.js';
import { formatOrGroup, type OrGroup, type Relation } from './relation.js';
import { nearestNames } from './nearest.js';
import { DepCache, type Ver } from './depcache.js';
import { installOrder } from './install-order.js';

export { installOrder } from './install-order.js';

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

interface Request {
  name: string;
  where?: string;
  essential?: boolean;
}

export function resolve(opts: ResolveOptions): Resolution {
  const cache = new DepCache(opts.universe, opts.installed ?? [], opts.recommends ?? false);
  const requests = collectRequests(cache, opts);

  // apt-get install (TryToInstall): every requested package is protected and marked
  // first without its dependencies, then each pulls in its dependencies in order.
  for (const r of requests) {
    cache.markProtected(r.name);
    cache.markInstall(r.name, false, 0, true);
  }
  for (const r of requests) cache.markInstall(r.name, true, 0, true);

  checkNothingBroken(cache, opts.universe, requests);
  cache.sweepGarbage(requests.map((r) => r.name));
  return finish(cache, requests);
}

/** Validates the requested names, applies version pins, and maps virtual names like apt-get. */
function collectRequests(cache: DepCache, opts: ResolveOptions): Request[] {
  const out: Request[] = [];
  const seen = new Set<string>();
  const unknown: Array<{ name: string; where: string | undefined; near: string[] }> = [];
  const add = (r: Request): void => {
    if (seen.has(r.name)) return;
    seen.add(r.name);
    out.push(r);
  };
  if (opts.essential) {
    // mmdebstrap's essential variant: every package apt flags Essential.
    const names = [...cache.packageNames()].filter((n) => cache.isEssential(n)).sort();
    for (const n of names) add({ name: n, essential: true });
  }
  for (const want of opts.packages) {
    const where = want.where;
    if (want.version !== undefined) pin(cache, want);
    if (cache.hasPackage(want.name)) {
      add({ name: want.name, ...(where ? { where } : {}) });
      continue;
    }
    // apt-get (tryVirtualPackage): a virtual name whose only provider (by candidate
    // version) is one package selects it; several providers are an error.
    const providers = [...new Set(cache.possibleSolutions([{ name: want.name }], 'candidate', false).map((v) => v.pkg))];
    if (providers.length === 1) {
      add({ name: providers[0]!, ...(where ? { where } : {}) });
      continue;
    }
    if (providers.length > 1) {
      throw new OcibuildError(`${want.name} is a virtual package provided by ${providers.sort().join(', ')}`, {
        where,
        hint: 'name one of the providers in apt.packages',
      });
    }
    unknown.push({ name: want.name, where, near: nearestNames(want.name, [...cache.packageNames(), ...cache.virtualNames()]) });
  }
  // Every unknown name at once, so one round of fixing the spec is enough.
  if (unknown.length === 1) {
    const [u] = unknown as [(typeof unknown)[0]];
    throw new OcibuildError(`unknown package ${u.name}: no index of the configured sources has it`, {
      where: u.where,
      hint: u.near.length ? `did you mean ${u.near.join(', ')}?` : "check the package name and the sources' suites and components",
    });
  }
  if (unknown.length > 1) {
    const guesses = unknown.filter((u) => u.near.length > 0).map((u) => `${u.name}: ${u.near.join(', ')}?`);
    throw new OcibuildError(`unknown packages ${unknown.map((u) => `${u.name}${u.where ? ` (${u.where})` : ''}`).join(', ')}: no index of the configured sources has them`, {
      where: unknown[0]!.where,
      hint: guesses.length ? `did you mean ${guesses.join('; ')}` : "check the package names and the sources' suites and components",
    });
  }
  return out;
}

function pin(cache: DepCache, want: PackageWanted): void {
  const recs = cache.recordsOf(want.name);
  const rec = recs.find((r) => r.version === want.version);
  const inst = cache.installedVer(want.name);
  if (rec) cache.setCandidate(want.name, inst && inst.version === rec.version ? inst : cache.verFromRecord(rec));
  else if (inst && inst.version === want.version) cache.setCandidate(want.name, inst);
  else if (recs.length > 0 || inst) {
    const versions = [...new Set([...recs.map((r) => r.version), ...(inst ? [inst.version] : [])])];
    throw new OcibuildError(`version ${want.version} of ${want.name} is not available`, {
      where: want.where,
      hint: `available: ${versions.sort(compareVersions).reverse().join(', ')}`,
    });
  }
}

/** What apt's CheckNothingBroken and problem resolver would complain about, as an error with the chain. */
function checkNothingBroken(cache: DepCache, universe: PackageUniverse, requests: Request[]): void {
  const problems: string[] = [];
  const explain = new Explainer(cache, universe, requests);
  for (const r of requests) {
    if (!cache.instVer(r.name)) problems.push(explain.uninstallable(r.name, r.name, new Set()) ?? `${r.name} cannot be installed`);
  }
  // A marked package's dependencies that marking never reached (apt stops at the first
  // one that fails) are unmet too, though installable: only groups with a real reason
  // are reported, unless no group has one.
  const unexplained: string[] = [];
  for (const name of cache.marked().sort()) {
    const ver = cache.instVer(name)!;
    for (const group of [...ver.preDepends, ...ver.depends]) {
      if (cache.groupSatisfied(group)) continue;
      const chain = explain.chainTo(name);
      const why = explain.group(chain, group, new Set([name]));
      if (why !== undefined) problems.push(why);
      else unexplained.push(`${chain} → ${formatOrGroup(group)} is not satisfied`);
    }
    for (const group of [...ver.conflicts, ...ver.breaks]) {
      for (const rel of group) {
        for (const hit of cache.conflictingWith(ver, rel)) {
          const kind = ver.conflicts.includes(group) ? 'conflicts with' : 'breaks';
          const state = hit.installed && cache.modeOf(hit.pkg) !== 'install' ? 'is installed' : 'is to be installed';
          problems.push(`${explain.chainTo(name)} ${kind} ${formatOrGroup([rel])}, but ${hit.pkg} ${hit.version} ${state} (${explain.chainTo(hit.pkg)})`);
        }
      }
    }
  }
  if (problems.length === 0) problems.push(...unexplained);
  if (problems.length) {
    const unique = [...new Set(problems)];
    throw new OcibuildError(`the requested packages cannot be installed together:\n    ${unique.join('\n    ')}`, {
      where: requests.find((r) => r.where)?.where,
      hint: 'pin versions (name=version), add the missing suite or component, or drop one of the conflicting packages',
    });
  }
}

/** Turns an unmet request into "app → mid → libfoo (>= 2.0), but the newest libfoo is 1.8 in bookworm/main". */
class Explainer {
  constructor(
    private readonly cache: DepCache,
    private readonly universe: PackageUniverse,
    private readonly requests: Request[],
  ) {}

  /**
   * Follows an unmet or-group down to the first reason nothing in it can be installed;
   * undefined when its candidate has none (it is installable, merely not marked: apt
   * stopped marking at another dependency), or when the path only comes back to a
   * package already on it (a dependency cycle such as libc6 ↔ libgcc-s1).
   */
  group(chain: string, group: OrGroup, seen: Set<string>): string | undefined {
    // Only versions apt would consider: each package's candidate by pin priority.
    const candidates = group.flatMap((rel) => this.offered(rel)).filter((v) => this.cache.policyCandidate(v.pkg) === v);
    const next = candidates.find((v) => !seen.has(v.pkg));
    if (!next) return candidates.length > 0 ? undefined : `${chain} → ${formatOrGroup(group)}, but ${this.whyUnsatisfiable(group)}`;
    return this.uninstallable(next.pkg, `${chain} → ${next.pkg}`, seen);
  }

  /** Why a package could not be installed, following its unsatisfiable dependencies; undefined when none is found. */
  uninstallable(name: string, chain: string, seen: Set<string>): string | undefined {
    seen.add(name);
    const recs = this.cache.recordsOf(name);
    const newest = recs.length ? recs.reduce((a, b) => (compareVersions(a.version, b.version) >= 0 ? a : b)) : undefined;
    if (!newest) return `${chain} has no installable version`;
    const ver = this.cache.verFromRecord(newest);
    for (const group of [...ver.preDepends, ...ver.depends]) {
      if (this.cache.groupSatisfied(group)) continue;
      const why = this.group(chain, group, seen);
      if (why !== undefined) return why;
    }
    for (const group of [...ver.conflicts, ...ver.breaks]) {
      for (const rel of group) {
        const hit = this.cache.conflictingWith(ver, rel)[0];
        if (hit) return `${chain} conflicts with ${formatOrGroup([rel])} (${hit.pkg} ${hit.version})`;
      }
    }
    return undefined;
  }

  /** What the indices offer for a relation, whatever the solver discarded. */
  private offered(rel: Relation): Ver[] {
    const out: Ver[] = [];
    for (const rec of this.cache.recordsOf(rel.name)) {
      const v = this.cache.verFromRecord(rec);
      if (this.cache.relationMatchesVer(rel, v)) out.push(v);
    }
    for (const v of this.cache.possibleSolutions([rel], 'candandinst', false)) if (!out.includes(v)) out.push(v);
    return out;
  }

  private whyUnsatisfiable(group: OrGroup): string {
    const parts: string[] = [];
    for (const rel of group) {
      const recs = this.cache.recordsOf(rel.name);
      const inst = this.cache.installedVer(rel.name);
      if (recs.length === 0 && !inst) {
        const provs = [...new Set(this.cache.possibleSolutions([{ name: rel.name }], 'candandinst', false).map((v) => v.pkg))];
        parts.push(provs.length ? `${rel.name} is only provided by ${provs.join(', ')}, none installable` : `no package ${rel.name} exists in the configured sources`);
        continue;
      }
      const newest = recs.reduce<PackageRecord | undefined>((a, b) => (!a || compareVersions(b.version, a.version) > 0 ? b : a), undefined);
      const cand = this.cache.policyCandidate(rel.name);
      const better = recs.find((r) => rel.op && satisfies(r.version, rel.op, rel.version!));
      if (cand && better && rel.op && !satisfies(cand.version, rel.op, rel.version!)) {
        // apt_preferences: a lower-priority suite (backports, experimental) is never chosen on its own.
        const o = this.universe.origins[better.origin];
        parts.push(
          `the candidate ${rel.name} is ${cand.version}; ${better.version}${o ? ` in ${o.suite}` : ''} would do but its suite has a lower pin priority (request ${rel.name}=${better.version} to use it)`,
        );
      } else if (newest && rel.op && !satisfies(newest.version, rel.op, rel.version!)) {
        const o = this.universe.origins[newest.origin];
        parts.push(`the newest ${rel.name} is ${newest.version}${o ? ` in ${o.suite}/${o.component}` : ''}`);
      } else if (inst && rel.op && !satisfies(inst.version, rel.op, rel.version!)) {
        parts.push(`${rel.name} ${inst.version} is installed`);
      } else if (rel.archQualifier === 'any' && newest && newest.multiArch !== 'allowed') {
        parts.push(`${rel.name} is not Multi-Arch: allowed, so ${rel.name}:any cannot be met`);
      } else if (rel.archQualifier && rel.archQualifier !== 'any' && rel.archQualifier !== 'native' && rel.archQualifier !== this.cache.arch) {
        parts.push(`architecture ${rel.archQualifier} is not the one being locked (${this.cache.arch})`);
      } else {
        parts.push(`${rel.name} cannot be installed`);
      }
    }
    return parts.join('; ');
  }

  /** The dependency path from a request to a package: "app → libfoo". */
  chainTo(target: string): string {
    const prev = new Map<string, string | null>();
    const queue: string[] = [];
    for (const r of this.requests) {
      if (this.cache.instVer(r.name) && !prev.has(r.name)) {
        prev.set(r.name, null);
        queue.push(r.name);
      }
    }
    while (queue.length) {
      const n = queue.shift()!;
      if (n === target) break;
      const ver = this.cache.instVer(n);
      if (!ver) continue;
      for (const dep of satisfiersOf(this.cache, ver, this.cache.importantGroups(ver))) {
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
}

/** For each or-group, the package in the install state that meets it (first alternative wins). */
function satisfiersOf(cache: DepCache, ver: Ver, groups: OrGroup[]): string[] {
  const out: string[] = [];
  for (const group of groups) {
    for (const rel of group) {
      const hit = satisfierOf(cache, rel);
      if (hit) {
        if (!out.includes(hit)) out.push(hit);
        break;
      }
    }
  }
  return out;
}

function satisfierOf(cache: DepCache, rel: Relation): string | undefined {
  const v = cache.instVer(rel.name);
  if (v && cache.relationMatchesVer(rel, v)) return v.pkg;
  const provs = cache
    .possibleSolutions([rel], 'candandinst', false)
    .filter((pv) => cache.instVer(pv.pkg) === pv)
    .map((pv) => pv.pkg)
    .sort();
  return provs[0];
}

/** Install order and reasons for the marked packages. */
function finish(cache: DepCache, requests: Request[]): Resolution {
  const names = cache.marked().sort();
  const requested = new Map(requests.map((r) => [r.name, r]));
  const reasons = new Map<string, Set<string>>(names.map((n) => [n, new Set<string>()]));
  const edges = new Map<string, { pre: string[]; dep: string[] }>();
  for (const n of names) {
    const ver = cache.instVer(n)!;
    const pre = satisfiersOf(cache, ver, ver.preDepends).filter((d) => d !== n);
    const dep = satisfiersOf(cache, ver, cache.importantGroups(ver).filter((g) => !ver.preDepends.includes(g))).filter((d) => d !== n);
    edges.set(n, { pre, dep });
    for (const d of [...pre, ...dep]) reasons.get(d)?.add(n);
  }
  const packages: ResolvedPackage[] = installOrder(names, edges).map((n) => {
    const req = requested.get(n);
    const why = [...(reasons.get(n) ?? [])].sort();
    if (req) why.unshift(req.essential ? 'essential' : 'requested');
    const record = cache.instVer(n)!.record;
    if (!record) throw new Error(`internal: ${n} is marked for install without an index record`);
    return { record, requested: req !== undefined, reasons: why };
  });
  const alreadyInstalled = requests.filter((r) => cache.modeOf(r.name) !== 'install' && cache.instVer(r.name)).map((r) => r.name);
  return { packages, alreadyInstalled };
}
