/**
 * The fallback where overlayfs cannot be mounted: the lower trees are copied into one
 * directory (`cp -a`, reflinks where the filesystem has them), the step runs on the
 * copy, and the copy is then compared with a snapshot taken before the step to build
 * an upper directory in overlayfs's own format, so that the layer writer cannot tell
 * the difference:
 *
 * - new or changed entries are moved into the upper directory (files keep their inode,
 *   so their hard links, xattrs and capabilities); a change is a new inode, a new type
 *   or a new ctime, and ctime moves with every content, mode, owner, xattr or link
 *   count change;
 * - deleted entries become whiteouts (character device 0/0; `.wh.NAME` files where
 *   the filesystem refuses those, see WhiteoutFormat);
 * - a directory that replaced another one is written as a directory whose vanished
 *   children are whited out one by one, which overlayfs reads exactly as an opaque
 *   directory, so no `trusted.overlay.opaque` xattr has to be written;
 * - parents of emitted entries are created with the copy's owner, mode and times
 *   (not their xattrs: a directory's own xattrs are rare, and overlayfs's copy-up is
 *   the judge only where overlayfs works).
 *
 * Stacked lowers are applied bottom-up with their whiteouts and opaque directories.
 */
import { spawn } from 'node:child_process';
import { chmod, chown, lstat, mkdir, readdir, rename, rm, utimes, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { constants, type BigIntStats } from 'node:fs';
import { lgetxattr, mknod } from './native-fs.js';
import { OcibuildError } from '../errors.js';

export interface Stamp {
  ino: bigint;
  /** st_mode (type and permission bits). */
  mode: number;
  ctimeNs: bigint;
}

/** path (relative, "a/b") → stamp, for every entry of a tree. */
export type Snapshot = Map<string, Stamp>;

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFCHR = 0o020000;

function isDir(mode: number): boolean {
  return (mode & S_IFMT) === S_IFDIR;
}

function isWhiteout(st: BigIntStats): boolean {
  return (Number(st.mode) & S_IFMT) === S_IFCHR && st.rdev === 0n;
}

function run(argv: string[], what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    c.on('error', (e) => reject(new OcibuildError(`${what}: ${e.message}`)));
    c.on('close', (code) => (code === 0 ? resolve() : reject(new OcibuildError(`${what} failed: ${err.trim() || `exit code ${code}`}`))));
  });
}

async function maybeLstat(p: string): Promise<BigIntStats | undefined> {
  try {
    return await lstat(p, { bigint: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw err;
  }
}

/** Every path of a tree (relative), parents before children. */
async function* walk(root: string, rel = ''): AsyncGenerator<[string, BigIntStats]> {
  const names = (await readdir(rel ? join(root, rel) : root)).sort();
  for (const name of names) {
    const p = rel ? `${rel}/${name}` : name;
    const st = await lstat(join(root, p), { bigint: true });
    yield [p, st];
    if (st.isDirectory()) yield* walk(root, p);
  }
}

/**
 * Copies the lower trees (topmost first, as for overlayfs) into `dest` (an empty
 * directory), applying each upper tree's whiteouts to what lies below it.
 */
export async function copyLowers(lowers: string[], dest: string): Promise<void> {
  const bottomUp = [...lowers].reverse();
  for (const [i, lower] of bottomUp.entries()) {
    const whiteouts: string[] = [];
    if (i > 0) {
      // What this layer replaces must go first: cp cannot put a file over a directory.
      for await (const [p, st] of walk(lower)) {
        const there = await maybeLstat(join(dest, p));
        const name = basename(p);
        if (isWhiteout(st)) {
          whiteouts.push(p);
          if (there) await rm(join(dest, p), { recursive: true, force: true });
        } else if (st.isFile() && name.startsWith('.wh.')) {
          // The `wh-files` form of an earlier fallback step's upper directory.
          whiteouts.push(p);
          await rm(join(dest, dirname(p), name.slice(4)), { recursive: true, force: true });
        } else if (there && (st.isDirectory() !== there.isDirectory() || (st.isDirectory() && isOpaque(join(lower, p))))) {
          await rm(join(dest, p), { recursive: true, force: true });
        }
      }
    }
    // --remove-destination: a file replaced in a higher layer must not write through a
    // hard link it shared below.
    await run(['cp', '-a', '--reflink=auto', '--remove-destination', '--', `${lower}/.`, `${dest}/`], `copying ${lower}`);
    for (const p of whiteouts) await rm(join(dest, p), { force: true });
  }
}

/** An opaque directory of an upper tree from overlayfs, as root or with `userxattr`. */
function isOpaque(path: string): boolean {
  return ['trusted', 'user'].some((ns) => {
    try {
      return lgetxattr(path, `${ns}.overlay.opaque`)?.toString() === 'y';
    } catch {
      // No xattrs on this filesystem, or trusted.* hidden from a non-root caller.
      return false;
    }
  });
}

/** The stamps of every entry under `root`. */
export async function snapshot(root: string): Promise<Snapshot> {
  const snap: Snapshot = new Map();
  for await (const [p, st] of walk(root)) snap.set(p, { ino: st.ino, mode: Number(st.mode), ctimeNs: st.ctimeNs });
  return snap;
}

/**
 * Writes into `upper` (empty) what turned `before` into the tree now at `root`, in
 * overlayfs's upper-directory format. Emitted entries are moved out of `root`.
 */
export async function diffToUpper(root: string, before: Snapshot, upper: string): Promise<WhiteoutFormat> {
  const children = new Map<string, string[]>();
  for (const p of before.keys()) {
    const slash = p.lastIndexOf('/');
    const parent = slash < 0 ? '' : p.slice(0, slash);
    let list = children.get(parent);
    if (!list) children.set(parent, (list = []));
    list.push(slash < 0 ? p : p.slice(slash + 1));
  }
  // Each directory's attributes as the step left them, taken before anything is moved
  // out of it (a move changes its mtime).
  const dirAttrs = new Map<string, BigIntStats>();
  const made = new Set<string>(['']);
  const whiteouts: string[] = [];

  const makeDir = async (rel: string): Promise<void> => {
    await mkdir(join(upper, rel));
    made.add(rel);
  };
  const ensureParents = async (rel: string): Promise<void> => {
    const parent = dirname(rel) === '.' ? '' : dirname(rel);
    if (made.has(parent)) return;
    await ensureParents(parent);
    await makeDir(parent);
  };

  const visit = async (rel: string): Promise<void> => {
    const dir = rel ? join(root, rel) : root;
    dirAttrs.set(rel, await lstat(dir, { bigint: true }));
    const names = (await readdir(dir)).sort();
    const present = new Set(names);
    const prefix = rel ? `${rel}/` : '';
    for (const name of children.get(rel) ?? []) {
      if (present.has(name)) continue;
      await ensureParents(prefix + name);
      whiteouts.push(prefix + name);
    }
    for (const name of names) {
      const p = prefix + name;
      const now = await lstat(join(root, p), { bigint: true });
      const was = before.get(p);
      const same = was !== undefined && was.ino === now.ino && was.ctimeNs === now.ctimeNs && was.mode === Number(now.mode);
      if (was && now.isDirectory() && isDir(was.mode)) {
        // A directory then and now: its own change, if any, plus its children's.
        if (!same) {
          await ensureParents(p);
          await makeDir(p);
        }
        await visit(p);
        continue;
      }
      if (same) continue;
      // New, or a different thing than before: moved whole. A directory that replaced a
      // non-directory had nothing below it before; a non-directory hides all below it.
      await ensureParents(p);
      await rename(join(root, p), join(upper, p));
    }
  };
  await visit('');
  const format = whiteouts.length > 0 ? await writeWhiteouts(upper, whiteouts) : 'device';
  // Deepest first, so that setting a child's times does not disturb its parent's.
  for (const rel of [...made].filter((x) => x !== '').sort().reverse()) {
    const st = dirAttrs.get(rel)!;
    const to = join(upper, rel);
    await chmod(to, Number(st.mode) & 0o7777);
    try {
      await chown(to, Number(st.uid), Number(st.gid));
    } catch (err) {
      // Without root the copy belongs to the caller anyway.
      if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
    }
    await utimes(to, nsToSeconds(st.atimeNs), nsToSeconds(st.mtimeNs));
  }
  return format;
}

function nsToSeconds(ns: bigint): number {
  return Number(ns / 1000n) / 1e6;
}

/**
 * How deletions are written in an upper directory made by the fallback:
 * - `device`: overlayfs's own whiteouts, character devices 0/0;
 * - `wh-files`: empty regular files named `.wh.NAME` (the OCI layer form), used where
 *   the filesystem refuses whiteout devices, as overlayfs itself does when the build
 *   directory is on overlayfs (the usual reason for the fallback as root).
 */
export type WhiteoutFormat = 'device' | 'wh-files';

async function writeWhiteouts(upper: string, paths: string[]): Promise<WhiteoutFormat> {
  try {
    // Unprivileged whiteout devices are allowed since Linux 5.8; overlayfs refuses them.
    for (const p of paths) mknod(join(upper, p), constants.S_IFCHR, 0, 0);
    return 'device';
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
  }
  for (const p of paths) {
    await rm(join(upper, p), { force: true });
    await writeFile(join(dirname(join(upper, p)), `.wh.${basename(p)}`), '', { flag: 'wx' });
  }
  return 'wh-files';
}
