// Reads a .deb as a stream (deb(5)): the ar member debian-binary, then control.tar*
// (collected: it is small), then data.tar* whose entries are handed one by one to the
// caller with a stream of their bytes. Nothing is written to disk and no member is
// held whole in memory. Entry names are checked before the caller sees them
// (DESIGN.md "Extraction"): no absolute names, no '..', no entry under a symlink or a
// file of the same archive, hard links only to entries already seen.
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tarStream, { type Header } from 'tar-stream';
import { OcibuildError } from '../errors.js';
import { readAr, type ArMember } from './ar.js';
import { decompressor, detectCompression, type Compression } from './decompress.js';

export interface DebControl {
  /** The control paragraph, keys as written, values without the leading space; the
   *  continuation lines of a multi-line value follow a '\n' as written (with their
   *  leading space), so `${key}: ${value}` gives the original lines back. */
  fields: Map<string, string>;
  /** The control file as written. */
  controlText: string;
  md5sums?: string;
  /** One line of the conffiles file each (as written, e.g. '/etc/foo' or
   *  'remove-on-upgrade /etc/bar'), blank lines dropped. */
  conffiles: string[];
  /** Every other regular file of control.tar by name: preinst, postinst, prerm,
   *  postrm, config, triggers, templates, shlibs, symbols... */
  scripts: Map<string, Buffer>;
  /** The control.tar member's ar date (dpkg-deb writes the package's build date, or its SOURCE_DATE_EPOCH). */
  builtAt: number;
}

export type DataEntryType = 'file' | 'directory' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

export interface DataEntry {
  /** Normalized: relative, './' and empty or '.' components removed, e.g. 'usr/bin/hello'.
   *  Never '' (the archive's root entry './' is not reported). */
  path: string;
  type: DataEntryType;
  /** Permission bits including setuid, setgid and sticky (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  /** Seconds since the epoch (a PAX mtime is rounded down). */
  mtime: number;
  /** Bytes of the body (0 for everything but regular files). */
  size: number;
  /** For a symlink the target as written; for a hard link the normalized path of an
   *  entry reported earlier. */
  linkname?: string;
  /** Device numbers of char and block entries. */
  devmajor?: number;
  devminor?: number;
  /** The PAX extended header records of the entry, as decoded by tar-stream (UTF-8),
   *  including SCHILY.xattr.* (dpkg-deb writes none; binary xattr values would not
   *  survive the UTF-8 decoding). */
  pax?: Record<string, string>;
}

/**
 * Called once per data.tar entry, in archive order. `body` carries the entry's bytes
 * (empty for anything but a regular file). The callback may read it (e.g. pipe it to
 * a file) and must finish with it before its promise settles; whatever it leaves
 * unread is drained by readDeb. It must not destroy `body` while another consumer
 * reads it, nor keep it for later. A path may be reported twice only for a
 * directory (dpkg accepts that): the later entry's metadata wins.
 */
export type DataEntryHandler = (entry: DataEntry, body: Readable) => Promise<void>;

export interface ReadDebOptions {
  signal?: AbortSignal;
  /** Called with the control data before the first data entry. */
  control?: (c: DebControl) => void | Promise<void>;
}

const DAMAGED = 'the file is damaged or not a Debian package; delete it from the store and download it again';
const HOSTILE = 'the package is malformed or hostile; ocibuild refuses to unpack it';
/** A bound on control.tar (dpkg keeps it in memory too; big `templates` files reach a few MB). */
const MAX_CONTROL_BYTES = 64 * 1024 * 1024;

interface Handlers {
  control?: (c: DebControl) => void | Promise<void>;
  data?: DataEntryHandler;
}

/** The control data of a .deb, without reading data.tar. `src` is a path or a stream
 *  (which is destroyed once the control data is read). `where` names the .deb in errors. */
export async function readDebControl(src: string | Readable, where: string, signal?: AbortSignal): Promise<DebControl> {
  return walk(src, where, signal, {});
}

/**
 * Walks a .deb: collects control.tar, calls `opts.control`, then streams every
 * data.tar entry to `onEntry` (see DataEntryHandler). Resolves with the control data
 * after the last entry. A stream `src` is destroyed when done. Errors about the
 * archive are OcibuildErrors naming `where`; errors thrown by the callbacks and
 * AbortErrors pass through unchanged.
 */
export async function readDeb(src: string | Readable, where: string, onEntry: DataEntryHandler, opts: ReadDebOptions = {}): Promise<DebControl> {
  const handlers: Handlers = { data: onEntry };
  if (opts.control) handlers.control = opts.control;
  return walk(src, where, opts.signal, handlers);
}

/** Errors raised by the caller's callbacks: rethrown as they are. */
const callerErrors = new WeakSet<object>();

async function walk(src: string | Readable, where: string, signal: AbortSignal | undefined, handlers: Handlers): Promise<DebControl> {
  signal?.throwIfAborted();
  // 1 MiB reads: a sixteenth of the system calls and buffers of the default 64 KiB; the
  // ar reader hands them on in slices, and the xz decoder takes up to 1 MiB ahead anyway.
  const stream = typeof src === 'string' ? createReadStream(src, { highWaterMark: 1 << 20 }) : src;
  const fail = (message: string, hint = DAMAGED): OcibuildError => new OcibuildError(message, { where, hint });
  let reading = 'the ar archive';
  try {
    const members = readAr(stream, where, signal);
    const next = async (): Promise<ArMember | undefined> => {
      // deb(5): members whose names start with '_' may sit between the required ones and are skipped.
      for (;;) {
        const r = await members.next();
        if (r.done) return undefined;
        if (!r.value.name.startsWith('_')) return r.value;
      }
    };

    const first = await members.next();
    if (first.done || first.value.name !== 'debian-binary') {
      throw fail(`not a Debian package: the first ar member is ${first.done ? 'missing' : `"${first.value.name}"`}, not "debian-binary"`);
    }
    reading = 'debian-binary';
    const version = (await collect(first.value.body, 64, () => fail('debian-binary is larger than a format version'))).toString('latin1');
    // deb(5): format 2.x; dpkg reads the first line and accepts any minor version.
    if (!/^2\.[0-9]+\n/.test(version)) {
      throw fail(`unsupported .deb format version "${version.split('\n')[0]}" in debian-binary (expected 2.x)`);
    }

    const controlMember = await next();
    if (!controlMember || !controlMember.name.startsWith('control.tar')) {
      throw fail(`missing control.tar member (found ${controlMember ? `"${controlMember.name}"` : 'the end of the archive'})`);
    }
    reading = controlMember.name;
    const control: DebControl = { ...(await readControlTar(controlMember.body, memberCompression(controlMember.name, where), where, signal)), builtAt: controlMember.mtime };
    if (handlers.control) await callerStep(() => handlers.control!(control));
    if (!handlers.data) return control;

    const dataMember = await next();
    if (!dataMember || !dataMember.name.startsWith('data.tar')) {
      throw fail(`missing data.tar member (found ${dataMember ? `"${dataMember.name}"` : 'the end of the archive'})`);
    }
    reading = dataMember.name;
    await readDataTar(dataMember.body, memberCompression(dataMember.name, where), where, handlers.data, signal);
    // deb(5): members after data.tar are ignored.
    return control;
  } catch (err) {
    throw asUserError(err, where, reading, typeof src === 'string' ? src : undefined, signal);
  } finally {
    stream.destroy();
  }
}

function asUserError(err: unknown, where: string, reading: string, path: string | undefined, signal: AbortSignal | undefined): unknown {
  if (signal?.aborted && (err === signal.reason || (err as Error | undefined)?.name === 'AbortError')) return err;
  if (err instanceof OcibuildError) return err.where ? err : new OcibuildError(err.message, { where, hint: err.hint, exitCode: err.exitCode, cause: err.cause });
  if (typeof err !== 'object' || err === null || callerErrors.has(err)) return err;
  if ((err as Error).name === 'AbortError') return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (path !== undefined && (code === 'ENOENT' || code === 'EACCES' || code === 'EISDIR' || code === 'EIO')) {
    return new OcibuildError(`cannot read ${path}: ${(err as Error).message}`, { where, cause: err });
  }
  // Decompressor and tar parser errors: the member is damaged.
  return new OcibuildError(`cannot read ${reading}: ${(err as Error).message}`, { where, hint: DAMAGED, cause: err });
}

async function callerStep(step: () => void | Promise<void>): Promise<void> {
  try {
    await step();
  } catch (err) {
    if (typeof err === 'object' && err !== null) callerErrors.add(err);
    throw err;
  }
}

function memberCompression(name: string, where: string): Compression {
  const kind = detectCompression(name);
  if (kind === undefined) {
    throw new OcibuildError(`ar member "${name}" has an unknown compression suffix`, {
      where,
      hint: 'deb(5) allows .tar, .tar.gz, .tar.xz and .tar.zst; the package may need a newer tool',
    });
  }
  if (kind === 'bz2') {
    throw new OcibuildError(`${name}: bzip2-compressed data.tar is not supported`, {
      where,
      hint: 'Debian stopped building data.tar.bz2 long ago; rebuild the package with `dpkg-deb -Zxz` (or gzip, zstd)',
    });
  }
  return kind;
}

/** Reads a small stream whole, failing past `limit` bytes. */
async function collect(body: AsyncIterable<Buffer>, limit: number, tooBig: () => Error): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > limit) throw tooBig();
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

async function drain(body: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of body);
}

// ---------------------------------------------------------------------------
// entry names

/**
 * The normalized form of a tar entry name or hard link target: components split on
 * '/', empty and '.' components dropped. Names that could leave the root (absolute,
 * or with any '..' component, even one that would normalize inside) are refused:
 * dpkg-deb never writes them, so such an archive is malformed or hostile.
 */
export function normalizeArchivePath(name: string): { path: string } | { problem: string } {
  if (name.startsWith('/')) return { problem: 'is an absolute path' };
  const parts = name.split('/').filter((c) => c !== '' && c !== '.');
  if (parts.includes('..')) return { problem: 'has a ".." component' };
  // tar-stream decodes names as UTF-8; a replacement character means bytes were lost.
  if (name.includes('\uFFFD')) return { problem: 'is not valid UTF-8' };
  return { path: parts.join('/') };
}

// ---------------------------------------------------------------------------
// control.tar

async function readControlTar(body: Readable, kind: Compression, where: string, signal: AbortSignal | undefined): Promise<Omit<DebControl, 'builtAt'>> {
  const fail = (message: string): OcibuildError => new OcibuildError(message, { where, hint: DAMAGED });
  const files = new Map<string, Buffer>();
  let total = 0;
  await walkTar(body, kind, signal, async (header, entry) => {
    const name = normalizeArchivePath(header.name);
    if ('problem' in name) throw new OcibuildError(`control.tar entry "${header.name}" ${name.problem}`, { where, hint: HOSTILE });
    if (header.type === 'directory' && name.path === '') return drain(entry);
    if (header.type !== 'file' && header.type !== 'contiguous-file') {
      throw fail(`control.tar entry "${header.name}" is a ${header.type ?? 'special entry'}; only regular files belong there`);
    }
    if (name.path.includes('/')) throw fail(`control.tar entry "${header.name}" is in a subdirectory; control files are flat`);
    const data = await collect(entry, MAX_CONTROL_BYTES - total, () => fail(`control.tar is larger than ${MAX_CONTROL_BYTES} bytes`));
    total += data.length;
    files.set(name.path, data);
  });

  const controlFile = files.get('control');
  if (controlFile === undefined) throw fail('control.tar has no "control" file');
  const controlText = controlFile.toString('utf8');
  const fields = parseControlParagraph(controlText, where);
  if (!fields.has('Package')) throw fail('the control file has no Package field');
  const md5sums = files.get('md5sums')?.toString('utf8');
  const conffiles = (files.get('conffiles')?.toString('utf8') ?? '').split('\n').map((l) => l.trimEnd()).filter((l) => l.trim() !== '');
  const scripts = new Map<string, Buffer>();
  for (const [name, data] of [...files].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (name !== 'control' && name !== 'md5sums' && name !== 'conffiles') scripts.set(name, data);
  }
  const control: Omit<DebControl, 'builtAt'> = { fields, controlText, conffiles, scripts };
  if (md5sums !== undefined) control.md5sums = md5sums;
  return control;
}

/** deb-control(5): one paragraph of "Key: value" lines, continuation lines start with
 *  a space or tab. Parsing stops at the first blank line after a field. */
export function parseControlParagraph(text: string, where: string): Map<string, string> {
  const fields = new Map<string, string>();
  let key: string | undefined;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trimEnd();
    if (line.trim() === '') {
      if (fields.size > 0) break;
      continue;
    }
    if (line.startsWith('#')) continue;
    if (line.startsWith(' ') || line.startsWith('\t')) {
      if (key === undefined) throw controlError(`line ${i + 1} continues a field but no field precedes it`, where);
      fields.set(key, `${fields.get(key)}\n${line}`);
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) throw controlError(`line ${i + 1} is not a "Field: value" line: ${JSON.stringify(line)}`, where);
    key = line.slice(0, colon);
    if (fields.has(key)) throw controlError(`field ${key} appears twice`, where);
    fields.set(key, line.slice(colon + 1).trim());
  }
  return fields;
}

function controlError(message: string, where: string): OcibuildError {
  return new OcibuildError(`malformed control file: ${message}`, { where, hint: DAMAGED });
}

// ---------------------------------------------------------------------------
// data.tar

const TYPES: Readonly<Record<string, DataEntryType>> = {
  'file': 'file',
  'contiguous-file': 'file',
  'directory': 'directory',
  'symlink': 'symlink',
  'link': 'hardlink',
  'character-device': 'char',
  'block-device': 'block',
  'fifo': 'fifo',
};

/** tar-stream's header, as it really is: `type` is null for typeflags it does not know,
 *  and `pax` holds the entry's PAX records decoded as UTF-8. */
type PaxHeaders = Omit<Header, 'type' | 'pax'> & { type: Header['type'] | null; pax?: Record<string, string> | null };

async function readDataTar(body: Readable, kind: Compression, where: string, onEntry: DataEntryHandler, signal: AbortSignal | undefined): Promise<void> {
  const seen = new Map<string, DataEntryType>();
  await walkTar(body, kind, signal, async (header, entry) => {
    const e = dataEntry(header, where, seen);
    if (e === undefined) return drain(entry);
    seen.set(e.path, e.type);

    const { out, done } = relay(entry);
    done.catch(() => undefined); // observed below, or moot once the callback failed
    await callerStep(() => onEntry(e, out)).catch((err: unknown) => {
      out.destroy();
      throw err;
    });
    // Whatever the callback left unread is discarded.
    if (!out.readableEnded && !out.destroyed) out.resume();
    await done;
  });
}

/**
 * The caller's view of an entry: a node Readable fed by the entry's 'data' events,
 * pausing the entry while `out` is full (back-pressure reaches the tar parser). When
 * `out` is destroyed by its reader, the rest of the entry is read and dropped, so the
 * archive can move on. `done` settles when the entry has been read to its end, or
 * rejects with the entry's error (which also destroys `out`). Most entries are one
 * small chunk: this costs far less per entry than a PassThrough and a copy loop.
 */
function relay(entry: EntryStream): { out: Readable; done: Promise<void> } {
  let dropping = false;
  const out = new Readable({
    read() {
      entry.resume();
    },
    destroy(err, callback) {
      dropping = true;
      entry.resume();
      callback(err);
    },
  });
  const done = new Promise<void>((resolve, reject) => {
    let settled = false;
    entry.on('data', (chunk: Buffer) => {
      if (!dropping && !out.push(chunk)) entry.pause();
    });
    entry.on('end', () => {
      settled = true;
      if (!dropping) out.push(null);
      resolve();
    });
    entry.on('error', (err: Error) => {
      settled = true;
      if (!dropping) out.destroy(err);
      reject(err);
    });
    entry.on('close', () => {
      // Closed without 'end' or 'error': the archive was torn down under it. (Only
      // then is an Error made: its stack trace would cost more than the rest.)
      if (settled) return;
      const err = new Error('the archive was closed in the middle of an entry');
      if (!dropping) out.destroy(err);
      reject(err);
    });
  });
  return { out, done };
}

/** Validates one data.tar header against the rules at the top of this file and the
 *  entries seen so far. Undefined for the root entry './'. */
function dataEntry(header: PaxHeaders, where: string, seen: ReadonlyMap<string, DataEntryType>): DataEntry | undefined {
  const hostile = (message: string): OcibuildError => new OcibuildError(`data.tar entry "${header.name}" ${message}`, { where, hint: HOSTILE });
  const name = normalizeArchivePath(header.name);
  if ('problem' in name) throw hostile(name.problem);
  const type = header.type ? TYPES[header.type] : undefined;
  if (type === undefined) throw hostile(`has a tar type ocibuild does not read (${header.type ?? 'unknown typeflag'})`);
  const path = name.path;
  if (path === '') {
    if (type !== 'directory') throw hostile('names the root but is not a directory');
    return undefined;
  }

  // An entry under a symlink of the same archive would be written through that link.
  for (let at = path.indexOf('/'); at !== -1; at = path.indexOf('/', at + 1)) {
    const parent = seen.get(path.slice(0, at));
    if (parent !== undefined && parent !== 'directory') throw hostile(`lies under "${path.slice(0, at)}", which this archive makes a ${parent}`);
  }
  const before = seen.get(path);
  if (before !== undefined && !(before === 'directory' && type === 'directory')) {
    throw hostile(`appears twice in the archive (as a ${before}, then as a ${type})`);
  }

  const pax = header.pax ?? undefined;
  const paxNumber = (key: string): number | undefined => {
    const v = pax?.[key];
    const n = v === undefined ? NaN : Number(v);
    return Number.isFinite(n) ? n : undefined;
  };
  const e: DataEntry = {
    path,
    type,
    mode: (header.mode ?? 0) & 0o7777,
    uid: paxNumber('uid') ?? header.uid ?? 0,
    gid: paxNumber('gid') ?? header.gid ?? 0,
    uname: pax?.uname ?? header.uname ?? '',
    gname: pax?.gname ?? header.gname ?? '',
    mtime: Math.floor(paxNumber('mtime') ?? (header.mtime ? header.mtime.getTime() / 1000 : 0)),
    size: type === 'file' ? header.size ?? 0 : 0,
  };
  if (type === 'symlink') {
    const target = header.linkname ?? '';
    if (target === '') throw hostile('is a symlink with an empty target');
    e.linkname = target;
  } else if (type === 'hardlink') {
    const target = normalizeArchivePath(header.linkname ?? '');
    if ('problem' in target) throw hostile(`is a hard link whose target "${header.linkname}" ${target.problem}`);
    const kind = seen.get(target.path);
    if (target.path === '' || kind === undefined) throw hostile(`is a hard link to "${header.linkname}", which the archive has not shown before`);
    if (kind === 'directory') throw hostile(`is a hard link to the directory "${header.linkname}"`);
    e.linkname = target.path;
  } else if (type === 'char' || type === 'block') {
    e.devmajor = header.devmajor ?? 0;
    e.devminor = header.devminor ?? 0;
  }
  if (pax && Object.keys(pax).length > 0) e.pax = { ...pax };
  return e;
}

// ---------------------------------------------------------------------------
// tar walking

/** What readDeb uses of a tar-stream entry (a streamx Readable: async-iterable like
 *  node's, with 'data' events and pause/resume). */
interface EntryStream extends AsyncIterable<Buffer> {
  on(event: 'data', listener: (chunk: Buffer) => void): unknown;
  on(event: 'end' | 'close', listener: () => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
  pause(): unknown;
  resume(): unknown;
}

/**
 * Decompresses `body` into tar-stream's parser and calls `visit` for each entry, one
 * at a time; `visit` must consume the entry's stream. Parser and decompressor errors
 * reject; so does the first error of `visit`, after tearing the pipeline down.
 */
async function walkTar(
  body: Readable,
  kind: Compression,
  signal: AbortSignal | undefined,
  visit: (header: PaxHeaders, entry: EntryStream) => Promise<void>,
): Promise<void> {
  const extract = tarStream.extract();
  const feeding = pipeline(body, decompressor(kind), extract, signal ? { signal } : {});
  feeding.catch(() => undefined); // awaited below unless the entry loop failed first
  try {
    for await (const entry of extract) {
      signal?.throwIfAborted();
      await visit(entry.header as PaxHeaders, entry as unknown as EntryStream);
    }
  } catch (err) {
    extract.destroy();
    body.destroy();
    // A pipeline error (truncated input, corrupt data) explains more than the parser's
    // reaction to it; prefer it when there is one.
    const cause = await feeding.then(() => undefined, (e: unknown) => e);
    // The caller's callback only relayed our own stream's failure (a corrupt member
    // surfacing in the entry body it was reading): that is a damaged .deb, not a caller error.
    if (cause !== undefined && err === cause && typeof cause === 'object' && cause !== null) {
      callerErrors.delete(cause);
      throw cause;
    }
    if (cause !== undefined && !(typeof err === 'object' && err !== null && callerErrors.has(err)) && !(err instanceof OcibuildError) && isUseful(cause)) throw cause;
    throw err;
  }
  await feeding;
}

function isUseful(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code !== 'ERR_STREAM_PREMATURE_CLOSE';
}
