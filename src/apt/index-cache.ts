/**
 * The parsed form of a Packages index, as kept in the store's cache so that a
 * second `lock` does not parse 60,000 paragraphs again.
 *
 * Columnar and interned: every distinct string (relationship fields repeat a lot:
 * "libc6 (>= 2.34)") is stored once in a string table, each record is a row of
 * indices into it. Loading is one UTF-8 decode and one small object per record,
 * and equal fields share one string in memory; records are built lazily (below).
 * About 60% of the size of v8.serialize(records) (bench/RESULTS.md).
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
  // Copy into an aligned buffer: typed-array views need 4/8-byte alignment.
  const body = new Uint8Array(buf.length - colsAt);
  body.set(buf.subarray(colsAt));
  const index = new CachedIndex(
    buf.toString('utf8', 16, 16 + tableLen),
    new Int32Array(body.buffer, 0, n * K),
    new Float64Array(body.buffer, n * K * 4, n),
  );
  const flags = new Uint8Array(body.buffer, n * K * 4 + n * 8, n);
  const out = new Array<PackageRecord>(n);
  for (let i = 0; i < n; i++) out[i] = new CachedRecord(index, i, flags[i]!, origin);
  return out;
}

/** The same record for another origin (an index shared by two suites). */
export function withOrigin(r: PackageRecord, origin: number): PackageRecord {
  return r instanceof CachedRecord ? r.withOrigin(origin) : { ...r, origin };
}

/**
 * The string table and columns of one decoded index. Strings are cut out of the
 * table only when a field is read: resolution reads names, versions and Provides
 * of every record but the other fields of a few hundred, so most never exist.
 */
class CachedIndex {
  /** Start of string i in `table`; the NUL separators are skipped. */
  private readonly starts: Uint32Array;

  constructor(
    private readonly table: string,
    readonly cols: Int32Array,
    readonly sizes: Float64Array,
  ) {
    let count = 1;
    for (let p = table.indexOf('\0'); p !== -1; p = table.indexOf('\0', p + 1)) count++;
    this.starts = new Uint32Array(count + 1);
    let i = 1;
    for (let p = table.indexOf('\0'); p !== -1; p = table.indexOf('\0', p + 1)) this.starts[i++] = p + 1;
    this.starts[count] = table.length + 1;
  }

  field(row: number, col: number): string {
    const id = this.cols[row * K + col]!;
    return id === 0 ? '' : this.table.slice(this.starts[id]!, this.starts[id + 1]! - 1);
  }
}

/**
 * A PackageRecord backed by the cache. The fields every record needs are plain
 * properties; the rest are getters (records are never written after loading).
 */
class CachedRecord implements PackageRecord {
  readonly package: string;
  readonly version: string;
  readonly architecture: string;
  readonly multiArch: PackageRecord['multiArch'];
  readonly essential: boolean;
  readonly important: boolean;
  readonly provides: string;
  origin: number;

  constructor(
    private readonly index: CachedIndex,
    private readonly row: number,
    private readonly flags: number,
    origin: number,
  ) {
    this.package = index.field(row, 0);
    this.version = index.field(row, 1);
    this.architecture = index.field(row, 2);
    this.multiArch = MULTI_ARCH[(flags >> 2) & 3]!;
    this.essential = (flags & 1) === 1;
    this.important = (flags & 2) === 2;
    this.provides = index.field(row, 9);
    this.origin = origin;
  }

  withOrigin(origin: number): CachedRecord {
    return new CachedRecord(this.index, this.row, this.flags, origin);
  }

  get priority(): string { return this.index.field(this.row, 3); }
  get preDepends(): string { return this.index.field(this.row, 4); }
  get depends(): string { return this.index.field(this.row, 5); }
  get recommends(): string { return this.index.field(this.row, 6); }
  get conflicts(): string { return this.index.field(this.row, 7); }
  get breaks(): string { return this.index.field(this.row, 8); }
  get filename(): string { return this.index.field(this.row, 10); }
  get size(): number { return this.index.sizes[this.row]!; }
  get sha256(): string { return this.index.field(this.row, 11); }
  get source(): string { return this.index.field(this.row, 12); }
  get suggests(): string { return this.index.field(this.row, 13); }
  get replaces(): string { return this.index.field(this.row, 14); }
  get enhances(): string { return this.index.field(this.row, 15); }
}

/** A plain-object copy of any PackageRecord (for comparisons and serialization). */
export function plainRecord(r: PackageRecord): PackageRecord {
  return {
    package: r.package, version: r.version, architecture: r.architecture, multiArch: r.multiArch,
    essential: r.essential, priority: r.priority, preDepends: r.preDepends, depends: r.depends,
    recommends: r.recommends, conflicts: r.conflicts, breaks: r.breaks, provides: r.provides,
    filename: r.filename, size: r.size, sha256: r.sha256, source: r.source,
    suggests: r.suggests ?? '', replaces: r.replaces ?? '', enhances: r.enhances ?? '',
    important: r.important === true, origin: r.origin,
  };
}
