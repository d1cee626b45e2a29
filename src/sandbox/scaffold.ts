/**
 * Mount points without traces. A sandbox mounts /proc, /dev, tmpfs, resolv.conf and
 * the requested bind mounts onto paths of the merged tree; where such a path does not
 * exist, bwrap and systemd-nspawn create it, and on an overlay that creation lands in
 * the upper directory and so in the layer (an empty `/proc`, a zero-byte
 * `/run/secrets/x`, a stray `/etc/resolv.conf`).
 *
 * So ocibuild creates them first, in a small "scaffold" tree used as the *lowest*
 * overlay layer: an entry there is seen only when no layer above has that path, the
 * image's own files and directories (and their owners, modes and times) win, a mount
 * on it changes nothing, and the upper directory never sees it. If a step writes
 * below a scaffold-only directory, overlayfs copies that directory up like any lower
 * directory, which is what the step asked for.
 *
 * A path a higher layer hides (an earlier step's whiteout or opaque directory) hides
 * the scaffold's entry too. Those few go into a second scaffold *above* all layers,
 * whose directories copy the owner, mode and times the merged tree shows for them, so
 * that a copy-up of such a directory still carries the image's attributes (not its
 * xattrs, which Node cannot read here).
 *
 * Without overlayfs (the copy fallback) the same entries are created in the copy
 * before its snapshot, so the diff does not see them either.
 */
import { chown, lstat, mkdir, rm, rmdir, utimes, writeFile, chmod } from 'node:fs/promises';
import { dirname } from 'node:path';
import { hostPath } from './rootpath.js';

export interface ScaffoldEntry {
  /** Absolute path inside the rootfs, symlinks already resolved. */
  path: string;
  kind: 'dir' | 'file';
  /** Permission bits; 0o755 for directories and 0o644 for files by default. */
  mode?: number;
  /** Owner of the entry itself (parents made on the way stay root's); default root. */
  uid?: number;
  gid?: number;
}

/** The mount points every backend uses; `extra` are the backend's own. */
export function baseScaffold(): ScaffoldEntry[] {
  return [
    { path: '/proc', kind: 'dir', mode: 0o555 },
    { path: '/dev', kind: 'dir' },
    { path: '/sys', kind: 'dir', mode: 0o555 },
    { path: '/tmp', kind: 'dir', mode: 0o1777 },
    { path: '/run', kind: 'dir' },
  ];
}

/**
 * Creates `entries` under `root` where nothing exists yet (parents as 0755
 * directories), all with `mtime` (seconds). Existing paths are left as they are.
 * Returns the host paths it created, deepest first.
 */
export async function writeScaffold(root: string, entries: ScaffoldEntry[], mtime: number): Promise<string[]> {
  const created: string[] = [];
  const ensureDir = async (inside: string, mode: number): Promise<void> => {
    if (inside === '/') return;
    const p = hostPath(root, inside);
    if (await exists(p)) return;
    await ensureDir(dirname(inside), 0o755);
    await mkdir(p);
    await chmod(p, mode);
    created.push(p);
  };
  for (const e of entries) {
    const p = hostPath(root, e.path);
    if (await exists(p)) continue;
    if (e.kind === 'dir') {
      await ensureDir(e.path, e.mode ?? 0o755);
      if (e.uid !== undefined || e.gid !== undefined) {
        try {
          await chown(p, e.uid ?? 0, e.gid ?? 0);
        } catch (err) {
          // In a user namespace of one id, only that id exists: the directory stays the caller's.
          if ((err as NodeJS.ErrnoException).code !== 'EPERM' && (err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
        }
      }
    } else {
      await ensureDir(dirname(e.path), 0o755);
      await writeFile(p, '', { mode: e.mode ?? 0o644 });
      await chmod(p, e.mode ?? 0o644);
      created.push(p);
    }
  }
  // Deepest first: setting a child's time touches nothing above it, but creating it did.
  const deepestFirst = created.sort().reverse();
  for (const p of deepestFirst) await utimes(p, mtime, mtime);
  return deepestFirst;
}

/**
 * Removes what writeScaffold created in a tree a step changed in place: files still
 * empty, directories still empty; what the step put there stays, with its parents.
 */
export async function removeScaffold(created: string[]): Promise<void> {
  for (const p of created) {
    const st = await lstat(p).catch(() => undefined);
    if (!st) continue;
    if (st.isDirectory()) await rmdir(p).catch(() => undefined);
    else if (st.isFile() && st.size === 0) await rm(p);
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/**
 * Writes `entries` into `top`, an overlay layer above all others: each existing
 * ancestor directory (as `view`, the merged tree, shows it) with its owner, mode and
 * times; the missing rest as for writeScaffold.
 */
export async function writeOverScaffold(top: string, view: string, entries: ScaffoldEntry[], mtime: number): Promise<void> {
  const mirrored: Array<[string, Awaited<ReturnType<typeof lstat>>]> = [];
  for (const e of entries) {
    const parts = e.path.split('/').filter((c) => c !== '');
    let inside = '';
    for (const part of parts.slice(0, -1)) {
      inside += `/${part}`;
      const seen = await lstat(hostPath(view, inside)).catch(() => undefined);
      if (!seen?.isDirectory()) break;
      const p = hostPath(top, inside);
      if (await exists(p)) continue;
      await mkdir(p);
      await chmod(p, seen.mode & 0o7777);
      try {
        await chown(p, seen.uid, seen.gid);
      } catch (err) {
        // Without root, the tree belongs to the caller and cannot be given away.
        if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
      }
      mirrored.push([p, seen]);
    }
  }
  await writeScaffold(top, entries, mtime);
  for (const [p, seen] of mirrored.reverse()) await utimes(p, seen.atime, seen.mtime);
}
