/**
 * Which paths of two layers differ, and in what: content (sha256 of the data), size,
 * type, mode, uid/gid, mtime, link target, device numbers, xattrs, the name as written,
 * the entry order, or a path present on one side only. What `ocibuild verify` prints
 * for a layer whose diffId is not the reference's.
 *
 * Both layers are read side by side (layer-entries.ts), streaming. Entries are paired
 * by path in lockstep; one the other side has not reached yet waits in a map until it
 * does, so two layers in the same order (deterministic writers) hold only a few entry
 * summaries at a time, plus two positions per path for the order check. The order is
 * judged at the end: the paths outside a longest run that both layers list in the
 * same relative order are the ones that moved.
 */
import type { EntrySummary, LayerBlob } from './layer-entries.js';
import { layerEntries } from './layer-entries.js';

export type DiffField = 'content' | 'size' | 'type' | 'mode' | 'uid/gid' | 'mtime' | 'link target' | 'device' | 'xattrs' | 'name' | 'entry order';

export interface FieldDifference {
  field: DiffField;
  /** The value in layer A and in layer B, as printed. */
  a: string;
  b: string;
}

export interface PathDifference {
  /** Cleaned (no leading `./`), with a leading `/` for printing. */
  path: string;
  /** Set when the path is in one layer only. */
  onlyIn?: 'a' | 'b';
  fields: FieldDifference[];
}

export interface LayerDiff {
  /** The first `limit` differing paths, sorted by path. */
  differences: PathDifference[];
  /** Differing paths in all (differences.length, and how many more). */
  total: number;
  /** sha256 of each side's uncompressed tar, as read. */
  diffIds: { a: string; b: string };
  entries: { a: number; b: number };
}

export interface LayerDiffOptions {
  /** Differing paths kept for the report (default 50); the rest are only counted. */
  limit?: number;
}

export const DEFAULT_LIMIT = 50;

export async function diffLayers(a: LayerBlob, b: LayerBlob, opts: LayerDiffOptions = {}): Promise<LayerDiff> {
  const limit = opts.limit ?? DEFAULT_LIMIT;
  const kept = new Map<string, PathDifference>();
  // Differing paths beyond the limit: counted once each, however many fields differ.
  const overflow = new Set<string>();
  const note = (key: string, path: string, onlyIn: 'a' | 'b' | undefined, fields: FieldDifference[]): void => {
    const have = kept.get(key);
    if (have) {
      have.fields.push(...fields);
      return;
    }
    if (kept.size < limit) kept.set(key, { path: `/${path}`, ...(onlyIn ? { onlyIn } : {}), fields });
    else overflow.add(key);
  };
  // Pairs of positions (A, B) of each path both layers have, for the order check.
  const pairs: Array<{ a: number; b: number; key: string; path: string }> = [];
  const pair = (x: Keyed, y: Keyed): void => {
    pairs.push({ a: x.entry.index, b: y.entry.index, key: x.key, path: x.entry.path });
    const fields = compareEntries(x.entry, y.entry);
    if (fields.length > 0) note(x.key, x.entry.path, undefined, fields);
  };

  const itA = keyed(layerEntries(a));
  const itB = keyed(layerEntries(b));
  const pendingA = new Map<string, Keyed>();
  const pendingB = new Map<string, Keyed>();
  let diffIdA = '';
  let diffIdB = '';
  let count = { a: 0, b: 0 };
  try {
    let [ra, rb] = await Promise.all([itA.next(), itB.next()]);
    while (!ra.done || !rb.done) {
      if (!ra.done && !rb.done && ra.value.key === rb.value.key) pair(ra.value, rb.value);
      else {
        if (!ra.done) settle(ra.value, pendingB, pendingA, (other) => pair(ra.value as Keyed, other));
        if (!rb.done) settle(rb.value, pendingA, pendingB, (other) => pair(other, rb.value as Keyed));
      }
      [ra, rb] = await Promise.all([ra.done ? ra : itA.next(), rb.done ? rb : itB.next()]);
    }
    diffIdA = ra.done ? ra.value : '';
    diffIdB = rb.done ? rb.value : '';
    count = { a: itA.count(), b: itB.count() };
  } finally {
    await Promise.all([itA.return(''), itB.return('')]);
  }
  for (const [key, e] of pendingA) note(key, e.entry.path, 'a', []);
  for (const [key, e] of pendingB) note(key, e.entry.path, 'b', []);
  for (const moved of movedEntries(pairs)) {
    note(moved.key, moved.path, undefined, [{ field: 'entry order', a: `#${moved.a + 1}`, b: `#${moved.b + 1}` }]);
  }
  const differences = [...kept.values()].sort((x, y) => compareBytes(x.path, y.path));
  return { differences, total: kept.size + overflow.size, diffIds: { a: diffIdA, b: diffIdB }, entries: count };
}

/** An entry and its pairing key: the path, and which occurrence of it (a tar may repeat one). */
interface Keyed {
  key: string;
  entry: EntrySummary;
}

interface KeyedIterator extends AsyncGenerator<Keyed, string, undefined> {
  count(): number;
}

function keyed(entries: AsyncGenerator<EntrySummary, string, undefined>): KeyedIterator {
  const seen = new Map<string, number>();
  let n = 0;
  const gen = (async function* (): AsyncGenerator<Keyed, string, undefined> {
    for (;;) {
      const r = await entries.next();
      if (r.done) return r.value;
      n++;
      const k = seen.get(r.value.path) ?? 0;
      seen.set(r.value.path, k + 1);
      yield { key: k === 0 ? r.value.path : `${r.value.path}\0${k}`, entry: r.value };
    }
  })();
  const wrapped = gen as KeyedIterator;
  wrapped.count = () => n;
  // Closing this side closes the layer reader (and its pipeline) too.
  const close = gen.return.bind(gen);
  wrapped.return = async (v) => {
    await entries.return('');
    return close(v);
  };
  return wrapped;
}

/** Pairs `e` with its counterpart waiting on the other side, or makes it wait on its own. */
function settle(e: Keyed, otherPending: Map<string, Keyed>, ownPending: Map<string, Keyed>, onPair: (other: Keyed) => void): void {
  const other = otherPending.get(e.key);
  if (other) {
    otherPending.delete(e.key);
    onPair(other);
  } else ownPending.set(e.key, e);
}

/** What differs between two entries of the same path, A's value first. */
export function compareEntries(a: EntrySummary, b: EntrySummary): FieldDifference[] {
  const out: FieldDifference[] = [];
  const add = (field: DiffField, x: string, y: string): void => {
    if (x !== y) out.push({ field, a: x, b: y });
  };
  add('type', a.type, b.type);
  if (a.type === 'file' && b.type === 'file') add('content', `sha256 ${short(a.sha256)}`, `sha256 ${short(b.sha256)}`);
  add('size', String(a.size), String(b.size));
  add('mode', octal(a.mode), octal(b.mode));
  add('uid/gid', `${a.uid}:${a.gid}`, `${b.uid}:${b.gid}`);
  add('mtime', String(a.mtime), String(b.mtime));
  if (a.type === b.type && (a.type === 'symlink' || a.type === 'hardlink')) add('link target', a.linkname, b.linkname);
  if (a.type === b.type && (a.type === 'char' || a.type === 'block')) add('device', `${a.devmajor},${a.devminor}`, `${b.devmajor},${b.devminor}`);
  const xattrs = xattrDifferences(a.xattrs, b.xattrs);
  if (xattrs) out.push({ field: 'xattrs', ...xattrs });
  // The same path spelled differently (`./etc/` and `etc`): another tar, same files.
  add('name', JSON.stringify(a.name), JSON.stringify(b.name));
  return out;
}

function xattrDifferences(a: ReadonlyMap<string, Buffer>, b: ReadonlyMap<string, Buffer>): { a: string; b: string } | undefined {
  const names = [...new Set([...a.keys(), ...b.keys()])].sort();
  const differing = names.filter((n) => {
    const x = a.get(n);
    const y = b.get(n);
    return x === undefined || y === undefined || !x.equals(y);
  });
  if (differing.length === 0) return undefined;
  const show = (m: ReadonlyMap<string, Buffer>): string => differing.map((n) => `${n}=${xattrValue(m.get(n))}`).join(' ');
  return { a: show(a), b: show(b) };
}

function xattrValue(v: Buffer | undefined): string {
  if (v === undefined) return '(absent)';
  const printable = /^[\x20-\x7e]*$/.test(v.toString('latin1'));
  const text = printable ? JSON.stringify(v.toString('latin1')) : `0x${v.toString('hex')}`;
  return text.length > 40 ? `${text.slice(0, 37)}…` : text;
}

/**
 * The pairs outside a longest subsequence that is increasing in both positions
 * (patience sorting, O(n log n)): the fewest entries whose moving explains the
 * difference in order.
 */
export function movedEntries<T extends { a: number; b: number }>(pairs: readonly T[]): T[] {
  const byA = [...pairs].sort((x, y) => x.a - y.a);
  // tails[k]: index in byA of the smallest b ending an increasing run of length k+1.
  const tails: number[] = [];
  const prev = new Array<number>(byA.length).fill(-1);
  for (let i = 0; i < byA.length; i++) {
    const b = byA[i]!.b;
    let lo = 0;
    let hi = tails.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (byA[tails[mid]!]!.b < b) lo = mid + 1;
      else hi = mid;
    }
    if (lo > 0) prev[i] = tails[lo - 1]!;
    tails[lo] = i;
  }
  const inRun = new Set<number>();
  for (let i = tails.length > 0 ? tails[tails.length - 1]! : -1; i >= 0; i = prev[i]!) inRun.add(i);
  return byA.filter((_, i) => !inRun.has(i));
}

/** One line per differing path: `/etc/x: content (sha256 1a2b… vs 3c4d…), mtime (1 vs 2)`. */
export function formatPathDifference(d: PathDifference, labels: { a: string; b: string }): string {
  if (d.onlyIn) return `${d.path}: only in ${d.onlyIn === 'a' ? labels.a : labels.b}`;
  return `${d.path}: ${d.fields.map((f) => `${f.field} (${f.a} vs ${f.b})`).join(', ')}`;
}

function short(hex: string | undefined): string {
  return hex === undefined ? '(none)' : `${hex.slice(0, 16)}…`;
}

function octal(mode: number): string {
  return `0${mode.toString(8).padStart(3, '0')}`;
}

/** Byte-wise, as layers sort their paths. */
function compareBytes(x: string, y: string): number {
  return Buffer.compare(Buffer.from(x, 'utf8'), Buffer.from(y, 'utf8'));
}
