/**
 * Relationship fields (Debian policy 7.1): Depends, Pre-Depends, Recommends,
 * Suggests, Conflicts, Breaks, Replaces, Provides, and leniently Build-Depends.
 *
 *   field  = group *("," group)        (a trailing "," is tolerated)
 *   group  = alt *("|" alt)            (alternatives; policy 7.1)
 *   alt    = name [":" arch] ["(" op version ")"] ["[" arches "]"] *("<" profiles ">")
 *
 * White space, including the newlines of folded fields, may appear between tokens.
 * Parses are memoized by field text: thousands of packages share fields such as
 * "libc6 (>= 2.34)". The returned values are frozen and shared between callers.
 */
import { OcibuildError } from '../errors.js';
import { parseRelationOp, parseVersion, type RelationOp } from './version.js';

export type { RelationOp } from './version.js';

export interface Relation {
  name: string;
  /** 'any', 'native' or an architecture name, from "name:qualifier" (policy 7.1, Multi-Arch). */
  archQualifier?: string;
  op?: RelationOp;
  version?: string;
  /**
   * Architecture restriction list "[amd64 !i386]" as written, '!' kept (policy
   * 7.1). Only Build-Depends style fields carry one; callers filter on it.
   */
  archRestrictions?: string[];
  /**
   * Build profile restriction formulas: one inner list per "<...>", each term as
   * written ("!nocheck"). The relation applies if any formula holds entirely.
   */
  buildProfiles?: string[][];
}

/** Alternatives: the group is satisfied when any one relation is. */
export type OrGroup = Relation[];

export interface Provided {
  name: string;
  /** Provides admits only exact versions (policy 7.5), so this is the '=' version. */
  version?: string;
}

const FIELD_HINT = 'relationship fields look like "libc6 (>= 2.34), default-mta | mail-transport-agent" (Debian policy 7.1)';

function isSpace(c: number): boolean {
  return c === 32 || c === 9 || c === 10 || c === 13;
}

function isAlnum(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 97 && c <= 122) || (c >= 65 && c <= 90);
}

/**
 * Policy 5.6.1 allows lower-case letters, digits, '+', '-' and '.'; dpkg also
 * reads upper case and '_' in relationship fields, so they are accepted too.
 */
function isNameChar(c: number): boolean {
  return isAlnum(c) || c === 43 || c === 45 || c === 46 || c === 95;
}

/** Architecture names: letters, digits and '-' (dpkg). */
function isArchChar(c: number): boolean {
  return isAlnum(c) || c === 45;
}

function isOpChar(c: number): boolean {
  return c === 60 || c === 61 || c === 62;
}

/** Characters that may follow a package name in an alternative. */
function endsName(c: number): boolean {
  return Number.isNaN(c) || isSpace(c) || c === 44 || c === 124 || c === 40 || c === 58 || c === 91 || c === 60;
}

class Scanner {
  pos = 0;
  constructor(
    readonly text: string,
    readonly where: string | undefined,
  ) {}

  /** NaN at the end, like charCodeAt. */
  peek(): number {
    return this.text.charCodeAt(this.pos);
  }

  atEnd(): boolean {
    return this.pos >= this.text.length;
  }

  skipSpace(): void {
    while (this.pos < this.text.length && isSpace(this.text.charCodeAt(this.pos))) this.pos++;
  }

  take(pred: (c: number) => boolean): string {
    const start = this.pos;
    while (this.pos < this.text.length && pred(this.text.charCodeAt(this.pos))) this.pos++;
    return this.text.slice(start, this.pos);
  }

  /** An error quoting the field and, unless `at` is null, the text from `at` on. */
  fail(reason: string, at: number | null = this.pos, cause?: unknown): OcibuildError {
    const shown = this.text.replace(/\s+/g, ' ').trim();
    const field = shown.length > 200 ? `${shown.slice(0, 200)}…` : shown;
    let position = '';
    if (at !== null) {
      let near = this.text.slice(at).replace(/\s+/g, ' ').trim();
      if (near.length > 40) near = `${near.slice(0, 40)}…`;
      position = near === '' ? ' at the end' : ` at '${near}'`;
    }
    return new OcibuildError(`malformed relationship field '${field}': ${reason}${position}`, {
      where: this.where,
      hint: FIELD_HINT,
      cause,
    });
  }
}

function parseAlternative(s: Scanner): Relation {
  const start = s.pos;
  const first = s.peek();
  if (!isAlnum(first)) {
    if (s.atEnd() || first === 44 || first === 124) throw s.fail('a package name is missing');
    throw s.fail('a package name must start with a letter or digit');
  }
  const name = s.take(isNameChar);
  if (!endsName(s.peek())) {
    throw s.fail(`invalid character '${s.text[s.pos] ?? ''}' in package name '${name}'`);
  }
  const rel: Relation = { name };

  if (s.peek() === 58 /* : */) {
    s.pos++;
    const qualifier = s.take(isArchChar);
    if (qualifier === '') throw s.fail(`an architecture must follow '${name}:'`);
    rel.archQualifier = qualifier;
  }
  s.skipSpace();

  if (s.peek() === 40 /* ( */) {
    const open = s.pos;
    s.pos++;
    s.skipSpace();
    const opText = s.take(isOpChar);
    // dpkg reads a version without an operator as an exact match.
    const op = opText === '' ? '=' : parseRelationOp(opText);
    if (op === undefined) throw s.fail(`unknown version relation '${opText}' for '${name}'`, open);
    s.skipSpace();
    const version = s.take((c) => !isSpace(c) && c !== 41 && c !== 44 && c !== 124);
    if (version === '') throw s.fail(`a version is missing for '${name}'`, open);
    try {
      parseVersion(version);
    } catch (e) {
      if (e instanceof OcibuildError) throw s.fail(`bad version for '${name}' (${e.message})`, open, e);
      throw e;
    }
    s.skipSpace();
    if (s.peek() !== 41 /* ) */) throw s.fail(`expected ')' after the version of '${name}'`);
    s.pos++;
    rel.op = op;
    rel.version = version;
    s.skipSpace();
  }

  if (s.peek() === 91 /* [ */) {
    const open = s.pos;
    s.pos++;
    const arches: string[] = [];
    for (;;) {
      s.skipSpace();
      if (s.peek() === 93 /* ] */) break;
      const negated = s.peek() === 33; /* ! */
      if (negated) s.pos++;
      const arch = s.take(isArchChar);
      if (arch === '') throw s.fail(`an architecture name is expected in the restriction list of '${name}'`);
      arches.push(negated ? `!${arch}` : arch);
    }
    s.pos++;
    if (arches.length === 0) throw s.fail(`empty architecture restriction list for '${name}'`, open);
    rel.archRestrictions = arches;
    s.skipSpace();
  }

  while (s.peek() === 60 /* < */) {
    const open = s.pos;
    s.pos++;
    const terms: string[] = [];
    for (;;) {
      s.skipSpace();
      if (s.peek() === 62 /* > */) break;
      const negated = s.peek() === 33;
      if (negated) s.pos++;
      // Build profile names: lower-case letters, digits, '-', '.' and '+' (BuildProfileSpec).
      const term = s.take(isNameChar);
      if (term === '') throw s.fail(`a build profile name is expected for '${name}'`);
      terms.push(negated ? `!${term}` : term);
    }
    s.pos++;
    if (terms.length === 0) throw s.fail(`empty build profile list for '${name}'`, open);
    (rel.buildProfiles ??= []).push(terms);
    s.skipSpace();
  }

  if (!s.atEnd() && s.peek() !== 44 && s.peek() !== 124) {
    throw s.fail(`unexpected text after '${s.text.slice(start, s.pos).trim()}'`);
  }
  return rel;
}

function parseUncached(field: string, where: string | undefined): OrGroup[] {
  const s = new Scanner(field, where);
  const groups: OrGroup[] = [];
  s.skipSpace();
  if (s.atEnd()) return groups;
  for (;;) {
    const group: OrGroup = [parseAlternative(s)];
    while (s.peek() === 124 /* | */) {
      s.pos++;
      s.skipSpace();
      group.push(parseAlternative(s));
    }
    groups.push(group);
    if (s.atEnd()) break;
    // parseAlternative stops only at the end, ',' or '|'.
    s.pos++;
    s.skipSpace();
    // A trailing comma is common in hand-written control files and harmless.
    if (s.atEnd()) break;
  }
  return groups;
}

function freezeGroups(groups: OrGroup[]): OrGroup[] {
  for (const group of groups) {
    for (const rel of group) {
      if (rel.archRestrictions) Object.freeze(rel.archRestrictions);
      if (rel.buildProfiles) {
        for (const formula of rel.buildProfiles) Object.freeze(formula);
        Object.freeze(rel.buildProfiles);
      }
      Object.freeze(rel);
    }
    Object.freeze(group);
  }
  return Object.freeze(groups) as OrGroup[];
}

// Distinct field texts in a full Debian universe number in the tens of
// thousands; the bound only keeps a long-lived process from growing forever.
const CACHE_LIMIT = 1 << 18;
const relationCache = new Map<string, OrGroup[]>();
const providesCache = new Map<string, Provided[]>();

function remember<T>(cache: Map<string, T>, key: string, value: T): T {
  if (cache.size >= CACHE_LIMIT) cache.clear();
  cache.set(key, value);
  return value;
}

/**
 * Parse a relationship field into AND-ed groups of OR-ed relations. '' (an
 * absent field) gives []. The obsolete operators '<' and '>' come back as '<='
 * and '>='. Malformed text throws an OcibuildError naming `where` (e.g.
 * "Packages: curl 7.88.1-10 Depends") and the offending text.
 */
export function parseRelations(field: string, where?: string): OrGroup[] {
  const hit = relationCache.get(field);
  if (hit !== undefined) return hit;
  return remember(relationCache, field, freezeGroups(parseUncached(field, where)));
}

/**
 * Parse a Provides field: a comma-separated list of names, each with at most an
 * exact version "(= 1.2)" (policy 7.5). Alternatives, other operators,
 * architecture qualifiers and restrictions are errors.
 */
export function parseProvides(field: string, where?: string): Provided[] {
  const hit = providesCache.get(field);
  if (hit !== undefined) return hit;
  const quick = parseProvidesQuick(field);
  if (quick !== undefined) return remember(providesCache, field, quick);
  const s = new Scanner(field, where);
  const provided: Provided[] = [];
  for (const group of parseUncached(field, where)) {
    const rel = group[0];
    if (rel === undefined) continue;
    if (group.length > 1) throw s.fail(`Provides cannot have alternatives ('${formatOrGroup(group)}')`, null);
    if (rel.op !== undefined && rel.op !== '=') {
      throw s.fail(`Provides admits only '=' versions, not '${formatRelation(rel)}'`, null);
    }
    if (rel.archQualifier !== undefined || rel.archRestrictions !== undefined || rel.buildProfiles !== undefined) {
      throw s.fail(`Provides cannot qualify '${formatRelation(rel)}'`, null);
    }
    provided.push(Object.freeze(rel.version === undefined ? { name: rel.name } : { name: rel.name, version: rel.version }));
  }
  return remember(providesCache, field, Object.freeze(provided) as Provided[]);
}

// The common shapes, "a, b (= 1.2)": a whole bookworm index holds ~10,000 Provides
// fields, and this path parses them several times faster than the general scanner.
// Anything else (odd spacing, errors to report) goes the general way.
const QUICK_PROVIDE = /^([a-z0-9][a-z0-9+.-]*)(?: \(= ([0-9A-Za-z.+~:-]+)\))?$/;

function parseProvidesQuick(field: string): Provided[] | undefined {
  const out: Provided[] = [];
  for (const raw of field.split(',')) {
    const m = QUICK_PROVIDE.exec(raw.trim());
    if (!m) return undefined;
    out.push(Object.freeze(m[2] === undefined ? { name: m[1]! } : { name: m[1]!, version: m[2] }));
  }
  return Object.freeze(out) as Provided[];
}

/** "libfoo:any (>= 2.0) [amd64] <!nocheck>", for messages. */
export function formatRelation(r: Relation): string {
  let out = r.archQualifier === undefined ? r.name : `${r.name}:${r.archQualifier}`;
  if (r.op !== undefined && r.version !== undefined) out += ` (${r.op} ${r.version})`;
  if (r.archRestrictions !== undefined) out += ` [${r.archRestrictions.join(' ')}]`;
  if (r.buildProfiles !== undefined) {
    for (const formula of r.buildProfiles) out += ` <${formula.join(' ')}>`;
  }
  return out;
}

/** "libfoo (>= 2.0) | libbar", for messages. */
export function formatOrGroup(g: OrGroup): string {
  return g.map(formatRelation).join(' | ');
}
