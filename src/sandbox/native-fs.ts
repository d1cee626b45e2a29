/**
 * Extended attributes and mknod, which Node does not have, from native/xattr.c (the
 * `ocibuild_fs` target of native/binding.gyp, built by native/build.mjs with the xz
 * decoder). There is no fallback: a rootfs without its file capabilities, or a layer
 * without its xattrs and whiteouts, would be silently wrong. So the addon is loaded on
 * first use and a missing one is an OcibuildError saying how to build it.
 *
 * Every call is synchronous (one metadata syscall each) and never follows a symlink.
 * Failures are Errors shaped like node:fs's: `code` (ENOENT, ENOTSUP...), `errno`
 * (negative, as Node's), `syscall`, `path`.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { getSystemErrorName } from 'node:util';
import { OcibuildError } from '../errors.js';

interface FsAddon {
  llistxattr(path: string): string[];
  lgetxattr(path: string, name: string): Buffer | undefined;
  lsetxattr(path: string, name: string, value: Uint8Array, flags?: number): void;
  lremovexattr(path: string, name: string): void;
  mknod(path: string, mode: number, major: number, minor: number): void;
}

/** Built by native/build.mjs; the same relative path from src/sandbox and dist/sandbox. */
export const FS_ADDON_PATH = fileURLToPath(new URL('../../native/build/Release/ocibuild_fs.node', import.meta.url));

const require = createRequire(import.meta.url);
let addon: FsAddon | undefined;

/**
 * Loads the addon at `path` (tests point it elsewhere) or throws the OcibuildError a
 * user sees when it is not built.
 */
export function loadFsAddon(path: string = FS_ADDON_PATH): FsAddon {
  try {
    return require(path) as FsAddon;
  } catch (err) {
    throw new OcibuildError(`the native file-system addon (extended attributes, device nodes) is not loaded: ${(err as Error).message.split('\n')[0]}`, {
      where: path,
      hint: 'build it with `npm run build:native` (it needs a C compiler, make and python3: apt-get install build-essential python3); ocibuild cannot extract or write RUN layers without it',
      cause: err,
    });
  }
}

function fs(): FsAddon {
  addon ??= loadFsAddon();
  return addon;
}

/** Node's shape for a failed syscall: code, negative errno, syscall, path. */
function nodeError(err: unknown): unknown {
  const e = err as Error & { errno?: number; code?: string };
  if (typeof e?.errno === 'number' && e.errno > 0) {
    e.code = getSystemErrorName(-e.errno);
    e.message = `${e.code}: ${e.message}`;
    e.errno = -e.errno;
  }
  return e;
}

function call<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw nodeError(err);
  }
}

/** The names of `path`'s extended attributes (of a symlink itself, never its target). */
export function llistxattr(path: string): string[] {
  return call(() => fs().llistxattr(path));
}

/** The value of attribute `name`, or undefined when `path` has none of that name. */
export function lgetxattr(path: string, name: string): Buffer | undefined {
  return call(() => fs().lgetxattr(path, name));
}

export const XATTR_CREATE = 1;
export const XATTR_REPLACE = 2;

export function lsetxattr(path: string, name: string, value: Uint8Array, flags = 0): void {
  call(() => fs().lsetxattr(path, name, value, flags));
}

export function lremovexattr(path: string, name: string): void {
  call(() => fs().lremovexattr(path, name));
}

/** Every attribute of `path` with its value (names from llistxattr, in its order). */
export function lgetxattrs(path: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const name of llistxattr(path)) {
    const v = lgetxattr(path, name);
    // Removed between the list and the read: not there.
    if (v !== undefined) out.set(name, v);
  }
  return out;
}

/**
 * mknod(2): `mode` holds the type (fs.constants.S_IFCHR, S_IFBLK, S_IFIFO) and the
 * permission bits, which the umask reduces as usual.
 */
export function mknod(path: string, mode: number, major: number, minor: number): void {
  call(() => fs().mknod(path, mode, major, minor));
}
