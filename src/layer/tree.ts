/**
 * A directory tree on disk as layer entries: the walk a files or RUN layer starts from.
 *
 * The walk runs in the shared file-system worker (fs-worker.ts) with synchronous
 * readdir/lstat/readlink: a tree is thousands of small metadata calls, and each one
 * through the thread pool costs a round trip and a callback on the main thread
 * (/usr/share/locale, 4 206 entries: ~0.3 s walked with awaited `lstat`s, a few tens of
 * ms here). The entries come back in one message; file contents are `fileContent`s,
 * read later by the tar writer in the same worker.
 *
 * What is kept: directories, regular files, symlinks, character and block devices and
 * FIFOs, with permission bits (07777), numeric owner, and mtime in whole seconds;
 * regular files with several links become hard links to the first path met (the tar
 * writer re-roots each group in layer order). Sockets are dropped (DESIGN.md: "no
 * sockets"). Extended attributes are not read: Node has no API for them.
 */
import { resolve as resolvePath } from 'node:path';
import { fileContent } from './content.js';
import type { LayerEntry } from './entry.js';
import { openChannel } from './fs-worker.js';

interface FsErrorFields {
  message: string;
  code?: string;
  syscall?: string;
  path?: string;
}

interface RawEntry {
  path: string;
  kind: 'd' | 'f' | 'l' | 'c' | 'b' | 'p';
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  size: number;
  /** For files with nlink > 1: "dev:ino". */
  inode?: string;
  target?: string;
  rdev?: number;
}

/**
 * The entries under `root` (not `root` itself), paths relative to it. Names are
 * decoded as UTF-8 (Node's file names are strings).
 */
export async function walkTree(dir: string): Promise<LayerEntry[]> {
  const root = resolvePath(dir);
  const raw = await new Promise<RawEntry[]>((resolve, reject) => {
    const port = openChannel(WALK_PROGRAM, { root });
    let done = false;
    port.once('message', (m: { entries?: RawEntry[]; error?: FsErrorFields; fatal?: string }) => {
      done = true;
      port.close();
      if (m.entries) resolve(m.entries);
      else if (m.error) reject(Object.assign(new Error(m.error.message), m.error));
      else reject(new Error(`tree walker: ${m.fatal}`));
    });
    port.once('close', () => {
      if (!done) reject(new Error('tree walker worker stopped'));
    });
  });
  const firstOfInode = new Map<string, string>();
  const out: LayerEntry[] = [];
  for (const r of raw) {
    const common = { path: r.path, mode: r.mode & 0o7777, uid: r.uid, gid: r.gid, mtime: r.mtime };
    switch (r.kind) {
      case 'd':
        out.push({ type: 'directory', ...common });
        break;
      case 'l':
        out.push({ type: 'symlink', ...common, target: r.target! });
        break;
      case 'f': {
        const first = r.inode === undefined ? undefined : firstOfInode.get(r.inode);
        if (first !== undefined) {
          out.push({ type: 'hardlink', ...common, target: first });
          break;
        }
        if (r.inode !== undefined) firstOfInode.set(r.inode, r.path);
        out.push({ type: 'file', ...common, size: r.size, content: fileContent(`${root}/${r.path}`) });
        break;
      }
      case 'c':
      case 'b':
        out.push({ type: r.kind === 'c' ? 'char' : 'block', ...common, devmajor: major(r.rdev!), devminor: minor(r.rdev!) });
        break;
      case 'p':
        out.push({ type: 'fifo', ...common, devmajor: 0, devminor: 0 });
        break;
    }
  }
  return out;
}

// Linux's dev_t encoding (glibc gnu_dev_major/gnu_dev_minor). rdev fits a double
// exactly for every device number Linux hands out (major < 2^12 in practice).
function major(rdev: number): number {
  return Number(((BigInt(rdev) >> 8n) & 0xfffn) | ((BigInt(rdev) >> 32n) & ~0xfffn));
}

function minor(rdev: number): number {
  return Number((BigInt(rdev) & 0xffn) | ((BigInt(rdev) >> 12n) & ~0xffn));
}

// The worker's side (see fs-worker.ts). Depth-first in readdir order; the tar writer
// sorts. Errors (an unreadable directory, a vanished entry) end the walk with the fs
// error.
const WALK_PROGRAM = `
const fs = require('node:fs');
const root = data.root;
const entries = [];
function visit(rel) {
  const names = fs.readdirSync(rel ? root + '/' + rel : root);
  for (const name of names) {
    const path = rel ? rel + '/' + name : name;
    const abs = root + '/' + path;
    const st = fs.lstatSync(abs);
    const e = { path, mode: st.mode, uid: st.uid, gid: st.gid, mtime: Math.floor(st.mtimeMs / 1000), size: 0 };
    if (st.isDirectory()) { e.kind = 'd'; entries.push(e); visit(path); continue; }
    if (st.isFile()) { e.kind = 'f'; e.size = st.size; if (st.nlink > 1) e.inode = st.dev + ':' + st.ino; }
    else if (st.isSymbolicLink()) { e.kind = 'l'; e.target = fs.readlinkSync(abs); }
    else if (st.isCharacterDevice()) { e.kind = 'c'; e.rdev = st.rdev; }
    else if (st.isBlockDevice()) { e.kind = 'b'; e.rdev = st.rdev; }
    else if (st.isFIFO()) e.kind = 'p';
    else continue;
    entries.push(e);
  }
}
try {
  visit('');
  port.postMessage({ entries });
} catch (err) {
  port.postMessage({ error: { message: err.message, code: err.code, syscall: err.syscall, path: err.path } });
}
port.close();
`;
