/**
 * A deb822 parser specialised for Packages indices (Debian Policy 5.1 syntax;
 * field set per https://wiki.debian.org/DebianRepository/Format#A.22Packages.22_Indices).
 * It keeps only the fields a PackageRecord needs and skips the rest (Description is
 * most of the bytes) without copying them. bench/parse-packages.ts compares it with
 * the debian-control package; see bench/RESULTS.md.
 */
import { OcibuildError } from '../errors.js';
import type { PackageRecord } from './types.js';

const enum F {
  Package,
  Version,
  Architecture,
  MultiArch,
  Essential,
  Priority,
  PreDepends,
  Depends,
  Recommends,
  Conflicts,
  Breaks,
  Provides,
  Filename,
  Size,
  Sha256,
  Source,
  Suggests,
  Replaces,
  Enhances,
  Important,
  Protected,
  Count,
}

// Field names are case-insensitive (Policy 5.1). Candidates are bucketed by name
// length so the ~2/3 of lines holding fields we skip cost one array lookup.
const FIELDS: Array<[string, F]> = [
  ['package', F.Package],
  ['version', F.Version],
  ['architecture', F.Architecture],
  ['multi-arch', F.MultiArch],
  ['essential', F.Essential],
  ['priority', F.Priority],
  ['pre-depends', F.PreDepends],
  ['depends', F.Depends],
  ['recommends', F.Recommends],
  ['conflicts', F.Conflicts],
  ['breaks', F.Breaks],
  ['provides', F.Provides],
  ['filename', F.Filename],
  ['size', F.Size],
  ['sha256', F.Sha256],
  ['source', F.Source],
  // Only for apt's tie-breaking order (resolve.ts) and its Important flag.
  ['suggests', F.Suggests],
  ['replaces', F.Replaces],
  ['enhances', F.Enhances],
  ['important', F.Important],
  ['protected', F.Protected],
];
const BY_LENGTH: Array<Array<[string, F]> | undefined> = [];
for (const entry of FIELDS) (BY_LENGTH[entry[0].length] ??= []).push(entry);

const NON_FOLDED = new Set<F>([F.Package, F.Version, F.Architecture, F.Filename, F.Size, F.Sha256]);

const REQUIRED: Array<[F, string]> = [
  [F.Package, 'Package'],
  [F.Version, 'Version'],
  [F.Architecture, 'Architecture'],
  [F.Filename, 'Filename'],
  [F.Size, 'Size'],
  [F.Sha256, 'SHA256'],
];

const SIZE_RE = /^\d+$/;

/**
 * Parses a whole Packages file. `origin` is stored in every record; `where` (the
 * index URL or file) prefixes error locations as `<where>:<line>`.
 */
export function parsePackages(text: string | Buffer, origin: number, where: string): PackageRecord[] {
  // latin1 decodes twice as fast as utf8 here (a one-byte string; Descriptions are
  // full of UTF-8) and every field we keep is ASCII by Policy (names, versions,
  // relationships); Filename alone is re-decoded below in case a third-party archive
  // strays. Skipped fields may be mojibake; nobody reads them.
  const fromBytes = typeof text !== 'string';
  const s = fromBytes ? text.toString('latin1') : text;
  const records: PackageRecord[] = [];
  const values: Array<string | undefined> = new Array<string | undefined>(F.Count).fill(undefined);
  let inParagraph = false;
  let paragraphLine = 0;
  let current: F | undefined;
  let lineNo = 0;
  let pos = 0;
  const len = s.length;

  while (pos <= len) {
    let end = s.indexOf('\n', pos);
    if (end < 0) end = len;
    lineNo++;
    let lineEnd = end;
    if (lineEnd > pos && s.charCodeAt(lineEnd - 1) === 13 /* \r */) lineEnd--;
    const c0 = pos < lineEnd ? s.charCodeAt(pos) : -1;

    if (c0 === -1 || (c0 === 32 || c0 === 9 ? isBlank(s, pos, lineEnd) : false)) {
      // Paragraph separator (an empty or whitespace-only line).
      if (inParagraph) {
        records.push(makeRecord(values, origin, where, paragraphLine, fromBytes));
        values.fill(undefined);
        inParagraph = false;
      }
      current = undefined;
    } else if (c0 === 32 || c0 === 9) {
      // Continuation line: folded into relationship fields, ignored for skipped fields.
      if (!inParagraph) throw malformed('continuation line outside a paragraph', where, lineNo);
      if (current !== undefined) {
        if (NON_FOLDED.has(current)) throw malformed('a single-line field continues on the next line', where, lineNo);
        const more = trimmedSlice(s, pos, lineEnd);
        if (more !== '' && more !== '.') values[current] = joinFolded(values[current] ?? '', more);
      }
    } else if (c0 === 35 /* # */ && !inParagraph) {
      // deb822 allows comment lines between paragraphs; archive tools never write them.
      current = undefined;
    } else {
      const colon = s.indexOf(':', pos);
      if (colon < 0 || colon >= lineEnd) throw malformed('expected "Field: value"', where, lineNo);
      if (!inParagraph) {
        inParagraph = true;
        paragraphLine = lineNo;
      }
      const id = fieldId(s, pos, colon);
      current = id;
      if (id !== undefined) {
        if (values[id] !== undefined) throw malformed(`duplicate field ${s.slice(pos, colon)}`, where, lineNo);
        values[id] = trimmedSlice(s, colon + 1, lineEnd);
      }
    }
    pos = end + 1;
  }
  if (inParagraph) records.push(makeRecord(values, origin, where, paragraphLine, fromBytes));
  return records;
}

function makeRecord(
  v: Array<string | undefined>,
  origin: number,
  where: string,
  line: number,
  latin1: boolean,
): PackageRecord {
  for (const [id, name] of REQUIRED) {
    if (v[id] === undefined || v[id] === '') {
      const pkg = v[F.Package] ? ` (package ${v[F.Package]})` : '';
      throw new OcibuildError(`the paragraph starting at line ${line}${pkg} has no ${name} field`, {
        where: `${where}:${line}`,
        hint: 'the index is malformed; check the mirror or use another one',
      });
    }
  }
  const size = v[F.Size]!;
  if (!SIZE_RE.test(size)) throw malformed(`invalid Size ${JSON.stringify(size)}`, where, line);
  let sha256 = v[F.Sha256]!;
  if (!isLowerHex64(sha256)) sha256 = sha256.toLowerCase();
  if (!isLowerHex64(sha256)) throw malformed(`invalid SHA256 ${JSON.stringify(v[F.Sha256])}`, where, line);
  return {
    package: v[F.Package]!,
    version: v[F.Version]!,
    architecture: v[F.Architecture]!,
    multiArch: multiArch(v[F.MultiArch]),
    essential: (v[F.Essential] ?? '').toLowerCase() === 'yes',
    priority: v[F.Priority] ?? '',
    preDepends: v[F.PreDepends] ?? '',
    depends: v[F.Depends] ?? '',
    recommends: v[F.Recommends] ?? '',
    conflicts: v[F.Conflicts] ?? '',
    breaks: v[F.Breaks] ?? '',
    provides: v[F.Provides] ?? '',
    filename: latin1 ? utf8FromLatin1(v[F.Filename]!) : v[F.Filename]!,
    size: Number(size),
    sha256,
    source: v[F.Source] ?? '',
    suggests: v[F.Suggests] ?? '',
    replaces: v[F.Replaces] ?? '',
    enhances: v[F.Enhances] ?? '',
    // apt sets its Important flag for both fields (deblistparser UsePackage).
    important: (v[F.Important] ?? '').toLowerCase() === 'yes' || (v[F.Protected] ?? '').toLowerCase() === 'yes',
    origin,
  };
}

/** The field named by s[from, to), compared ASCII-case-insensitively, if we keep it. */
function fieldId(s: string, from: number, to: number): F | undefined {
  const candidates = BY_LENGTH[to - from];
  if (candidates === undefined) return undefined;
  outer: for (const [name, id] of candidates) {
    for (let i = 0; i < name.length; i++) {
      const c = s.charCodeAt(from + i);
      const t = name.charCodeAt(i);
      if (c !== t && !(c >= 65 && c <= 90 && c + 32 === t)) continue outer;
    }
    return id;
  }
  return undefined;
}

function multiArch(value: string | undefined): PackageRecord['multiArch'] {
  switch (value?.toLowerCase()) {
    case 'same':
      return 'same';
    case 'foreign':
      return 'foreign';
    case 'allowed':
      return 'allowed';
    default:
      return 'no';
  }
}

/** "a," + "b" → "a, b"; "" + "b" → "b" (a field whose value starts on the next line). */
function joinFolded(head: string, more: string): string {
  return head === '' ? more : `${head} ${more}`;
}

/** s[from, to) without surrounding spaces and tabs, in one allocation. */
function trimmedSlice(s: string, from: number, to: number): string {
  while (from < to && isSpace(s.charCodeAt(from))) from++;
  while (to > from && isSpace(s.charCodeAt(to - 1))) to--;
  return s.slice(from, to);
}

function isSpace(c: number): boolean {
  return c === 32 || c === 9;
}

function utf8FromLatin1(value: string): string {
  for (let i = 0; i < value.length; i++) {
    if (value.charCodeAt(i) > 127) return Buffer.from(value, 'latin1').toString('utf8');
  }
  return value;
}

function isLowerHex64(h: string): boolean {
  if (h.length !== 64) return false;
  for (let i = 0; i < 64; i++) {
    const c = h.charCodeAt(i);
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
  }
  return true;
}

function isBlank(s: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c !== 32 && c !== 9) return false;
  }
  return true;
}

function malformed(message: string, where: string, line: number): OcibuildError {
  return new OcibuildError(`malformed Packages index: ${message}`, {
    where: `${where}:${line}`,
    hint: 'the index is malformed; check the mirror or use another one',
  });
}
