/**
 * The parsed form of a Packages index, as kept in the store's cache so that a
 * second `lock` does not parse 60,000 paragraphs again.
 *
 * Columnar and interned: every distinct string (relationship fields repeat a lot:
 * "libc6 (>= 2.34)") is stored once in a string table, each record is a row of
 * indices into it. Loading is one UTF-8 decode, one split and one object per record,
 * and equal fields share one string in memory. About half the size of
 * v8.serialize(records) and several times faster to load (bench/RESULTS.md).
 *
 * Layout (little-endian): magic "OCPI", u32 version, u32 records, u32 string bytes,
 * string table (UTF-8, NUL separated), padding to 4, i32[records × columns],
 * f64[records] sizes, u8[records] flags.
 */
import type { PackageRecord } from './types.js';

const MAGIC = 0x4950434f; // "OCPI"
const VERSION = 1;
const MULTI_ARCH: Array<PackageRecord['multiArch']> = ['no', 'same', 'foreign', 'allowed'];

const COLUMNS = [
  'package', 'version', 'architecture', 'priority', 'preDepends', 'depends', 'recommends', 'conflicts',
  'breaks', 'provides', 'filename', 'sha256', 'source', 'suggests', 'replaces', 'enhances',
] as const;
type Column = (typeof COLUMNS)[number];
const K = COLUMNS.length;

export function encodeIndexCache(records: PackageRecord[]): Buffer {
  const n = records.length;
  const strings: string[] = [''];
  const ids = new Map<string, number>([['', 0]]);
  const cols = new Int32Array(n * K);
  const sizes = new Float64Array(n);
  const flags = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const r = records[i]!;
    for (let j = 0; j < K; j++) {
      const v = (r[COLUMNS[j] as Column] as string | undefined) ?? '';
      let id = ids.get(v);
      if (id === undefined) {
        id = strings.length;
        strings.push(v);
        ids.set(v, id);
      }
      cols[i * K + j] = id;
    }
    sizes[i] = r.size;
    flags[i] = (r.essential ? 1 : 0) | (r.important ? 2 : 0) | (MULTI_ARCH.indexOf(r.multiArch) << 2);
  }
  const table = Buffer.from(strings.join('\0'), 'utf8');
  const pad = (4 - (table.length % 4)) % 4;
  const header = Buffer.alloc(16);
  header.writeUInt32LE(MAGIC, 0);
  header.writeUInt32LE(VERSION, 4);
  header.writeUInt32LE(n, 8);
  header.writeUInt32LE(table.length, 12);
  return Buffer.concat([
    header,
    table,
    Buffer.alloc(pad),
    Buffer.from(cols.buffer, cols.byteOffset, cols.byteLength),
    Buffer.from(sizes.buffer, sizes.byteOffset, sizes.byteLength),
    Buffer.from(flags.buffer, flags.byteOffset, flags.byteLength),
  ]);
}

/** Decodes a cache entry; undefined when it is not one this version wrote (then re-parse). */
export function decodeIndexCache(buf: Buffer, origin: number): PackageRecord[] | undefined {
  if (buf.length < 16 || buf.readUInt32LE(0) !== MAGIC || buf.readUInt32LE(4) !== VERSION) return undefined;
  const n = buf.readUInt32LE(8);
  const tableLen = buf.readUInt32LE(12);
  const colsAt = 16 + tableLen + ((4 - (tableLen % 4)) % 4);
  const expected = colsAt + n * K * 4 + n * 8 + n;
  if (buf.length !== expected) return undefined;
  const strings = buf.toString('utf8', 16, 16 + tableLen).split('\0');
  // Copy into an aligned buffer: typed-array views need 4/8-byte alignment.
  const body = new Uint8Array(buf.length - colsAt);
  body.set(buf.subarray(colsAt));
  const cols = new Int32Array(body.buffer, 0, n * K);
  const sizes = new Float64Array(body.buffer, n * K * 4, n);
  const flags = new Uint8Array(body.buffer, n * K * 4 + n * 8, n);
  const out = new Array<PackageRecord>(n);
  for (let i = 0; i < n; i++) {
    const b = i * K;
    const f = flags[i]!;
    const s = (j: number): string => strings[cols[b + j]!]!;
    out[i] = {
      package: s(0),
      version: s(1),
      architecture: s(2),
      multiArch: MULTI_ARCH[(f >> 2) & 3]!,
      essential: (f & 1) === 1,
      priority: s(3),
      preDepends: s(4),
      depends: s(5),
      recommends: s(6),
      conflicts: s(7),
      breaks: s(8),
      provides: s(9),
      filename: s(10),
      size: sizes[i]!,
      sha256: s(11),
      source: s(12),
      suggests: s(13),
      replaces: s(14),
      enhances: s(15),
      important: (f & 2) === 2,
      origin,
    };
  }
  return out;
}
