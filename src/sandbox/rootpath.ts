/**
 * Paths inside a rootfs seen from the host: symlinks are followed as the sandboxed
 * process would follow them (an absolute target starts again at the rootfs, `..` stops
 * at its top), so that a mount target or the working directory named by an image can
 * never land outside the tree, and so that the sandbox is told the real place to mount
 * on (bwrap resolves absolute symlinks against its own temporary root, not the image).
 */
import { lstat, readlink } from 'node:fs/promises';
import { posix } from 'node:path';
import { OcibuildError } from '../errors.js';

export type RootKind = 'file' | 'dir' | 'other';

export interface RootPath {
  /** The absolute path inside the rootfs, symlinks resolved ("/run/systemd/resolve/x"). */
  path: string;
  /** What is there; undefined when the path (from `missingFrom` on) does not exist. */
  kind: RootKind | undefined;
  /** For a missing path: the first missing ancestor-or-self, absolute inside the rootfs. */
  missingFrom?: string;
}

// Linux's own limit on symlinks followed in one lookup.
const MAX_LINKS = 40;

/** Host path of `inside` (absolute, resolved) under `root`. */
export function hostPath(root: string, inside: string): string {
  return inside === '/' ? root : root + inside;
}

/**
 * Resolves `path` (absolute) inside `root`. Every component, the last one included,
 * is followed when it is a symlink. Throws an OcibuildError on a symlink loop or when
 * a non-directory sits where a directory is needed.
 */
export async function resolveInRoot(root: string, path: string): Promise<RootPath> {
  if (!path.startsWith('/')) throw new Error(`resolveInRoot: ${path} is not absolute`);
  const done: string[] = [];
  let todo = path.split('/').filter((c) => c !== '' && c !== '.');
  let links = 0;
  while (todo.length > 0) {
    const name = todo.shift()!;
    if (name === '..') {
      done.pop();
      continue;
    }
    const here = '/' + [...done, name].join('/');
    let st;
    try {
      st = await lstat(hostPath(root, here));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      const rest = posix.normalize('/' + [...done, name, ...todo].join('/'));
      // `..` after a missing name: the kernel would fail with ENOENT; a lexical result
      // is only an approximation, so refuse it.
      if (todo.includes('..')) throw pathError(path, `"${here}" does not exist and is followed by ".."`);
      return { path: rest, kind: undefined, missingFrom: here };
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_LINKS) throw pathError(path, 'too many levels of symbolic links');
      const target = await readlink(hostPath(root, here));
      const parts = target.split('/').filter((c) => c !== '' && c !== '.');
      if (target.startsWith('/')) done.length = 0;
      todo = [...parts, ...todo];
      continue;
    }
    if (todo.length > 0 && !st.isDirectory()) throw pathError(path, `"${here}" is not a directory`);
    done.push(name);
    if (todo.length === 0) {
      return { path: here, kind: st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other' };
    }
  }
  return { path: '/' + done.join('/'), kind: 'dir' };
}

/** `inside` is `dir` or below it (both absolute, resolved). */
export function isUnder(inside: string, dir: string): boolean {
  return dir === '/' || inside === dir || inside.startsWith(dir + '/');
}

function pathError(path: string, why: string): OcibuildError {
  return new OcibuildError(`cannot resolve ${path} inside the image: ${why}`, { where: path });
}
