/**
 * Applying OCI layers, bottom to top, into a directory that becomes a rootfs
 * (image-spec layer.md, "Applying Changesets"): regular files, directories, symlinks,
 * hard links, device nodes and FIFOs with numeric owner, permission bits incl.
 * setuid/setgid/sticky, mtimes and xattrs; whiteouts `.wh.NAME` remove NAME from the
 * layers below, `.wh..wh..opq` empties its directory of what the layers below put there
 * (entries of its own layer stay, whichever order they come in).
 *
 * Safety, the layer being the adversary:
 * - names are cleaned: a leading `/` or `./` is dropped (absolute names land under the
 *   root), `.` components vanish, a `..` component is refused;
 * - the parent directories of every entry must be real directories: a symlink (from an
 *   earlier entry or layer) or another non-directory on the way is refused, never
 *   followed. Missing parents are created (0755, root). The same holds for whiteouts and
 *   hard-link targets, and a hard link's target must exist inside the tree;
 * - the last component is replaced, never written through: an existing non-directory is
 *   unlinked (a directory removed) before a new file is created with O_EXCL|O_NOFOLLOW,
 *   so a planted symlink is replaced, not followed.
 * These checks are made with lstat on paths, which is sound because the tree is private
 * to this process while it is built: `<dir>.tmp-<pid>-<random>`, created 0700 next to
 * `dir`, renamed to `dir` only once every layer is applied. A failure removes it, so a
 * half-extracted tree never looks complete; a killed process leaves a `.tmp-` sibling
 * that nothing reads (rootfs.ts removes those under its lock).
 *
 * xattrs: those a layer may carry (tar-writer.ts's keepXattr: `security.capability`
 * and `user.*`, never `*.overlay.*`) are applied to files and directories; the rest
 * (`trusted.*`, `security.selinux`…) describe the machine that built the layer and are
 * dropped — an `overlay` one would even change how the rootfs behaves as a lower dir.
 *
 * Ownership, device nodes and capabilities need root, or a user namespace mapped to
 * root. The work is synchronous syscalls while the layer streams through (gunzip and
 * zstd decode off the main thread): one lstat, open, write, fchown, fchmod, futimes and
 * close per file.
 */
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  constants,
  fchmodSync,
  fchownSync,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { PassThrough } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { OcibuildError } from '../errors.js';
import type { Layer } from '../oci/image.js';
import { layerCompression } from '../oci/media-types.js';
import { keepXattr } from '../layer/tar-writer.js';
import { lgetxattrs, lremovexattr, lsetxattr, mknod } from './native-fs.js';
import { TarReader, type TarDataSink, type TarEntryHeader } from './tar-reader.js';

export interface ExtractOptions {
  signal?: AbortSignal;
  /** Called after each layer is applied (index into `layers`). */
  onLayer?: (index: number, layer: Layer) => void;
}

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';

/**
 * Applies `layers` in order into `dir`, which must not exist (its parent must). On
 * success `dir` holds the whole tree; on failure it does not exist and an OcibuildError
 * names the layer (`where`) and the entry (message). Each layer's uncompressed bytes
 * are checked against its diffId.
 */
export async function extractLayers(layers: readonly Layer[], dir: string, opts: ExtractOptions = {}): Promise<void> {
  await buildTree(dir, opts.signal, async (tree) => {
    for (const [i, layer] of layers.entries()) {
      opts.signal?.throwIfAborted();
      await applyLayer(tree, layer, opts.signal);
      opts.onLayer?.(i, layer);
    }
  });
}

/**
 * Extracts one uncompressed tar stream into `dir` (which must not exist), with the
 * same checks and the same all-or-nothing result as extractLayers; for a tar this
 * process writes itself (nothing to check it against). `where` names it in errors.
 */
export async function extractTar(tar: NodeJS.ReadableStream, dir: string, where: string, signal?: AbortSignal): Promise<void> {
  await buildTree(dir, signal, async (tree) => {
    tree.startLayer();
    const reader = new TarReader((h) => tree.entry(h));
    try {
      await pipeline(tar, reader, signal ? { signal } : {});
    } catch (err) {
      tree.abort();
      if (signal?.aborted) throw err;
      throw extractError(err, where, reader.current);
    }
  });
}

/** A private temporary tree that `fill` writes and that becomes `dir` only when complete. */
async function buildTree(dir: string, signal: AbortSignal | undefined, fill: (tree: TreeWriter) => Promise<void>): Promise<void> {
  signal?.throwIfAborted();
  const tmp = `${dir}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  await mkdir(tmp, { mode: 0o700 });
  try {
    const tree = new TreeWriter(tmp);
    await fill(tree);
    tree.finish();
    await rename(tmp, dir);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

async function applyLayer(tree: TreeWriter, layer: Layer, signal: AbortSignal | undefined): Promise<void> {
  const where = `layer ${layer.digest}`;
  let compression: 'none' | 'gzip' | 'zstd';
  try {
    compression = layerCompression(layer.mediaType);
  } catch {
    throw new OcibuildError(`cannot extract a layer of media type ${layer.mediaType}`, { where });
  }
  tree.startLayer();
  const reader = new TarReader((h) => tree.entry(h));
  try {
    await pipeline(layer.open(), decompressor(compression), reader, signal ? { signal } : {});
  } catch (err) {
    tree.abort();
    if (signal?.aborted) throw err;
    throw extractError(err, where, reader.current);
  }
  const diffId = reader.digest();
  if (diffId !== layer.diffId) {
    throw new OcibuildError(`the uncompressed layer's digest is ${diffId}, not its diffId ${layer.diffId}`, {
      where,
      hint: 'the layer blob or the image config is corrupt; pull the image again',
    });
  }
}

export const ROOTLESS_HINT =
  'extracting a rootfs (owners, device nodes, capabilities) needs root: run ocibuild as root, or give your user subordinate ids ' +
  '(`usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER`, and the uidmap package for newuidmap/newgidmap) ' +
  'so that ocibuild runs rootless in a user namespace (device nodes other than whiteouts need real root even then)';

function extractError(err: unknown, where: string, entry: string | undefined): OcibuildError {
  if (err instanceof OcibuildError) return err;
  const e = err as NodeJS.ErrnoException;
  const what = entry === undefined ? '' : `entry ${JSON.stringify(entry)}: `;
  // lchown of an id the user namespace does not map fails with EINVAL.
  const needsRoot = e.code === 'EPERM' || (e.code === 'EINVAL' && (e.syscall === 'lchown' || e.syscall === 'fchown'));
  return new OcibuildError(`cannot extract the layer: ${what}${e.message ?? String(err)}`, {
    where,
    hint: needsRoot ? ROOTLESS_HINT : undefined,
    cause: err,
  });
}

function decompressor(kind: 'none' | 'gzip' | 'zstd'): NodeJS.ReadWriteStream {
  // zlib's default 16 KiB output chunks cost a stream hop each: 256 KiB made gunzip
  // of a 650 MB layer 3x faster (4.4 s → 1.5 s).
  if (kind === 'gzip') return createGunzip({ chunkSize: 256 * 1024 });
  if (kind === 'zstd') {
    const zstd = createRequire(import.meta.url)('zstd-napi') as { DecompressStream: new () => NodeJS.ReadWriteStream };
    return new zstd.DecompressStream();
  }
  return new PassThrough();
}

/** Thrown for a refused entry; extractError adds the layer and entry names. */
class EntryError extends Error {}

/**
 * The tree being built and what is known about it: `dirs` holds every path verified
 * to be a real directory (so parents are checked once, not per entry), with the mtime
 * to give it when everything is written; `written` the paths the current layer has
 * written or needs (their ancestors), which its whiteouts and opaque markers spare.
 */
class TreeWriter {
  private readonly dirs = new Map<string, number | undefined>([['', undefined]]);
  private written = new Set<string>();
  private openFd: number | undefined;
  private rootMode = 0o755;

  constructor(private readonly root: string) {}

  startLayer(): void {
    this.written = new Set();
  }

  abort(): void {
    if (this.openFd !== undefined) closeSync(this.openFd);
    this.openFd = undefined;
  }

  /** Directory mtimes last: every entry written into a directory changes its mtime. */
  finish(): void {
    chmodSync(this.root, this.rootMode);
    for (const [p, mtime] of this.dirs) if (mtime !== undefined) lutimesSync(this.abs(p), mtime, mtime);
  }

  entry(h: TarEntryHeader): TarDataSink | undefined {
    const rel = cleanPath(h.name);
    const name = rel.slice(rel.lastIndexOf('/') + 1);
    const parent = rel.includes('/') ? rel.slice(0, rel.lastIndexOf('/')) : '';
    if (name.startsWith(WHITEOUT)) {
      this.whiteout(parent, name);
      return undefined;
    }
    if (rel === '') {
      if (h.type !== 'directory') throw new EntryError(`the root can only be a directory, not a ${h.type}`);
      this.directoryMetadata('', h);
      this.rootMode = h.mode;
      return undefined;
    }
    this.ensureParents(rel);
    const abs = this.abs(rel);
    this.written.add(rel);
    switch (h.type) {
      case 'directory': {
        const st = lstatOrUndefined(abs);
        if (!st?.isDirectory()) {
          if (st) unlinkSync(abs);
          mkdirSync(abs, { mode: 0o700 });
        }
        this.directoryMetadata(rel, h);
        return undefined;
      }
      case 'file':
        return this.file(rel, h);
      case 'hardlink': {
        const target = cleanPath(h.linkname);
        if (target === rel) throw new EntryError('a hard link to itself');
        const targetParent = target.includes('/') ? target.slice(0, target.lastIndexOf('/')) : '';
        if (target === '' || !this.isDirChain(targetParent, true)) throw new EntryError(`hard link target ${JSON.stringify(h.linkname)} does not exist`);
        const st = lstatOrUndefined(this.abs(target));
        if (!st) throw new EntryError(`hard link target ${JSON.stringify(h.linkname)} does not exist`);
        if (st.isDirectory()) throw new EntryError(`hard link target ${JSON.stringify(h.linkname)} is a directory`);
        this.replace(rel);
        // link(2) does not follow a symlink target: the link is to the symlink itself.
        linkSync(this.abs(target), abs);
        return undefined;
      }
      case 'symlink':
        this.replace(rel);
        symlinkSync(h.linkname, abs);
        lchownSync(abs, h.uid, h.gid);
        lutimesSync(abs, h.mtime, h.mtime);
        return undefined;
      case 'char':
      case 'block':
      case 'fifo': {
        this.replace(rel);
        const type = h.type === 'char' ? constants.S_IFCHR : h.type === 'block' ? constants.S_IFBLK : constants.S_IFIFO;
        mknod(abs, type | 0o600, h.devmajor, h.devminor);
        lchownSync(abs, h.uid, h.gid);
        chmodSync(abs, h.mode);
        lutimesSync(abs, h.mtime, h.mtime);
        return undefined;
      }
    }
  }

  private file(rel: string, h: TarEntryHeader): TarDataSink {
    this.replace(rel);
    const abs = this.abs(rel);
    const fd = openSync(abs, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    this.openFd = fd;
    return {
      write: (chunk) => {
        for (let at = 0; at < chunk.length; ) at += writeSync(fd, chunk, at, chunk.length - at);
      },
      end: () => {
        // chown first: it clears setuid/setgid and security.capability.
        fchownSync(fd, h.uid, h.gid);
        fchmodSync(fd, h.mode);
        for (const [k, v] of h.xattrs) if (keepXattr(k)) lsetxattr(abs, k, v);
        futimesSync(fd, h.mtime, h.mtime);
        this.openFd = undefined;
        closeSync(fd);
      },
    };
  }

  private directoryMetadata(rel: string, h: TarEntryHeader): void {
    const abs = this.abs(rel);
    lchownSync(abs, h.uid, h.gid);
    // The root stays 0700 until finish(): nobody else may reach into the tree meanwhile.
    if (rel !== '') chmodSync(abs, h.mode);
    // A directory entry over an existing directory: its attributes are the entry's.
    for (const k of lgetxattrs(abs).keys()) if (keepXattr(k) && !h.xattrs.has(k)) lremovexattr(abs, k);
    for (const [k, v] of h.xattrs) if (keepXattr(k)) lsetxattr(abs, k, v);
    this.dirs.set(rel, h.mtime);
  }

  private whiteout(parent: string, name: string): void {
    if (name === OPAQUE) {
      if (this.isDirChain(parent, true)) this.clearLower(parent);
      return;
    }
    // Other `.wh..wh.` names are aufs bookkeeping (e.g. `.wh..wh.plnk`), not whiteouts.
    if (name.startsWith(`${WHITEOUT}${WHITEOUT}`)) return;
    const hidden = name.slice(WHITEOUT.length);
    if (hidden === '' || hidden === '.' || hidden === '..') throw new EntryError(`whiteout of ${JSON.stringify(hidden)}`);
    const target = parent === '' ? hidden : `${parent}/${hidden}`;
    // layer.md: a whiteout hides lower layers' files only, not its own layer's.
    if (this.written.has(target)) return;
    if (this.isDirChain(parent, true)) this.remove(target);
  }

  /** Removes what lower layers put under `dir`, sparing what this layer wrote. */
  private clearLower(dir: string): void {
    for (const name of readdirSync(this.abs(dir))) {
      const p = dir === '' ? name : `${dir}/${name}`;
      if (!this.written.has(p)) this.remove(p);
      else if (this.dirs.has(p)) this.clearLower(p);
    }
  }

  /**
   * Makes every ancestor of `rel` a verified directory, creating missing ones; refuses
   * a symlink or other non-directory on the way.
   */
  private ensureParents(rel: string): void {
    let at = rel.indexOf('/');
    while (at >= 0) {
      const p = rel.slice(0, at);
      this.written.add(p);
      if (!this.dirs.has(p)) {
        const st = lstatOrUndefined(this.abs(p));
        if (!st) {
          mkdirSync(this.abs(p));
          chmodSync(this.abs(p), 0o755);
          // Deterministic, and clamped to any SOURCE_DATE_EPOCH if it is copied up.
          this.dirs.set(p, 0);
        } else if (st.isDirectory()) {
          this.dirs.set(p, undefined);
        } else {
          throw new EntryError(`parent ${JSON.stringify(p)} is ${kindOf(st)} in the tree, not a directory (not followed)`);
        }
      }
      at = rel.indexOf('/', at + 1);
    }
  }

  /**
   * Whether `dir` and all its ancestors are real directories. A missing one gives
   * false; a symlink or other non-directory is refused when `strict`, else false.
   */
  private isDirChain(dir: string, strict: boolean): boolean {
    const parts = dir === '' ? [] : dir.split('/');
    let p = '';
    for (const part of parts) {
      p = p === '' ? part : `${p}/${part}`;
      if (this.dirs.has(p)) continue;
      const st = lstatOrUndefined(this.abs(p));
      if (!st) return false;
      if (!st.isDirectory()) {
        if (strict) throw new EntryError(`parent ${JSON.stringify(p)} is ${kindOf(st)} in the tree, not a directory (not followed)`);
        return false;
      }
      this.dirs.set(p, undefined);
    }
    return true;
  }

  /** Clears the way for a non-directory at `rel` (its parents are verified). */
  private replace(rel: string): void {
    const st = lstatOrUndefined(this.abs(rel));
    if (!st) return;
    if (st.isDirectory()) this.removeDir(rel);
    else unlinkSync(this.abs(rel));
  }

  /** Removes `rel` whatever it is (its parents are verified); nothing there is fine. */
  private remove(rel: string): void {
    const st = lstatOrUndefined(this.abs(rel));
    if (!st) return;
    if (st.isDirectory()) this.removeDir(rel);
    else unlinkSync(this.abs(rel));
  }

  private removeDir(rel: string): void {
    // rmSync never follows symlinks inside the tree it removes.
    rmSync(this.abs(rel), { recursive: true, force: true });
    this.dirs.delete(rel);
    const prefix = `${rel}/`;
    for (const k of this.dirs.keys()) if (k.startsWith(prefix)) this.dirs.delete(k);
  }

  private abs(rel: string): string {
    return rel === '' ? this.root : `${this.root}/${rel}`;
  }
}

/**
 * A member name as a path relative to the root: leading `/` and `./`, `.` components
 * and empty components dropped; `..` refused. '' is the root itself.
 */
export function cleanPath(name: string): string {
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') throw new EntryError(`'..' in ${JSON.stringify(name)}: the entry would leave the root`);
    parts.push(part);
  }
  return parts.join('/');
}

function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

function kindOf(st: Stats): string {
  if (st.isSymbolicLink()) return 'a symlink';
  if (st.isFile()) return 'a file';
  return 'not a directory';
}
