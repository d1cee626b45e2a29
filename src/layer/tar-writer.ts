/**
 * Deterministic layer tarballs (DESIGN.md, "Layers"): the same set of entries gives the
 * same bytes whatever order they come in, on any machine.
 *
 * The headers are built here rather than with tar-stream's pack: every byte must be
 * under our control (tar-stream picks PAX header names itself, writes PAX values as
 * UTF-8 strings — which mangles binary `security.capability` values — and may change
 * field details between versions), and the POSIX ustar/pax layout is small.
 *
 * Format (POSIX.1-2001 pax interchange format, ustar headers):
 * - one entry per path, in `sortKey` order (parents first, like `tar --sort=name`);
 *   a duplicate path, a missing parent directory or a parent that is not a directory
 *   is the caller's bug and throws: directories are never synthesized, so their
 *   modes and owners always come from the caller;
 * - directories named with a trailing `/`, mode = permission bits incl. setuid,
 *   setgid and sticky (07777), numeric uid/gid with empty uname/gname, devmajor/
 *   devminor only for devices, mtime = min(mtime, SOURCE_DATE_EPOCH) in whole
 *   seconds, no atime/ctime;
 * - a PAX extended header (typeflag 'x') only when ustar cannot hold the entry: a
 *   name that does not fit name+prefix or is not ASCII, the same for link names,
 *   size ≥ 8 GiB, ids ≥ 2^21, mtime outside ustar's range, xattrs. Its records are
 *   sorted by key and its own header name is `PaxHeaders/<basename>` — no pid, no
 *   time;
 * - xattrs: `security.capability` and `user.*` kept as `SCHILY.xattr.<name>` (the
 *   names GNU tar and containerd use); `*.overlay.*`, `trusted.*`, `security.selinux`
 *   and the rest dropped, since they describe the build host, not the image;
 * - hard links as typeflag '1'. A hard-link group (an entry and every link resolving
 *   to it) is written as: its first path in layer order holds the content, every
 *   other path links to it — so an extractor always meets the file before its links,
 *   and the bytes do not depend on which path the caller called the file. All
 *   members carry the linked entry's metadata (one inode, one set of attributes);
 * - two zero blocks at the end; no GNU extensions.
 */
import { Readable } from 'node:stream';
import type { Content } from './content.js';
import { invalidPathReason, parentPath, sortKey, type LayerEntry } from './entry.js';
import { sizeChanged, TarPacker } from './tar-packer.js';

export interface WriteTarOptions {
  /** SOURCE_DATE_EPOCH, seconds: later mtimes are clamped to it. */
  sourceDateEpoch: number;
}

const BLOCK = 512;
// ustar numeric field limits: N-1 octal digits and a NUL.
const MAX_OCTAL_7 = 0o7777777;
const MAX_OCTAL_11 = 0o77777777777;

/** The fields of one tar member, ready to encode. */
export interface TarHeaderFields {
  /** Directories end with '/'. */
  name: string;
  typeflag: '0' | '1' | '2' | '3' | '4' | '5' | '6';
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  linkname: string;
  devmajor: number;
  devminor: number;
  /** Already filtered and sorted. */
  xattrs: ReadonlyArray<readonly [string, Buffer]>;
}

/**
 * The header blocks of one member: an optional PAX extended header (header + data,
 * padded) followed by the ustar header. Pure.
 */
export function encodeHeaders(h: TarHeaderFields): Buffer {
  const pax: Array<[string, Buffer]> = [];
  const name = Buffer.from(h.name, 'utf8');
  const split = isAscii(name) ? splitName(name) : undefined;
  if (!split) pax.push(['path', name]);
  const link = Buffer.from(h.linkname, 'utf8');
  const linkFits = link.length <= 100 && isAscii(link);
  if (!linkFits) pax.push(['linkpath', link]);
  if (h.size > MAX_OCTAL_11) pax.push(['size', decimal(h.size)]);
  if (h.uid > MAX_OCTAL_7) pax.push(['uid', decimal(h.uid)]);
  if (h.gid > MAX_OCTAL_7) pax.push(['gid', decimal(h.gid)]);
  const mtimeFits = h.mtime >= 0 && h.mtime <= MAX_OCTAL_11;
  if (!mtimeFits) pax.push(['mtime', decimal(h.mtime)]);
  for (const [k, v] of h.xattrs) pax.push([`SCHILY.xattr.${k}`, v]);

  const ustar = Buffer.alloc(BLOCK);
  if (split) {
    split.name.copy(ustar, 0);
    split.prefix.copy(ustar, 345);
  } else {
    fallbackName(h.name, 100).copy(ustar, 0);
  }
  octal(ustar, 100, 8, h.mode & 0o7777);
  octal(ustar, 108, 8, h.uid > MAX_OCTAL_7 ? 0 : h.uid);
  octal(ustar, 116, 8, h.gid > MAX_OCTAL_7 ? 0 : h.gid);
  octal(ustar, 124, 12, h.size > MAX_OCTAL_11 ? 0 : h.size);
  octal(ustar, 136, 12, mtimeFits ? h.mtime : 0);
  ustar.write(h.typeflag, 156, 'latin1');
  (linkFits ? link : fallbackName(h.linkname, 100)).copy(ustar, 157);
  ustarTail(ustar);
  if (h.typeflag === '3' || h.typeflag === '4') {
    if (h.devmajor > MAX_OCTAL_7 || h.devminor > MAX_OCTAL_7) {
      throw new Error(`${h.name}: device number ${h.devmajor},${h.devminor} too large for ustar`);
    }
    octal(ustar, 329, 8, h.devmajor);
    octal(ustar, 337, 8, h.devminor);
  }
  checksum(ustar);
  if (pax.length === 0) return ustar;

  pax.sort((a, b) => Buffer.compare(Buffer.from(a[0]), Buffer.from(b[0])));
  const data = Buffer.concat(pax.map(([k, v]) => paxRecord(k, v)));
  const xhdr = Buffer.alloc(BLOCK);
  fallbackName(`PaxHeaders/${basename(h.name)}`, 100).copy(xhdr, 0);
  octal(xhdr, 100, 8, 0o644);
  octal(xhdr, 108, 8, 0);
  octal(xhdr, 116, 8, 0);
  octal(xhdr, 124, 12, data.length);
  octal(xhdr, 136, 12, mtimeFits ? h.mtime : 0);
  xhdr.write('x', 156, 'latin1');
  ustarTail(xhdr);
  checksum(xhdr);
  return Buffer.concat([xhdr, data, Buffer.alloc(padding(data.length)), ustar]);
}

/** Bytes of zero padding after `size` bytes of member data. */
export function padding(size: number): number {
  const r = size % BLOCK;
  return r === 0 ? 0 : BLOCK - r;
}

/** POSIX pax: "%d %s=%s\n", the length counting itself. */
function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.byteLength(key) + value.length + 3; // ' ', '=', '\n'
  let digits = 1;
  while (String(body + digits).length !== digits) digits++;
  const len = body + digits;
  return Buffer.concat([Buffer.from(`${len} ${key}=`, 'utf8'), value, Buffer.from('\n')]);
}

/**
 * ustar: the name may be split at a '/' into prefix (≤155 bytes) and name (≤100
 * bytes, not empty). The first such '/' is taken, so the split is a function of the
 * name alone.
 */
function splitName(name: Buffer): { name: Buffer; prefix: Buffer } | undefined {
  if (name.length <= 100) return { name, prefix: Buffer.alloc(0) };
  for (let i = Math.max(0, name.length - 101); i <= 155 && i < name.length - 1; i++) {
    if (name[i] === 0x2f) return { name: name.subarray(i + 1), prefix: name.subarray(0, i) };
  }
  return undefined;
}

/** For a name carried by PAX: a stable, printable ASCII stand-in that fits `max`. */
function fallbackName(name: string, max: number): Buffer {
  const b = Buffer.from(name, 'utf8');
  for (let i = 0; i < b.length; i++) if (b[i]! < 0x20 || b[i]! > 0x7e) b[i] = 0x5f;
  return b.subarray(0, max);
}

function basename(name: string): string {
  const trimmed = name.endsWith('/') ? name.slice(0, -1) : name;
  return trimmed.slice(trimmed.lastIndexOf('/') + 1);
}

function isAscii(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i]! > 0x7e || b[i]! < 0x20) return false;
  return true;
}

function decimal(n: number): Buffer {
  return Buffer.from(String(n), 'latin1');
}

/** Zero-padded octal digits filling width-1 bytes, then NUL (POSIX ustar). */
function octal(buf: Buffer, offset: number, width: number, value: number): void {
  buf.write(value.toString(8).padStart(width - 1, '0'), offset, width - 1, 'latin1');
}

/** magic "ustar\0", version "00"; uname/gname stay empty (numeric ids only). */
function ustarTail(buf: Buffer): void {
  buf.write('ustar\0', 257, 'latin1');
  buf.write('00', 263, 'latin1');
}

/** POSIX: the byte sum with chksum taken as 8 spaces, as 6 octal digits, NUL, space. */
function checksum(buf: Buffer): void {
  buf.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += buf[i]!;
  buf.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
}

/** Layer xattrs: `security.capability` and `user.*`; nothing describing the host. */
export function keepXattr(name: string): boolean {
  if (name.includes('.overlay.')) return false;
  return name === 'security.capability' || name.startsWith('user.');
}

interface PlannedMember {
  header: TarHeaderFields;
  path: string;
  /** Only for regular files. */
  content?: Content;
}

/**
 * Validates, orders and normalizes the entries (pure): the list of members in the
 * order they are written, hard-link groups resolved as described above.
 */
export function planTar(entries: readonly LayerEntry[], opts: WriteTarOptions): PlannedMember[] {
  const epoch = opts.sourceDateEpoch;
  if (!Number.isSafeInteger(epoch) || epoch < 0) {
    throw new Error(`sourceDateEpoch must be a non-negative integer, got ${epoch}`);
  }
  const byPath = new Map<string, LayerEntry>();
  for (const e of entries) {
    const why = invalidPathReason(e.path);
    if (why) throw new Error(`layer entry ${JSON.stringify(e.path)}: ${why}`);
    if (byPath.has(e.path)) throw new Error(`layer entry ${JSON.stringify(e.path)} given twice`);
    checkNumbers(e);
    byPath.set(e.path, e);
  }
  for (const e of entries) {
    const parent = parentPath(e.path);
    if (parent === undefined) continue;
    const p = byPath.get(parent);
    if (!p) throw new Error(`layer entry ${JSON.stringify(e.path)}: parent directory ${JSON.stringify(parent)} missing`);
    if (p.type !== 'directory') {
      throw new Error(`layer entry ${JSON.stringify(e.path)}: parent ${JSON.stringify(parent)} is a ${p.type}, not a directory`);
    }
  }

  // Hard-link groups: the linked entry's path → every path sharing its inode.
  const linkedOf = new Map<string, LayerEntry>();
  const groups = new Map<string, string[]>();
  for (const e of entries) {
    if (e.type !== 'hardlink') continue;
    const root = resolveHardlink(e, byPath);
    linkedOf.set(e.path, root);
    const g = groups.get(root.path);
    if (g) g.push(e.path);
    else groups.set(root.path, [root.path, e.path]);
  }
  const firstOfGroup = new Map<string, string>();
  for (const [rootPath, members] of groups) {
    const first = members.reduce((a, b) => (Buffer.compare(sortKey(a), sortKey(b)) <= 0 ? a : b));
    firstOfGroup.set(rootPath, first);
    linkedOf.set(rootPath, byPath.get(rootPath)!);
  }

  const keyed = entries.map((e) => ({ e, key: sortKey(e.path) }));
  keyed.sort((a, b) => Buffer.compare(a.key, b.key));

  return keyed.map(({ e }) => {
    const root = linkedOf.get(e.path);
    if (!root) return member(e.path, e, epoch);
    const first = firstOfGroup.get(root.path)!;
    if (e.path === first) return member(e.path, root, epoch);
    const m = member(e.path, root, epoch);
    m.header.typeflag = '1';
    m.header.linkname = first;
    m.header.size = 0;
    m.header.devmajor = 0;
    m.header.devminor = 0;
    m.header.xattrs = [];
    delete m.content;
    return m;
  });
}

function resolveHardlink(e: LayerEntry, byPath: Map<string, LayerEntry>): LayerEntry {
  const seen = new Set<string>([e.path]);
  let cur: LayerEntry = e;
  while (cur.type === 'hardlink') {
    const next = byPath.get(cur.target);
    if (!next) throw new Error(`hard link ${JSON.stringify(e.path)}: target ${JSON.stringify(cur.target)} is not in the layer`);
    if (seen.has(next.path)) throw new Error(`hard link ${JSON.stringify(e.path)}: cycle through ${JSON.stringify(next.path)}`);
    seen.add(next.path);
    cur = next;
  }
  if (cur.type === 'directory') throw new Error(`hard link ${JSON.stringify(e.path)} points to directory ${JSON.stringify(cur.path)}`);
  return cur;
}

function checkNumbers(e: LayerEntry): void {
  const bad = (what: string, v: number): never => {
    throw new Error(`layer entry ${JSON.stringify(e.path)}: invalid ${what} ${v}`);
  };
  if (!Number.isSafeInteger(e.uid) || e.uid < 0) bad('uid', e.uid);
  if (!Number.isSafeInteger(e.gid) || e.gid < 0) bad('gid', e.gid);
  if (!Number.isInteger(e.mode) || e.mode < 0) bad('mode', e.mode);
  if (!Number.isFinite(e.mtime)) bad('mtime', e.mtime);
  if (e.type === 'file' && (!Number.isSafeInteger(e.size) || e.size < 0)) bad('size', e.size);
  if (e.type === 'char' || e.type === 'block' || e.type === 'fifo') {
    if (!Number.isInteger(e.devmajor) || e.devmajor < 0) bad('devmajor', e.devmajor);
    if (!Number.isInteger(e.devminor) || e.devminor < 0) bad('devminor', e.devminor);
  }
}

const TYPEFLAG = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  char: '3',
  block: '4',
  directory: '5',
  fifo: '6',
} as const;

function member(path: string, e: LayerEntry, epoch: number): PlannedMember {
  const header: TarHeaderFields = {
    name: e.type === 'directory' ? `${path}/` : path,
    typeflag: TYPEFLAG[e.type],
    // The type lives in typeflag; callers passing st.mode keep only 07777.
    mode: e.mode & 0o7777,
    uid: e.uid,
    gid: e.gid,
    size: e.type === 'file' ? e.size : 0,
    mtime: Math.min(Math.floor(e.mtime), epoch),
    linkname: e.type === 'symlink' || e.type === 'hardlink' ? e.target : '',
    devmajor: e.type === 'char' || e.type === 'block' ? e.devmajor : 0,
    devminor: e.type === 'char' || e.type === 'block' ? e.devminor : 0,
    xattrs: e.type === 'file' || e.type === 'directory' ? layerXattrs(e.xattrs) : [],
  };
  return e.type === 'file' ? { header, path, content: e.content } : { header, path };
}

function layerXattrs(xattrs: Record<string, Buffer> | undefined): Array<[string, Buffer]> {
  if (!xattrs) return [];
  return Object.entries(xattrs)
    .filter(([k]) => keepXattr(k))
    .sort((a, b) => Buffer.compare(Buffer.from(a[0]), Buffer.from(b[0])));
}

// Streams (a `content` that is neither `fileContent` nor `bytesContent`) are read ahead
// of their turn when small, bounded in bytes and in how many are open at once (each
// may hold a file descriptor); large ones are streamed when reached.
const SMALL_STREAM = 256 * 1024;
const STREAM_AHEAD_BYTES = 8 * 1024 * 1024;
const STREAM_AHEAD_COUNT = 64;

/**
 * A readable tar stream of `entries` (see the module comment). Entries are gathered
 * first (they are metadata; file contents are opened lazily, a bounded number ahead),
 * so an AsyncIterable source may be consumed before the first byte comes out.
 */
export function writeTar(
  entries: Iterable<LayerEntry> | AsyncIterable<LayerEntry>,
  opts: WriteTarOptions,
): Readable {
  return Readable.from(generateTar(entries, opts), { objectMode: false, highWaterMark: 1024 * 1024 });
}

async function* generateTar(
  entries: Iterable<LayerEntry> | AsyncIterable<LayerEntry>,
  opts: WriteTarOptions,
): AsyncGenerator<Buffer> {
  const list: LayerEntry[] = [];
  for await (const e of entries) list.push(e);
  const members = planTar(list, opts);
  // Headers, padding, in-memory contents and small streams are literal bytes of the
  // packer's batches; files are read by its worker; only a large stream goes around
  // it, after everything before it has come out.
  const packer = new TarPacker();
  const ahead = new StreamsAhead(members);
  try {
    for (let i = 0; i < members.length; i++) {
      const m = members[i]!;
      const header = encodeHeaders(m.header);
      const content = m.content;
      const size = m.header.size;
      const pad = ZEROS.subarray(0, padding(size));
      if (!content) {
        packer.literal(header);
      } else if (content.bytes) {
        if (content.bytes.length !== size) throw sizeChanged(m.path, size, content.bytes.length);
        packer.literal(header);
        packer.literal(content.bytes);
        packer.literal(pad);
      } else if (content.file !== undefined) {
        packer.literal(header);
        packer.file(m.path, content.file, size, pad.length);
      } else {
        ahead.pump(i);
        const prefetched = ahead.take(i);
        ahead.pump(i + 1);
        if (prefetched) {
          const chunks = await prefetched;
          packer.literal(header);
          for (const c of chunks) packer.literal(c);
          packer.literal(pad);
        } else {
          yield* packer.flow(true);
          yield header;
          let n = 0;
          for await (const c of content() as AsyncIterable<Buffer>) {
            n += c.length;
            if (n > size) throw sizeChanged(m.path, size, n);
            yield c;
          }
          if (n !== size) throw sizeChanged(m.path, size, n);
          if (pad.length > 0) yield pad;
        }
      }
      if (packer.ready) yield* packer.flow();
    }
    packer.literal(ZEROS);
    yield* packer.flow(true);
  } finally {
    ahead.cancel();
    packer.close();
  }
}

/** Padding and the end-of-archive marker: two zero blocks. */
const ZEROS = Buffer.alloc(2 * BLOCK);

interface StreamSlot {
  bytes: number;
  data: Promise<Buffer[]>;
  stream?: Readable;
}

/** Small streams read into memory ahead of their turn, bounded in bytes and count. */
class StreamsAhead {
  private next = 0;
  private bytes = 0;
  private readonly pending = new Map<number, StreamSlot>();

  constructor(private readonly members: readonly PlannedMember[]) {}

  take(i: number): Promise<Buffer[]> | undefined {
    const slot = this.pending.get(i);
    if (!slot) return undefined;
    this.pending.delete(i);
    this.bytes -= slot.bytes;
    return slot.data;
  }

  pump(from: number): void {
    if (this.next < from) this.next = from;
    while (this.next < this.members.length && this.pending.size < STREAM_AHEAD_COUNT && this.bytes < STREAM_AHEAD_BYTES) {
      const m = this.members[this.next++]!;
      const content = m.content;
      if (!content || content.bytes || content.file !== undefined || m.header.size > SMALL_STREAM) continue;
      const slot: StreamSlot = { bytes: m.header.size, data: Promise.resolve([]) };
      slot.data = this.read(m, content, slot);
      // Rejections surface when the member is reached; until then they are held.
      slot.data.catch(() => undefined);
      this.pending.set(this.next - 1, slot);
      this.bytes += slot.bytes;
    }
  }

  private async read(m: PlannedMember, content: Content, slot: StreamSlot): Promise<Buffer[]> {
    const stream = content();
    slot.stream = stream;
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of stream as AsyncIterable<Buffer>) {
      n += c.length;
      if (n > m.header.size) throw sizeChanged(m.path, m.header.size, n);
      chunks.push(c);
    }
    if (n !== m.header.size) throw sizeChanged(m.path, m.header.size, n);
    return chunks;
  }

  cancel(): void {
    for (const p of this.pending.values()) p.stream?.destroy();
    this.pending.clear();
  }
}
