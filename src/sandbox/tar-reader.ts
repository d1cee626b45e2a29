/**
 * A streaming tar reader for layer extraction: a Writable that parses POSIX ustar,
 * pax (POSIX.1-2001) and the GNU long-name members, and hands each member's header
 * and data to a synchronous handler as the bytes arrive — nothing is buffered beyond
 * one header, so a layer of any size streams through in constant memory.
 *
 * Why not tar-stream: it decodes pax values as UTF-8 strings, which mangles binary
 * `SCHILY.xattr.security.capability` values (any byte ≥ 0x80), and file capabilities
 * must survive extraction. Here pax values stay bytes until a record says what they are.
 *
 * Also hashes every byte it is given (the whole uncompressed stream, including what
 * follows the end-of-archive blocks), so the caller can check the layer's diffId
 * without a second pass.
 */
import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';

export type TarEntryType = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'directory' | 'fifo';

export interface TarEntryHeader {
  /** The member's name as written (pax `path` and GNU 'L' applied), not cleaned. */
  name: string;
  type: TarEntryType;
  /** Permission bits incl. setuid/setgid/sticky (07777). */
  mode: number;
  uid: number;
  gid: number;
  /** Bytes of data following the header (only files have any in practice). */
  size: number;
  /** Seconds since the epoch; pax may give a fraction. */
  mtime: number;
  linkname: string;
  devmajor: number;
  devminor: number;
  /** From pax `SCHILY.xattr.NAME` (and libarchive's `LIBARCHIVE.xattr.NAME`), raw bytes. */
  xattrs: Map<string, Buffer>;
}

/** What a handler does with one member's data. */
export interface TarDataSink {
  write(chunk: Buffer): void;
  end(): void;
}

/**
 * Called once per member, synchronously; returns where its data goes, or undefined to
 * skip the data. A throw fails the stream with that error.
 */
export type TarEntryHandler = (header: TarEntryHeader) => TarDataSink | undefined;

const BLOCK = 512;
/** pax and GNU long-name members are read whole; no legitimate one comes near this. */
const MAX_META = 16 * 1024 * 1024;

const TYPES: Readonly<Record<string, TarEntryType>> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file',
  '1': 'hardlink',
  '2': 'symlink',
  '3': 'char',
  '4': 'block',
  '5': 'directory',
  '6': 'fifo',
};

interface PaxRecords {
  path?: string;
  linkpath?: string;
  size?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  xattrs: Map<string, Buffer>;
}

type State =
  | { kind: 'header' }
  /** A member's data (`sink` undefined: skipped), then `pad` bytes of padding. */
  | { kind: 'data'; left: number; pad: number; sink: TarDataSink | undefined }
  /** The data of a pax or GNU long-name member, gathered whole. */
  | { kind: 'meta'; typeflag: string; left: number; pad: number; parts: Buffer[] }
  | { kind: 'end' };

export class TarReader extends Writable {
  private state: State = { kind: 'header' };
  private pending: Buffer = Buffer.alloc(0);
  private readonly hash = createHash('sha256');
  private offset = 0;
  private global: PaxRecords = { xattrs: new Map() };
  private local: PaxRecords | undefined;
  private longName: string | undefined;
  private longLink: string | undefined;
  /** The name of the member being read, for error messages. */
  current: string | undefined;

  constructor(private readonly handler: TarEntryHandler) {
    super({ highWaterMark: 1 << 20 });
  }

  /** `sha256:<hex>` of every byte written; valid after 'finish'. */
  digest(): string {
    return `sha256:${this.hash.digest('hex')}`;
  }

  /** Bytes of the archive consumed so far. */
  get position(): number {
    return this.offset;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, callback: (err?: Error | null) => void): void {
    try {
      this.hash.update(chunk);
      this.consume(chunk);
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  override _final(callback: (err?: Error | null) => void): void {
    const s = this.state;
    if (s.kind === 'end' || (s.kind === 'header' && this.pending.length === 0 && !this.local && this.longName === undefined)) {
      // No end-of-archive blocks at a member boundary: accepted, as Go's archive/tar does.
      callback();
      return;
    }
    callback(new Error(`the tar stream ends in the middle of ${this.current === undefined ? 'a member' : JSON.stringify(this.current)} (truncated layer?)`));
  }

  private consume(chunk: Buffer): void {
    const buf = this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = Buffer.alloc(0);
    let at = 0;
    while (at < buf.length) {
      const s = this.state;
      if (s.kind === 'end') {
        this.offset += buf.length - at;
        return;
      }
      if (s.kind === 'header') {
        if (buf.length - at < BLOCK) break;
        this.header(buf.subarray(at, at + BLOCK));
        at += BLOCK;
        this.offset += BLOCK;
        continue;
      }
      const n = Math.min(s.left, buf.length - at);
      if (n > 0) {
        const part = buf.subarray(at, at + n);
        if (s.kind === 'data') s.sink?.write(part);
        else s.parts.push(Buffer.from(part));
        s.left -= n;
        at += n;
        this.offset += n;
      }
      if (s.left > 0) continue;
      const p = Math.min(s.pad, buf.length - at);
      s.pad -= p;
      at += p;
      this.offset += p;
      if (s.pad > 0) continue;
      this.memberDone();
    }
    if (at < buf.length) this.pending = Buffer.from(buf.subarray(at));
  }

  /** After a member's data and padding. */
  private memberDone(): void {
    const s = this.state;
    this.state = { kind: 'header' };
    if (s.kind === 'data') s.sink?.end();
    else if (s.kind === 'meta') this.meta(s.typeflag, Buffer.concat(s.parts));
  }

  private header(block: Buffer): void {
    if (isZero(block)) {
      // The first zero block ends the archive (GNU tar reads a lone one the same way);
      // whatever follows is hashed and otherwise ignored.
      this.state = { kind: 'end' };
      return;
    }
    if (!checksumOk(block)) throw new Error(`bad tar header checksum at byte ${this.offset}`);
    const typeflag = String.fromCharCode(block[156]!);
    if (typeflag === 'x' || typeflag === 'g' || typeflag === 'L' || typeflag === 'K') {
      const size = numeric(block, 124, 12);
      if (size > MAX_META) throw new Error(`tar ${typeflag} member of ${size} bytes at byte ${this.offset}: too large`);
      this.state = { kind: 'meta', typeflag, left: size, pad: padding(size), parts: [] };
      if (size === 0) this.memberDone();
      return;
    }
    const size = this.local?.size ?? numeric(block, 124, 12);
    const pad = padding(size);
    const type = TYPES[typeflag];
    const ustar = block.toString('latin1', 257, 263) === 'ustar\0';
    let name = this.local?.path ?? this.longName ?? this.global.path;
    if (name === undefined) {
      name = cString(block, 0, 100);
      const prefix = ustar ? cString(block, 345, 155) : '';
      if (prefix !== '') name = `${prefix}/${name}`;
    }
    this.current = name;
    if (!type) {
      const what = typeflag === 'S' ? 'GNU sparse file' : `type '${printable(typeflag)}'`;
      throw new Error(`unsupported tar member ${JSON.stringify(name)}: ${what}`);
    }
    const xattrs = new Map(this.global.xattrs);
    for (const [k, v] of this.local?.xattrs ?? []) xattrs.set(k, v);
    const h: TarEntryHeader = {
      name,
      type,
      mode: numeric(block, 100, 8) & 0o7777,
      uid: this.local?.uid ?? this.global.uid ?? numeric(block, 108, 8),
      gid: this.local?.gid ?? this.global.gid ?? numeric(block, 116, 8),
      size,
      mtime: this.local?.mtime ?? this.global.mtime ?? numeric(block, 136, 12),
      linkname: this.local?.linkpath ?? this.longLink ?? this.global.linkpath ?? cString(block, 157, 100),
      devmajor: type === 'char' || type === 'block' ? numeric(block, 329, 8) : 0,
      devminor: type === 'char' || type === 'block' ? numeric(block, 337, 8) : 0,
      xattrs,
    };
    this.local = undefined;
    this.longName = undefined;
    this.longLink = undefined;
    const sink = this.handler(h);
    if (size === 0 && pad === 0) {
      sink?.end();
      return;
    }
    this.state = { kind: 'data', left: size, pad, sink };
  }

  private meta(typeflag: string, data: Buffer): void {
    if (typeflag === 'L') this.longName = cString(data, 0, data.length);
    else if (typeflag === 'K') this.longLink = cString(data, 0, data.length);
    else if (typeflag === 'g') this.global = parsePax(data, this.global, this.offset);
    else this.local = parsePax(data, this.local ?? { xattrs: new Map() }, this.offset);
  }
}

/** POSIX pax records, "%d %s=%s\n"; values stay bytes until their key is known. */
function parsePax(data: Buffer, into: PaxRecords, offset: number): PaxRecords {
  const out: PaxRecords = { ...into, xattrs: new Map(into.xattrs) };
  let at = 0;
  while (at < data.length) {
    if (data[at] === 0) break; // NUL padding some writers leave
    const space = data.indexOf(0x20, at);
    const len = space < 0 ? NaN : Number(data.toString('latin1', at, space));
    if (!Number.isSafeInteger(len) || len <= 0 || at + len > data.length || data[at + len - 1] !== 0x0a) {
      throw new Error(`malformed pax record before byte ${offset}`);
    }
    const record = data.subarray(space + 1, at + len - 1);
    at += len;
    const eq = record.indexOf(0x3d);
    if (eq < 0) throw new Error(`malformed pax record before byte ${offset}`);
    const key = record.toString('utf8', 0, eq);
    const value = record.subarray(eq + 1);
    const text = (): string => value.toString('utf8');
    const int = (): number => {
      const n = Number(text());
      if (!/^[0-9]+$/.test(text()) || !Number.isSafeInteger(n)) throw new Error(`pax ${key}=${text()}: not a number`);
      return n;
    };
    if (key === 'path') out.path = text();
    else if (key === 'linkpath') out.linkpath = text();
    else if (key === 'size') out.size = int();
    else if (key === 'uid') out.uid = int();
    else if (key === 'gid') out.gid = int();
    else if (key === 'mtime') {
      const t = Number(text());
      if (!/^-?[0-9]+(\.[0-9]*)?$/.test(text()) || !Number.isFinite(t)) throw new Error(`pax mtime=${text()}: not a time`);
      out.mtime = t;
    } else if (key.startsWith('SCHILY.xattr.')) out.xattrs.set(key.slice('SCHILY.xattr.'.length), Buffer.from(value));
    else if (key.startsWith('LIBARCHIVE.xattr.')) {
      // libarchive: the name URL-encoded, the value base64.
      const name = decodeURIComponent(key.slice('LIBARCHIVE.xattr.'.length));
      if (!out.xattrs.has(name)) out.xattrs.set(name, Buffer.from(text(), 'base64'));
    } else if (key.startsWith('GNU.sparse.')) throw new Error('GNU sparse files are not supported');
    // Anything else (atime, ctime, uname, gname, comment, charset…) has no effect here.
  }
  return out;
}

/** ustar numeric field: octal digits (NUL/space padded) or GNU base-256. */
function numeric(block: Buffer, offset: number, width: number): number {
  const first = block[offset]!;
  if (first & 0x80) {
    let v = BigInt(first & 0x7f);
    for (let i = 1; i < width; i++) v = (v << 8n) | BigInt(block[offset + i]!);
    if (first === 0xff) v -= 1n << BigInt(8 * width - 1); // negative (mtimes before 1970)
    return Number(v);
  }
  const text = block.toString('latin1', offset, offset + width).replace(/[\0 ]+$/, '').replace(/^[ ]+/, '');
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new Error(`bad tar numeric field ${JSON.stringify(text)}`);
  return parseInt(text, 8);
}

function cString(buf: Buffer, offset: number, width: number): string {
  const end = buf.indexOf(0, offset);
  return buf.toString('utf8', offset, end < 0 || end > offset + width ? offset + width : end);
}

function checksumOk(block: Buffer): boolean {
  const stored = numeric(block, 148, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : block[i]!;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  // Some old writers summed signed chars.
  return stored === unsigned || stored === signed;
}

function isZero(block: Buffer): boolean {
  for (let i = 0; i < BLOCK; i++) if (block[i] !== 0) return false;
  return true;
}

function padding(size: number): number {
  const r = size % BLOCK;
  return r === 0 ? 0 : BLOCK - r;
}

function printable(c: string): string {
  return /^[ -~]$/.test(c) ? c : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`;
}
