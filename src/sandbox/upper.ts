/**
 * An overlayfs upper directory — what a RUN step changed — as the entries of a layer
 * (image-spec layer.md, "Representing Changes" and "Whiteouts"; kernel
 * Documentation/filesystems/overlayfs.rst):
 * - a character device 0/0 is overlayfs's whiteout: entry `.wh.NAME` (an empty file);
 * - a directory with `trusted.overlay.opaque=y` (`user.overlay.opaque=y` on a
 *   `userxattr` mount) hides everything below it: the directory, plus `.wh..wh..opq`
 *   when a lower layer has that directory (otherwise there is nothing to hide, and the
 *   directory entry alone replaces whatever non-directory was there);
 * - hard links by (dev, inode), setuid/setgid/sticky bits, numeric owners come from
 *   the tree walk (layer/tree.ts); `security.capability` and `user.*` xattrs are
 *   kept, every `*.overlay.*` one (origin, impure, opaque…) dropped;
 * - the top-level directories the sandbox mounts (proc, sys, dev, run, tmp) are left
 *   out whole: their contents are the sandbox's, and the directories are mount points.
 *
 * The upper dir must come from a mount with `redirect_dir=off` and `metacopy=off` (both
 * are off with `userxattr`): a redirected directory or a metacopy file is not
 * self-contained (its data or content lives in the lower dir under another name), so
 * one is refused with an OcibuildError rather than turned into a wrong layer. With
 * redirect_dir=off, renaming a lower directory fails with EXDEV and `mv` falls back to
 * copy + delete, which the upper dir records plainly.
 *
 * File contents are not read here: entries carry `fileContent`s the layer writer reads.
 */
import { lstatSync } from 'node:fs';
import { OcibuildError } from '../errors.js';
import { sortKey, type LayerEntry } from '../layer/entry.js';
import { bytesContent, fileContent } from '../layer/content.js';
import { keepXattr } from '../layer/tar-writer.js';
import { walkTree } from '../layer/tree.js';
import { lgetxattrs } from './native-fs.js';

export interface UpperOptions {
  /**
   * The namespace of overlayfs's own xattrs: 'trusted' for a mount as root (default),
   * 'user' for a `userxattr` mount (rootless). xattrs of the other namespace are the
   * RUN step's own, and `*.overlay.*` ones are dropped either way.
   */
  overlayXattrs?: 'trusted' | 'user';
  /** Top-level names left out with everything under them. Default: MOUNTED_DIRS. */
  exclude?: readonly string[];
  /**
   * How the upper dir records deletions: 'device' (overlayfs's character devices 0/0,
   * the default) or 'wh-files' (empty `.wh.NAME` files, as snapshot.ts's fallback
   * writes where whiteout devices are refused; a step's own file of such a name
   * then reads as a whiteout too). Devices 0/0 are whiteouts either way.
   */
  whiteoutFormat?: 'device' | 'wh-files';
}

/** What the sandbox mounts over the rootfs: never part of a layer. */
export const MOUNTED_DIRS: readonly string[] = ['proc', 'sys', 'dev', 'run', 'tmp'];

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';

/**
 * The layer entries of `upperDir`, sorted in layer order (entry.ts sortKey: parents
 * first). `lowerHasDir(path)` says whether the layers below have a directory at
 * `path` (relative, no leading slash); see dirInTree for a rootfs on disk.
 */
export async function upperToEntries(
  upperDir: string,
  lowerHasDir: (path: string) => boolean,
  opts: UpperOptions = {},
): Promise<LayerEntry[]> {
  const ns = opts.overlayXattrs ?? 'trusted';
  const exclude = new Set(opts.exclude ?? MOUNTED_DIRS);
  const walked = await walkTree(upperDir);
  const kept = walked.filter((e) => !exclude.has(topLevel(e.path)));
  const keptPaths = new Set(kept.map((e) => e.path));
  const where = upperDir;

  const out: LayerEntry[] = [];
  /** A hard link's target left out (under an excluded dir): the first kept link stands in. */
  const standIn = new Map<string, string>();
  for (const e of kept) {
    const slash = e.path.lastIndexOf('/');
    const name = e.path.slice(slash + 1);
    const dir = slash < 0 ? '' : e.path.slice(0, slash + 1);
    const abs = `${upperDir}/${e.path}`;

    if (e.type === 'char' && e.devmajor === 0 && e.devminor === 0) {
      out.push(marker(`${dir}${WHITEOUT}${name}`));
      continue;
    }
    if (opts.whiteoutFormat === 'wh-files' && e.type === 'file' && e.size === 0 && name.startsWith(WHITEOUT) && !name.startsWith(`${WHITEOUT}${WHITEOUT}`)) {
      out.push(marker(e.path));
      continue;
    }
    if (name.startsWith(WHITEOUT)) {
      throw new OcibuildError(`/${e.path}: a file named ${WHITEOUT}* cannot be stored in a layer (it would read as a whiteout)`, {
        where,
        hint: 'rename or remove it in the RUN step',
      });
    }
    switch (e.type) {
      case 'directory': {
        const xattrs = lgetxattrs(abs);
        refuseRedirect(xattrs, ns, e.path, where);
        out.push({ ...e, ...layerXattrs(xattrs) });
        if (xattrs.get(`${ns}.overlay.opaque`)?.toString() === 'y' && lowerHasDir(e.path)) {
          out.push(marker(`${e.path}/${OPAQUE}`));
        }
        break;
      }
      case 'file': {
        const xattrs = lgetxattrs(abs);
        refuseRedirect(xattrs, ns, e.path, where);
        if (xattrs.has(`${ns}.overlay.metacopy`)) {
          throw new OcibuildError(`/${e.path} is an overlayfs metacopy file: its data is in the lower dir`, {
            where,
            hint: 'mount the overlay with metacopy=off',
          });
        }
        out.push({ ...e, ...layerXattrs(xattrs) });
        break;
      }
      case 'hardlink': {
        if (keptPaths.has(e.target)) {
          out.push(e);
          break;
        }
        const first = standIn.get(e.target);
        if (first !== undefined) {
          out.push({ ...e, target: first });
          break;
        }
        standIn.set(e.target, e.path);
        const xattrs = lgetxattrs(abs);
        out.push({
          type: 'file',
          path: e.path,
          mode: e.mode,
          uid: e.uid,
          gid: e.gid,
          mtime: e.mtime,
          size: lstatSync(abs).size,
          content: fileContent(abs),
          ...layerXattrs(xattrs),
        });
        break;
      }
      default:
        // Symlinks, devices, FIFOs: LayerEntry carries no xattrs for them.
        out.push(e);
    }
  }
  const keyed = out.map((e) => ({ e, key: sortKey(e.path) }));
  keyed.sort((a, b) => Buffer.compare(a.key, b.key));
  return keyed.map(({ e }) => e);
}

/**
 * A `lowerHasDir` for a rootfs on disk: `path` and each of its parents is a real
 * directory under `root` (a symlink is not followed, as extraction never follows one).
 */
export function dirInTree(root: string): (path: string) => boolean {
  return (path) => {
    let p = root;
    for (const part of path.split('/')) {
      p = `${p}/${part}`;
      try {
        if (!lstatSync(p).isDirectory()) return false;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return false;
        throw err;
      }
    }
    return true;
  };
}

/** A whiteout or opaque marker: an empty file; fixed metadata, so layers are stable. */
function marker(path: string): LayerEntry {
  return { type: 'file', path, mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 0, content: EMPTY };
}

const EMPTY = bytesContent(Buffer.alloc(0));

function topLevel(path: string): string {
  const i = path.indexOf('/');
  return i < 0 ? path : path.slice(0, i);
}

function layerXattrs(all: Map<string, Buffer>): { xattrs?: Record<string, Buffer> } {
  const kept = [...all].filter(([k]) => keepXattr(k));
  return kept.length === 0 ? {} : { xattrs: Object.fromEntries(kept) };
}

function refuseRedirect(xattrs: Map<string, Buffer>, ns: string, path: string, where: string): void {
  if (xattrs.has(`${ns}.overlay.redirect`)) {
    throw new OcibuildError(`/${path} is an overlayfs redirect (a renamed lower directory): its contents are in the lower dir`, {
      where,
      hint: 'mount the overlay with redirect_dir=off',
    });
  }
}
