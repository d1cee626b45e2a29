/**
 * apt's dependency cache, reduced to one architecture: candidate versions, the
 * install state of every package, and the marking operations `apt-get install`
 * drives (pkgDepCache::MarkInstall, MarkKeep, MarkDelete and the mark-and-sweep of
 * automatically installed packages nobody needs). It follows apt 2.6's behaviour
 * step by step, so that ocibuild's lockfiles hold what apt would install; the
 * differential test (test/apt/oracle-differential.test.ts) holds it to that.
 *
 * Terms as in apt: a package is "protected" once the user asked for it or apt
 * found it to be the only way to meet a protected package's dependency; protected
 * packages keep their mode, and their conflicts rule other candidates out.
 */
import type { InstalledPackage, PackageRecord, PackageUniverse } from './types.js';
import { compareVersions, satisfies } from './version.js';
import { parseProvides, parseRelations, type OrGroup, type Relation } from './relation.js';

/** apt's Priority ranking (pkgCache::State::VerPriority); an absent field is 0. */
const PRIORITY_RANK: Record<string, number> = { required: 1, important: 2, standard: 3, optional: 4, extra: 5 };
/** apt_preferences(5): the installed version's priority. */
const INSTALLED_PIN = 100;

export interface Provide {
  name: string;
  version?: string;
}

/** One version of a package: an index record, or an installed package (then `installed`). */
export interface Ver {
  pkg: string;
  version: string;
  multiArch: PackageRecord['multiArch'];
  priority: number;
  preDepends: OrGroup[];
  depends: OrGroup[];
  recommends: OrGroup[];
  suggests: OrGroup[];
  conflicts: OrGroup[];
  breaks: OrGroup[];
  provides: Provide[];
  /** Source package name and version (binaries of one source upgrade together). */
  sourceName: string;
  sourceVersion: string;
  record?: PackageRecord;
  installed: boolean;
}

type Mode = 'keep' | 'install' | 'delete';
type Selector = 'candidate' | 'installed' | 'candandinst';

export class DepCache {
  readonly arch: string;
  readonly recommends: boolean;
  private readonly universe: PackageUniverse;
  private readonly byName = new Map<string, PackageRecord[]>();
  private readonly providersOf = new Map<string, Array<{ rec: PackageRecord; version?: string }>>();
  private readonly installedVers = new Map<string, Ver>();
  private readonly verOf = new Map<PackageRecord, Ver>();
  private readonly candidates = new Map<string, Ver | null>();
  /** Package-level flags: apt keeps Essential/Important per package, set by any version. */
  private readonly essentialPkgs = new Set<string>();
  private readonly importantPkgs = new Set<string>();
  private readonly requiredInstalled = new Set<string>();
  private readonly modes = new Map<string, Mode>();
  /** The version each package will have after the run (apt's InstallVer). */
  private readonly instVers = new Map<string, Ver>();
  private readonly providedBy = new Map<string, Set<Ver>>();
  private readonly protect = new Set<string>();
  private creationOrder?: Map<string, number>;

  constructor(universe: PackageUniverse, installed: InstalledPackage[], recommends: boolean) {
    this.universe = universe;
    this.arch = universe.arch;
    this.recommends = recommends;
    for (const rec of universe.records) {
      if (rec.architecture !== this.arch && rec.architecture !== 'all') continue;
      let list = this.byName.get(rec.package);
      if (!list) this.byName.set(rec.package, (list = []));
      list.push(rec);
      if (rec.essential) this.essentialPkgs.add(rec.package);
      if (rec.important) this.importantPkgs.add(rec.package);
      if (rec.provides) {
        for (const p of parseProvides(rec.provides, `${rec.package} ${rec.version}`)) {
          let provs = this.providersOf.get(p.name);
          if (!provs) this.providersOf.set(p.name, (provs = []));
          provs.push(p.version === undefined ? { rec } : { rec, version: p.version });
        }
      }
    }
    for (const inst of installed) {
      // The same version in an index is the same package version (apt merges them).
      const rec = this.byName.get(inst.package)?.find((r) => r.version === inst.version);
      const ver = rec ? { ...this.verFromRecord(rec), installed: true } : this.verFromInstalled(inst);
      if (rec) this.verOf.set(rec, ver);
      this.installedVers.set(inst.package, ver);
      if (inst.essential) this.essentialPkgs.add(inst.package);
      if (inst.priority === 'required') this.requiredInstalled.add(inst.package);
      this.setInstVer(inst.package, ver);
    }
  }

  // ---- queries ---------------------------------------------------------------

  hasPackage(name: string): boolean {
    return this.byName.has(name) || this.installedVers.has(name);
  }

  packageNames(): Iterable<string> {
    return this.byName.keys();
  }

  virtualNames(): Iterable<string> {
    return this.providersOf.keys();
  }

  recordsOf(name: string): PackageRecord[] {
    return this.byName.get(name) ?? [];
  }

  installedVer(name: string): Ver | undefined {
    return this.installedVers.get(name);
  }

  instVer(name: string): Ver | undefined {
    return this.instVers.get(name);
  }

  isEssential(name: string): boolean {
    return this.essentialPkgs.has(name);
  }

  modeOf(name: string): Mode {
    return this.modes.get(name) ?? 'keep';
  }

  /** Packages marked for a new install or an upgrade. */
  marked(): string[] {
    return [...this.modes].filter(([, m]) => m === 'install').map(([n]) => n);
  }

  verFromRecord(rec: PackageRecord): Ver {
    const cached = this.verOf.get(rec);
    if (cached) return cached;
    const ver = makeVer(rec, `${rec.package} ${rec.version}`, false);
    ver.record = rec;
    this.verOf.set(rec, ver);
    return ver;
  }

  private verFromInstalled(inst: InstalledPackage): Ver {
    return makeVer(inst, `${inst.package} ${inst.version} (installed)`, true);
  }

  /**
   * apt's default candidate (pkgPolicy): the version with the highest pin priority
   * (500 for normal suites, 100 for NotAutomatic+ButAutomaticUpgrades ones such as
   * backports, 1 for NotAutomatic ones such as experimental), the highest version
   * among equals; the installed version counts as priority 100, and a lower version
   * never replaces it (no downgrades below priority 1000).
   */
  candidateOf(name: string): Ver | null {
    const known = this.candidates.get(name);
    if (known !== undefined) return known;
    const cand = this.policyCandidate(name);
    this.candidates.set(name, cand);
    return cand;
  }

  /** The candidate by pin priority and version alone, whatever marking discarded since. */
  policyCandidate(name: string): Ver | null {
    let best: PackageRecord | undefined;
    let bestPin = -1;
    for (const rec of this.byName.get(name) ?? []) {
      const pin = this.pinOf(rec);
      if (!best || pin > bestPin || (pin === bestPin && compareVersions(rec.version, best.version) > 0)) {
        best = rec;
        bestPin = pin;
      }
    }
    const inst = this.installedVers.get(name);
    let cand: Ver | null = best ? this.verFromRecord(best) : null;
    if (inst) {
      // The installed version has at least priority 100, more if a suite still has it.
      const sameInIndex = (this.byName.get(name) ?? []).filter((r) => r.version === inst.version);
      const instPin = Math.max(INSTALLED_PIN, ...sameInIndex.map((r) => this.pinOf(r)));
      const newer = best !== undefined && compareVersions(best.version, inst.version) > 0;
      if (!newer || bestPin < instPin) cand = inst;
    }
    return cand;
  }

  pinOfVer(ver: Ver): number {
    return ver.record ? this.pinOf(ver.record) : INSTALLED_PIN;
  }

  private pinOf(rec: PackageRecord): number {
    return this.universe.origins[rec.origin]?.pin ?? 500;
  }

  /** SetCandidateVersion: a pin from `name=version`. */
  setCandidate(name: string, ver: Ver): void {
    this.candidates.set(name, ver);
  }

  /** Does the relation match this version of its target package? */
  relationMatchesVer(rel: Relation, ver: Ver): boolean {
    if (ver.pkg !== rel.name) return false;
    if (this.foreignQualifier(rel)) return false;
    // dpkg: `pkg:any` is satisfied only by a Multi-Arch: allowed package.
    if (rel.archQualifier === 'any' && ver.multiArch !== 'allowed') return false;
    return rel.op === undefined || satisfies(ver.version, rel.op, rel.version!);
  }

  provideMatches(rel: Relation, p: { version?: string }): boolean {
    if (this.foreignQualifier(rel)) return false;
    if (rel.op === undefined) return true;
    // Policy 7.5: an unversioned Provides never satisfies a versioned relation.
    return p.version !== undefined && satisfies(p.version, rel.op, rel.version!);
  }

  /**
   * Every version here is native or arch: all, so a relation qualified with another
   * architecture ("libc6-i386:x32") matches nothing: that architecture is not configured.
   */
  private foreignQualifier(rel: Relation): boolean {
    const q = rel.archQualifier;
    return q !== undefined && q !== 'any' && q !== 'native' && q !== this.arch;
  }

  private verProvides(ver: Ver, rel: Relation): boolean {
    return ver.provides.some((p) => p.name === rel.name && this.provideMatches(rel, p));
  }

  /** Is the relation met by what will be installed (apt's DepInstall)? */
  relationSatisfied(rel: Relation): boolean {
    const v = this.instVers.get(rel.name);
    if (v && this.relationMatchesVer(rel, v)) return true;
    for (const pv of this.providedBy.get(rel.name) ?? []) if (this.verProvides(pv, rel)) return true;
    return false;
  }

  groupSatisfied(group: OrGroup): boolean {
    return group.some((rel) => this.relationSatisfied(rel));
  }

  /** Could candidate versions meet the relation (apt's DepCVer)? */
  private relationSatisfiableByCandidates(rel: Relation): boolean {
    const own = this.candidateOf(rel.name);
    if (own && this.relationMatchesVer(rel, own)) return true;
    for (const p of this.providersOf.get(rel.name) ?? []) {
      if (this.candidateOf(p.rec.package)?.record === p.rec && this.provideMatches(rel, p)) return true;
    }
    for (const inst of this.installedVers.values()) {
      if (!inst.record && this.candidateOf(inst.pkg) === inst && this.verProvides(inst, rel)) return true;
    }
    return false;
  }

  /** Versions in the install state that a negative relation of `ver` hits (self excluded). */
  conflictingWith(ver: Ver, rel: Relation): Ver[] {
    const hits: Ver[] = [];
    const v = this.instVers.get(rel.name);
    if (v && v.pkg !== ver.pkg && this.relationMatchesVer(rel, v)) hits.push(v);
    for (const pv of this.providedBy.get(rel.name) ?? []) {
      if (pv.pkg === ver.pkg || hits.includes(pv)) continue;
      if (this.verProvides(pv, rel)) hits.push(pv);
    }
    return hits;
  }

  /** Pre-Depends, Depends, and Recommends when they are followed (apt's IsImportantDep). */
  importantGroups(ver: Ver): OrGroup[] {
    return this.recommends ? [...ver.preDepends, ...ver.depends, ...ver.recommends] : [...ver.preDepends, ...ver.depends];
  }

  isCritical(ver: Ver, group: OrGroup): boolean {
    return ver.preDepends.includes(group) || ver.depends.includes(group);
  }

  /** apt's InstBroken/InstPolicyBroken for the version a package will have. */
  isInstBroken(name: string): boolean {
    const ver = this.instVers.get(name);
    if (!ver) return false;
    if (this.importantGroups(ver).some((g) => !this.groupSatisfied(g))) return true;
    return [...ver.conflicts, ...ver.breaks].some((g) => g.some((rel) => this.conflictingWith(ver, rel).length > 0));
  }

  // ---- state changes ---------------------------------------------------------

  markProtected(name: string): void {
    this.protect.add(name);
  }

  private setInstVer(name: string, ver: Ver | undefined): void {
    const old = this.instVers.get(name);
    if (old) for (const p of old.provides) this.providedBy.get(p.name)?.delete(old);
    if (!ver) {
      this.instVers.delete(name);
      return;
    }
    this.instVers.set(name, ver);
    for (const p of ver.provides) {
      let set = this.providedBy.get(p.name);
      if (!set) this.providedBy.set(p.name, (set = new Set()));
      set.add(ver);
    }
  }

  private setMode(name: string, mode: Mode, ver: Ver | undefined): void {
    if (mode === 'keep') this.modes.delete(name);
    else this.modes.set(name, mode);
    this.setInstVer(name, ver);
  }

  /** IsModeChangeOk: the user is always right; protected packages keep their mode. */
  private isModeChangeOk(mode: Mode, name: string, depth: number, fromUser: boolean): boolean {
    if (depth > 3000) return false;
    if (!this.hasPackage(name)) return false;
    if (fromUser) return true;
    if (this.modeOf(name) === mode) return true;
    if (this.protect.has(name)) return false;
    // apt never removes Essential or Important packages on its own.
    if (mode === 'delete' && (this.essentialPkgs.has(name) || this.importantPkgs.has(name))) return false;
    return true;
  }

  markKeep(name: string, fromUser: boolean, depth: number): boolean {
    if (!this.isModeChangeOk('keep', name, depth, fromUser)) return false;
    if (this.modeOf(name) === 'keep') return true;
    this.setMode(name, 'keep', this.installedVers.get(name));
    return true;
  }

  markDelete(name: string, depth: number, fromUser: boolean): boolean {
    if (!this.isModeChangeOk('delete', name, depth, fromUser)) return false;
    if (this.modeOf(name) === 'delete') return true;
    // A package that is not installed is simply not installed: apt keeps it.
    if (!this.installedVers.has(name)) this.setMode(name, 'keep', undefined);
    else this.setMode(name, 'delete', undefined);
    return true;
  }

  /** MarkInstall_StateChange: target the candidate. */
  private stateChange(name: string): void {
    const cand = this.candidateOf(name)!;
    if (this.protect.has(name) && this.instVers.get(name) === cand) return;
    this.setMode(name, cand === this.installedVers.get(name) ? 'keep' : 'install', cand);
  }

  /** MarkInstall_DiscardCandidate: the candidate becomes what will be installed (often nothing). */
  private discardCandidate(name: string): void {
    this.candidates.set(name, this.instVers.get(name) ?? null);
  }

  /** MarkInstall_DiscardInstall: back to the installed state, and no other candidate. */
  private discardInstall(name: string): void {
    const cur = this.installedVers.get(name);
    const cand = this.candidateOf(name);
    if (this.modeOf(name) === 'keep' && this.instVers.get(name) === cand && cand === cur) return;
    this.setMode(name, 'keep', cur);
    this.discardCandidate(name);
  }

  /**
   * IsInstallOkDependenciesSatisfiableByCandidates: a candidate with a critical
   * dependency that neither the install state nor any candidate can meet is
   * refused up front (and loses its candidate unless protected).
   */
  private isInstallOk(name: string, autoInst: boolean): boolean {
    if (!autoInst) return true;
    const cand = this.candidateOf(name);
    if (!cand || cand === this.installedVers.get(name)) return true;
    for (const group of [...cand.preDepends, ...cand.depends]) {
      if (group.some((rel) => this.relationSatisfied(rel) || this.relationSatisfiableByCandidates(rel))) continue;
      if (!this.protect.has(name)) {
        const cur = this.installedVers.get(name);
        this.candidates.set(name, cur ?? null);
        if (this.modeOf(name) !== 'delete') this.setMode(name, 'keep', cur);
      }
      return false;
    }
    return true;
  }

  /** pkgDepCache::MarkInstall. */
  markInstall(name: string, autoInst: boolean, depth: number, fromUser: boolean): boolean {
    const wasProtected = this.protect.has(name);
    const cand = this.candidateOf(name);
    const cur = this.installedVers.get(name);
    if (wasProtected && this.modeOf(name) === 'keep' && cand !== null && cand === cur) {
      // here only to mark its dependencies as protected; no state change
    } else if (!this.isModeChangeOk('install', name, depth, fromUser)) {
      return false;
    }
    if (!cand) return false;
    if (!wasProtected && !this.isInstBroken(name)) {
      if (cand === cur) {
        if (!this.instVers.has(name)) return this.markKeep(name, false, depth + 1);
        return true;
      }
      if (this.modeOf(name) === 'install') return true;
    }
    if (!this.isInstallOk(name, autoInst)) return false;
    if (fromUser) this.stateChange(name);

    const failEarly = !wasProtected && !fromUser;
    let hasFailed = false;
    let toInstall: OrGroup[] = [];
    const toUpgrade: string[] = [];
    const delayedRemove: string[] = [];
    if (autoInst) {
      const collected = this.collectDependencies(cand, wasProtected);
      toInstall = collected.toInstall;
      if (!this.removeConflictsIfNotUpgradeable(cand, depth, collected.toRemove, toUpgrade, delayedRemove, wasProtected, fromUser)) {
        if (failEarly) return false;
        hasFailed = true;
      }
      this.collectReverseDepends(cand, toUpgrade);
    }
    if (!fromUser) this.stateChange(name);
    if (!autoInst) return !hasFailed;

    // ScopedProtected: a package being installed is protected while its dependencies are.
    if (!wasProtected) this.protect.add(name);
    try {
      this.upgradeOtherBinaries(name, cand, depth);
      if (!this.upgradeOrRemoveConflicts(depth, toUpgrade, wasProtected, fromUser)) {
        if (failEarly) {
          this.discardInstall(name);
          return false;
        }
        hasFailed = true;
      }
      if (!this.installDependencies(cand, depth, toInstall, wasProtected, fromUser)) {
        if (failEarly) {
          this.discardInstall(name);
          return false;
        }
        hasFailed = true;
      }
      for (const r of delayedRemove) {
        if (!this.markDelete(r, depth, false)) {
          if (failEarly) {
            this.discardInstall(name);
            return false;
          }
          hasFailed = true;
        }
      }
      return !hasFailed;
    } finally {
      if (!wasProtected) this.protect.delete(name);
    }
  }

  /** MarkInstall_CollectDependencies: unmet (or, for protected packages, all) relations. */
  private collectDependencies(ver: Ver, propagateProtected: boolean): { toInstall: OrGroup[]; toRemove: Relation[] } {
    const toInstall: OrGroup[] = [];
    const toRemove: Relation[] = [];
    // apt's DependsList order: Pre-Depends, Depends, Conflicts, Breaks, Recommends.
    for (const group of [...ver.preDepends, ...ver.depends]) {
      if (!this.groupSatisfied(group) || propagateProtected) toInstall.push(group);
    }
    for (const group of [...ver.conflicts, ...ver.breaks]) {
      for (const rel of group) {
        if (this.conflictingWith(ver, rel).length > 0 || propagateProtected) toRemove.push(rel);
      }
    }
    if (this.recommends) {
      for (const group of ver.recommends) if (!this.groupSatisfied(group) || propagateProtected) toInstall.push(group);
    }
    return { toInstall, toRemove };
  }

  /** MarkInstall_RemoveConflictsIfNotUpgradeable. */
  private removeConflictsIfNotUpgradeable(
    pv: Ver,
    depth: number,
    toRemove: Relation[],
    toUpgrade: string[],
    delayedRemove: string[],
    propagateProtected: boolean,
    fromUser: boolean,
  ): boolean {
    let failed = false;
    const badCandidate: string[] = [];
    const stop = (): boolean => failed && !propagateProtected && !fromUser;
    for (const rel of toRemove) {
      for (const ver of this.possibleSolutions([rel], 'candidate', true, pv.pkg)) {
        const pkg = ver.pkg;
        if (this.candidateOf(pkg) !== ver) continue;
        if (this.installedVers.get(pkg) !== ver) {
          if (this.modeOf(pkg) === 'install' && !this.markKeep(pkg, false, depth)) {
            failed = true;
            if (!propagateProtected && !fromUser) break;
          } else if (propagateProtected) {
            this.discardCandidate(pkg);
            if (!this.installedVers.has(pkg)) this.protect.add(pkg);
          } else {
            badCandidate.push(pkg);
          }
        } else if (!this.markDeleteForNotUpgradeable(depth, pkg, propagateProtected, delayedRemove)) {
          failed = true;
          if (!propagateProtected && !fromUser) break;
        }
      }
      if (stop()) break;
      for (const ver of this.possibleSolutions([rel], 'installed', true, pv.pkg)) {
        const pkg = ver.pkg;
        const cand = this.candidateOf(pkg);
        if (cand !== ver && cand !== null && !badCandidate.includes(pkg)) toUpgrade.push(pkg);
        else if (cand === this.installedVers.get(pkg)) {
          // handled by the first loop
        } else if (!this.markDeleteForNotUpgradeable(depth, pkg, propagateProtected, delayedRemove)) {
          failed = true;
          if (!propagateProtected && !fromUser) break;
        }
      }
      if (stop()) break;
    }
    return !failed;
  }

  private markDeleteForNotUpgradeable(depth: number, pkg: string, propagateProtected: boolean, delayedRemove: string[]): boolean {
    if (!propagateProtected) {
      if (this.modeOf(pkg) === 'delete') return true;
      if (!this.isModeChangeOk('delete', pkg, depth, false)) return false;
      delayedRemove.push(pkg);
      return true;
    }
    if (this.modeOf(pkg) !== 'delete' && !this.markDelete(pkg, depth + 1, false)) return false;
    this.discardCandidate(pkg);
    this.protect.add(pkg);
    return true;
  }

  /** MarkInstall_CollectReverseDepends: installed packages an upgrade would break get upgraded too. */
  private collectReverseDepends(pv: Ver, toUpgrade: string[]): void {
    const cur = this.installedVers.get(pv.pkg);
    if (!cur || cur === pv) return;
    for (const [name, inst] of this.installedVers) {
      if (this.instVers.get(name) !== inst || this.modeOf(name) === 'install') continue;
      for (const group of this.importantGroups(inst)) {
        for (const rel of group) {
          if (rel.name !== pv.pkg) continue;
          if (!this.relationMatchesVer(rel, cur) || this.relationMatchesVer(rel, pv)) continue;
          if (!toUpgrade.includes(name)) toUpgrade.push(name);
        }
      }
    }
  }

  /** MarkInstall_UpgradeOrRemoveConflicts. */
  private upgradeOrRemoveConflicts(depth: number, toUpgrade: string[], propagateProtected: boolean, fromUser: boolean): boolean {
    let failed = false;
    for (const pkg of toUpgrade) {
      if (this.modeOf(pkg) !== 'install' && !this.markInstall(pkg, true, depth + 1, false)) {
        if (!this.markDelete(pkg, depth + 1, false)) {
          failed = true;
          if (!propagateProtected && !fromUser) break;
        } else if (propagateProtected) {
          this.protect.add(pkg);
        }
      }
    }
    return !failed;
  }

  /** MarkInstall_UpgradeOtherBinaries: installed binaries of the same source follow an upgrade. */
  private upgradeOtherBinaries(name: string, ver: Ver, depth: number): void {
    const others: string[] = [];
    for (const [other, inst] of this.installedVers) {
      if (other === name || inst.sourceName !== ver.sourceName) continue;
      const cand = this.candidateOf(other);
      if (!cand || cand === inst) continue;
      if (this.modeOf(other) === 'install' && this.instVers.get(other) === cand) continue;
      if (cand.sourceVersion !== ver.sourceVersion) continue;
      others.push(other);
    }
    for (const o of others) this.markInstall(o, false, depth + 1, false);
    for (const o of others) this.markInstall(o, true, depth + 1, false);
  }

  /** MarkInstall_InstallDependencies. */
  private installDependencies(pv: Ver, depth: number, toInstall: OrGroup[], propagateProtected: boolean, fromUser: boolean): boolean {
    let failed = false;
    for (const group of toInstall) {
      let found = this.groupSatisfied(group);
      if (found && !propagateProtected) continue;
      const critical = this.isCritical(pv, group);
      if (found) {
        // Propagate protection to a satisfied dependency with exactly one solution.
        if (!critical) continue;
        const solutions = this.possibleSolutions(group, 'candandinst', false);
        if (solutions.length !== 1) continue;
        const inst = solutions[0]!.pkg;
        if (this.protect.has(inst)) continue;
        this.protect.add(inst);
        if (!this.markInstall(inst, true, depth + 1, false)) failed = true;
        continue;
      }
      const solutions = this.possibleSolutions(group, 'candidate', true);
      for (const sol of solutions) {
        if (this.candidateOf(sol.pkg) !== sol) continue;
        if (propagateProtected && critical && solutions.length === 1) {
          if (!this.markInstall(sol.pkg, false, depth + 1, false)) continue;
          this.protect.add(sol.pkg);
        }
        if (!this.markInstall(sol.pkg, true, depth + 1, false)) continue;
        found = true;
        break;
      }
      if (!found && critical) {
        failed = true;
        if (!propagateProtected && !fromUser) break;
      }
    }
    return !failed;
  }

  /**
   * getAllPossibleSolutions: the versions (of the chosen selector) that satisfy an
   * or-group; sorted, installed packages come first, then the rest, each alternative
   * in turn ordered like apt's CompareProviders. `negativeOf` names the package whose
   * Conflicts/Breaks this is (it never hits itself).
   */
  possibleSolutions(group: OrGroup, selector: Selector, sorted: boolean, negativeOf?: string): Ver[] {
    const upgrades: Ver[] = [];
    const fresh: Ver[] = [];
    for (const rel of group) {
      const list = this.targetsOf(rel, selector, negativeOf);
      if (!sorted) {
        upgrades.push(...list);
        continue;
      }
      list.sort((a, b) => this.compareProviders(rel.name, a, b));
      for (const v of list) (this.installedVers.has(v.pkg) ? upgrades : fresh).push(v);
    }
    const all = upgrades.length === 0 ? fresh : [...upgrades, ...fresh];
    const out: Ver[] = [];
    for (const v of all) if (!out.includes(v)) out.push(v);
    if (negativeOf !== undefined) return out;
    // Protected packages that are to be removed or kept uninstalled are no solution.
    return out.filter((v) => {
      if (!this.protect.has(v.pkg)) return true;
      const mode = this.modeOf(v.pkg);
      return !(mode === 'delete' || (mode === 'keep' && !this.installedVers.has(v.pkg)));
    });
  }

  private targetsOf(rel: Relation, selector: Selector, negativeOf?: string): Ver[] {
    const out: Ver[] = [];
    const pick = (name: string): Ver[] => {
      const vs: Ver[] = [];
      const cand = this.candidateOf(name);
      const inst = this.installedVers.get(name);
      if (selector !== 'installed' && cand) vs.push(cand);
      if (selector !== 'candidate' && inst && !vs.includes(inst)) vs.push(inst);
      return vs;
    };
    if (rel.name !== negativeOf) {
      for (const v of pick(rel.name)) if (this.relationMatchesVer(rel, v)) out.push(v);
    }
    const seen = new Set<string>();
    const providerNames: string[] = [];
    for (const p of this.providersOf.get(rel.name) ?? []) {
      if (!seen.has(p.rec.package)) {
        seen.add(p.rec.package);
        providerNames.push(p.rec.package);
      }
    }
    for (const inst of this.installedVers.values()) {
      if (!seen.has(inst.pkg) && inst.provides.some((p) => p.name === rel.name)) {
        seen.add(inst.pkg);
        providerNames.push(inst.pkg);
      }
    }
    for (const name of providerNames) {
      if (name === negativeOf) continue;
      for (const v of pick(name)) if (!out.includes(v) && this.verProvides(v, rel)) out.push(v);
    }
    return out;
  }

  /** apt's CompareProviders: negative when a should be tried before b. */
  private compareProviders(target: string, a: Ver, b: Ver): number {
    const order = (x: boolean, y: boolean): number => (x === y ? 0 : x ? -1 : 1);
    const prot = order(this.protect.has(a.pkg), this.protect.has(b.pkg));
    if (prot) return prot;
    if (a.multiArch === 'same' || b.multiArch === 'same') {
      const r = order(
        a.multiArch === 'same' && this.installedVers.has(a.pkg),
        b.multiArch === 'same' && this.installedVers.has(b.pkg),
      );
      if (r) return r;
    }
    const installed = order(this.installedVers.has(a.pkg), this.installedVers.has(b.pkg));
    if (installed) return installed;
    const named = order(a.pkg === target, b.pkg === target);
    if (named) return named;
    const essential = order(this.essentialPkgs.has(a.pkg), this.essentialPkgs.has(b.pkg));
    if (essential) return essential;
    const important = order(this.importantPkgs.has(a.pkg), this.importantPkgs.has(b.pkg));
    if (important) return important;
    if (a.priority !== b.priority) return a.priority - b.priority;
    // Unable to decide: apt prefers the package created later in its cache.
    return this.creationIndex(b.pkg) - this.creationIndex(a.pkg);
  }

  /**
   * apt numbers packages in the order its cache generator first meets their names:
   * walking the indices in order, each paragraph's own package, then every name its
   * Pre-Depends, Depends, Conflicts, Breaks, Recommends, Suggests, Replaces,
   * Enhances and Provides mention. Installed-only packages come after.
   */
  private creationIndex(name: string): number {
    if (!this.creationOrder) {
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
      for (const rec of this.universe.records) {
        if (rec.architecture !== this.arch && rec.architecture !== 'all') continue;
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
      for (const name of this.installedVers.keys()) see(name);
      this.creationOrder = order;
    }
    return this.creationOrder.get(name) ?? Number.MAX_SAFE_INTEGER;
  }

  /**
   * The mark-and-sweep apt-get runs after installing (DoAutomaticRemove): a new,
   * automatically installed package that no manually installed, Essential,
   * Important or installed Priority: required package reaches through Depends,
   * Pre-Depends, Recommends or Suggests is garbage and is not installed after all,
   * unless dropping it breaks a package that stays. Returns the dropped names.
   */
  sweepGarbage(manual: Iterable<string>): string[] {
    const reached = new Set<string>();
    const visit = (name: string): void => {
      const stack = [name];
      while (stack.length) {
        const n = stack.pop()!;
        if (reached.has(n)) continue;
        const ver = this.instVers.get(n);
        if (!ver) continue;
        reached.add(n);
        for (const group of [...ver.preDepends, ...ver.depends, ...ver.recommends, ...ver.suggests]) {
          for (const rel of group) {
            const real = this.instVers.get(rel.name);
            if (real && this.relationMatchesVer(rel, real)) stack.push(rel.name);
            for (const pv of this.providedBy.get(rel.name) ?? []) if (this.verProvides(pv, rel)) stack.push(pv.pkg);
          }
        }
      }
    };
    for (const n of manual) visit(n);
    for (const n of this.instVers.keys()) {
      const root = this.installedVers.has(n) || this.essentialPkgs.has(n) || this.importantPkgs.has(n);
      if (root) visit(n);
    }
    const garbage = this.marked().filter((n) => !reached.has(n) && !this.installedVers.has(n)).sort();
    const saved = new Map<string, Ver>();
    for (const n of garbage) {
      saved.set(n, this.instVers.get(n)!);
      this.setMode(n, 'keep', undefined);
    }
    // "we could have removed a new dependency of a garbage package": put back what a staying package needs.
    let changed = true;
    while (changed) {
      changed = false;
      for (const [n, ver] of saved) {
        if (this.instVers.has(n)) continue;
        const needed = [...this.instVers.values()].some((stay) =>
          this.importantGroups(stay).some((g) => !this.groupSatisfied(g) && g.some((rel) => this.relationMatchesVer(rel, ver) || this.verProvides(ver, rel))),
        );
        if (needed) {
          this.setMode(n, 'install', ver);
          changed = true;
        }
      }
    }
    return garbage.filter((n) => !this.instVers.has(n));
  }
}

/** The control fields a Ver is made of; index records and dpkg status entries both have them. */
type ControlFields = Pick<PackageRecord, 'package' | 'version' | 'multiArch' | 'preDepends' | 'depends' | 'conflicts' | 'breaks' | 'provides'> &
  Partial<Pick<PackageRecord, 'priority' | 'recommends' | 'suggests' | 'source'>>;

function makeVer(f: ControlFields, where: string, installed: boolean): Ver {
  const rel = (field: string | undefined): OrGroup[] => (field ? parseRelations(field, where) : []);
  const src = parseSource(f.source ?? '', f.package, f.version);
  return {
    pkg: f.package,
    version: f.version,
    multiArch: f.multiArch,
    priority: f.priority ? (PRIORITY_RANK[f.priority] ?? PRIORITY_RANK.extra!) : 0,
    preDepends: rel(f.preDepends),
    depends: rel(f.depends),
    // The dpkg status of a base image is not followed for Recommends or Suggests.
    recommends: installed ? [] : rel(f.recommends),
    suggests: installed ? [] : rel(f.suggests),
    conflicts: rel(f.conflicts),
    breaks: rel(f.breaks),
    provides: f.provides ? parseProvides(f.provides, where) : [],
    sourceName: src.name,
    sourceVersion: src.version,
    installed,
  };
}

/** "glibc (2.36-9)" → glibc / 2.36-9; "" → the binary's own name and version. */
function parseSource(field: string, pkg: string, version: string): { name: string; version: string } {
  if (!field) return { name: pkg, version };
  const m = /^(\S+)\s*\(([^)]+)\)/.exec(field.trim());
  return m ? { name: m[1]!, version: m[2]!.trim() } : { name: field.trim(), version };
}
