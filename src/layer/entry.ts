/**
 * The in-memory description of a layer's content, independent of where it came from
 * (.deb data members for the apt layer, an overlay upper dir for a RUN layer, the
 * spec's `files:` for the files layer). The tar writer turns a set of these into a
 * deterministic tarball; nothing here touches the filesystem.
 *
 * Paths are relative, '/'-separated, without a leading `./` or `/` and without a
 * trailing `/` (`usr/bin/hello`). Whiteouts are plain empty files named `.wh.NAME`
 * (OCI image-spec layer.md, "Whiteouts").
 */
import type { Content } from './content.js';

interface Common {
  path: string;
  /** Permission bits including setuid/setgid/sticky (07777); the type is `type`. */
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch; clamped to SOURCE_DATE_EPOCH by the writer. */
  mtime: number;
}

export type LayerEntry =
  | (Common & { type: 'directory'; xattrs?: Record<string, Buffer> })
  | (Common & {
      type: 'file';
      size: number;
      /**
       * Opened lazily by the writer, read once, exactly `size` bytes. A plain
       * `() => Readable` will do; `fileContent`/`bytesContent` (content.ts) are cheaper.
       */
      content: Content;
      xattrs?: Record<string, Buffer>;
    })
  | (Common & { type: 'symlink'; target: string })
  /**
   * `target` is the path of another (non-directory) entry of the same layer. A hard
   * link shares its target's inode, so the tar carries the target's mode, ids, mtime
   * and xattrs for it; its own Common fields are not used.
   */
  | (Common & { type: 'hardlink'; target: string })
  | (Common & { type: 'char' | 'block' | 'fifo'; devmajor: number; devminor: number });

export type LayerEntryType = LayerEntry['type'];

/**
 * The layer's order: by path components, each compared bytewise (UTF-8). Mapping '/'
 * to NUL — a byte no component can contain — turns that into one plain byte
 * comparison: a parent (a proper prefix) sorts before its children, a directory's
 * whole subtree sits together, and `a/b` < `a.b` < `a0`. This is the order of GNU
 * `tar --sort=name`; OCI and containerd need no particular order, only parents first.
 */
export function sortKey(path: string): Buffer {
  return Buffer.from(path.replaceAll('/', '\0'), 'utf8');
}

/** Why `path` is not a valid layer entry path, or undefined when it is. */
export function invalidPathReason(path: string): string | undefined {
  if (path === '') return 'empty path';
  if (path.includes('\0')) return 'NUL byte in path';
  if (path.startsWith('/')) return 'absolute path';
  if (path.endsWith('/')) return 'trailing slash';
  for (const part of path.split('/')) {
    if (part === '') return 'empty path component';
    if (part === '.' || part === '..') return `'${part}' path component`;
  }
  return undefined;
}

/** The parent directory's path, or undefined for a top-level entry. */
export function parentPath(path: string): string | undefined {
  const i = path.lastIndexOf('/');
  return i < 0 ? undefined : path.slice(0, i);
}
