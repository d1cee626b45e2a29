/**
 * Debian package versions: parsing and dpkg's total order (deb-version(7),
 * Debian policy 5.6.12). compareVersions sits in the resolver's hot loop, so it
 * works on char codes, allocates nothing per comparison and caches parses.
 */
import { OcibuildError } from '../errors.js';

export interface ParsedVersion {
  epoch: number;
  upstream: string;
  /** '' when the version has no '-'; dpkg orders '' equal to '0'. */
  revision: string;
}

/** The relation operators of policy 7.1, after normalization. */
export type RelationOp = '<<' | '<=' | '=' | '>=' | '>>';

const VERSION_HINT = 'a Debian version is [epoch:]upstream[-revision], see deb-version(7)';

// dpkg stores the epoch in a C int and rejects anything larger.
const MAX_EPOCH = 2147483647;

const CH_0 = 48;
const CH_9 = 57;
const CH_TILDE = 126;
const CH_COLON = 58;
const CH_HYPHEN = 45;

function isDigit(c: number): boolean {
  return c >= CH_0 && c <= CH_9;
}

/** ASCII letters only: dpkg's order uses the C locale. */
function isLetter(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
}

function isSpace(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13);
}

/**
 * Weight of one character in a non-digit run (deb-version(7)): '~' sorts before
 * everything, even the end of the string; then the end; then letters; then all
 * other characters. `c` is -1 at the end of the string.
 */
function order(c: number): number {
  if (c === CH_TILDE) return -1;
  if (c < 0 || isDigit(c)) return 0;
  if (isLetter(c)) return c;
  return c + 256;
}

/**
 * dpkg's comparison of an upstream version or a revision: alternating
 * non-digit runs (compared with `order`) and digit runs (compared numerically,
 * of any length, so leading zeros do not count and nothing overflows).
 */
function compareFragment(a: string, b: string): number {
  const la = a.length;
  const lb = b.length;
  let i = 0;
  let j = 0;
  while (i < la || j < lb) {
    for (;;) {
      const ca = i < la ? a.charCodeAt(i) : -1;
      const cb = j < lb ? b.charCodeAt(j) : -1;
      const aText = ca >= 0 && !isDigit(ca);
      const bText = cb >= 0 && !isDigit(cb);
      if (!aText && !bText) break;
      const oa = order(ca);
      const ob = order(cb);
      if (oa !== ob) return oa < ob ? -1 : 1;
      // Equal weights here mean both sides hold a non-digit character.
      i++;
      j++;
    }
    while (i < la && a.charCodeAt(i) === CH_0) i++;
    while (j < lb && b.charCodeAt(j) === CH_0) j++;
    let firstDiff = 0;
    while (i < la && j < lb) {
      const ca = a.charCodeAt(i);
      const cb = b.charCodeAt(j);
      if (!isDigit(ca) || !isDigit(cb)) break;
      if (firstDiff === 0) firstDiff = ca - cb;
      i++;
      j++;
    }
    if (i < la && isDigit(a.charCodeAt(i))) return 1;
    if (j < lb && isDigit(b.charCodeAt(j))) return -1;
    if (firstDiff !== 0) return firstDiff < 0 ? -1 : 1;
  }
  return 0;
}

function invalid(v: string, reason: string, where: string | undefined): OcibuildError {
  return new OcibuildError(`invalid version '${v}': ${reason}`, { where, hint: VERSION_HINT });
}

/** deb-version(7): upstream may hold alphanumerics and . + ~ - (and ':' after an epoch). */
function upstreamCharOk(c: number): boolean {
  return isDigit(c) || isLetter(c) || c === 46 || c === 43 || c === CH_TILDE || c === CH_HYPHEN || c === CH_COLON;
}

/** deb-version(7): the revision may hold alphanumerics and . + ~ only. */
function revisionCharOk(c: number): boolean {
  return isDigit(c) || isLetter(c) || c === 46 || c === 43 || c === CH_TILDE;
}

function parseUncached(raw: string, where: string | undefined): ParsedVersion {
  // dpkg ignores leading and trailing white space but refuses it inside.
  let start = 0;
  let end = raw.length;
  while (start < end && isSpace(raw.charCodeAt(start))) start++;
  while (end > start && isSpace(raw.charCodeAt(end - 1))) end--;
  if (start === end) throw invalid(raw, 'the version string is empty', where);
  const v = start === 0 && end === raw.length ? raw : raw.slice(start, end);
  for (let k = 0; k < v.length; k++) {
    if (isSpace(v.charCodeAt(k))) throw invalid(raw, 'the version contains white space', where);
  }

  let epoch = 0;
  let rest = v;
  // The first colon ends the epoch; later colons belong to the upstream version.
  const colon = v.indexOf(':');
  if (colon >= 0) {
    const e = v.slice(0, colon);
    if (e.length === 0) throw invalid(raw, 'the epoch before ":" is empty', where);
    for (let k = 0; k < e.length; k++) {
      if (!isDigit(e.charCodeAt(k))) throw invalid(raw, `the epoch '${e}' is not a number`, where);
    }
    epoch = Number(e);
    if (epoch > MAX_EPOCH) throw invalid(raw, `the epoch '${e}' is too big`, where);
    rest = v.slice(colon + 1);
    if (rest.length === 0) throw invalid(raw, 'nothing follows the epoch', where);
  }

  // The last hyphen starts the revision, so the upstream version may hold hyphens.
  let upstream = rest;
  let revision = '';
  const hyphen = rest.lastIndexOf('-');
  if (hyphen >= 0) {
    upstream = rest.slice(0, hyphen);
    revision = rest.slice(hyphen + 1);
    if (revision.length === 0) throw invalid(raw, 'the revision after the last "-" is empty', where);
  }
  if (upstream.length === 0) throw invalid(raw, 'the upstream version is empty', where);
  // An upstream version should start with a digit; apt and dpkg only warn when it
  // does not, and such versions exist in the wild, so it is accepted here.
  for (let k = 0; k < upstream.length; k++) {
    const c = upstream.charCodeAt(k);
    if (!upstreamCharOk(c)) {
      throw invalid(raw, `invalid character '${upstream[k]}' in the upstream version`, where);
    }
  }
  for (let k = 0; k < revision.length; k++) {
    const c = revision.charCodeAt(k);
    if (!revisionCharOk(c)) {
      throw invalid(raw, `invalid character '${revision[k]}' in the revision`, where);
    }
  }
  return Object.freeze({ epoch, upstream, revision });
}

// Distinct versions in a full Debian universe number in the low hundreds of
// thousands; the bound only keeps a long-lived process from growing forever.
const CACHE_LIMIT = 1 << 19;
const cache = new Map<string, ParsedVersion>();

function parsedCached(v: string, where?: string): ParsedVersion {
  let p = cache.get(v);
  if (p === undefined) {
    p = parseUncached(v, where);
    if (cache.size >= CACHE_LIMIT) cache.clear();
    cache.set(v, p);
  }
  return p;
}

/**
 * Split a version into epoch, upstream version and revision. Throws an
 * OcibuildError (naming `where`, e.g. a package or index) when dpkg would
 * refuse the version, and also for characters dpkg merely warns about.
 * The returned object is frozen and may be shared.
 */
export function parseVersion(v: string, where?: string): ParsedVersion {
  return parsedCached(v, where);
}

/**
 * dpkg's order of two versions: negative, zero or positive (always -1, 0 or 1).
 * Versions equal in dpkg's order (e.g. "1.0" and "1.0-0", "0:1" and "1") give 0.
 * Throws an OcibuildError for an invalid version.
 */
export function compareVersions(a: string, b: string): number {
  const pa = parsedCached(a);
  if (a === b) return 0;
  const pb = parsedCached(b);
  if (pa.epoch !== pb.epoch) return pa.epoch < pb.epoch ? -1 : 1;
  const c = compareFragment(pa.upstream, pb.upstream);
  if (c !== 0) return c;
  return compareFragment(pa.revision, pb.revision);
}

/** Whether `version` stands in relation `op` to `target` (policy 7.1). */
export function satisfies(version: string, op: RelationOp, target: string): boolean {
  const c = compareVersions(version, target);
  switch (op) {
    case '<<':
      return c < 0;
    case '<=':
      return c <= 0;
    case '=':
      return c === 0;
    case '>=':
      return c >= 0;
    case '>>':
      return c > 0;
  }
}

/**
 * Read a relation operator as written in a control field. Policy 7.1 keeps the
 * obsolete '<' and '>' meaning '<=' and '>=' (as dpkg reads them), so they are
 * normalized. Returns undefined for anything else.
 */
export function parseRelationOp(s: string): RelationOp | undefined {
  switch (s) {
    case '<<':
    case '<=':
    case '=':
    case '>=':
    case '>>':
      return s;
    case '<':
      return '<=';
    case '>':
      return '>=';
    default:
      return undefined;
  }
}
