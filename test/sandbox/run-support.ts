// Shared by the RUN-step tests: a real rootfs made of Debian's static busybox, tree
// listings to prove what changed and what did not, and a search for leftover processes.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chown, copyFile, chmod, lstat, mkdir, readdir, readFile, readlink, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

export const BUSYBOX = '/bin/busybox';

/**
 * A tiny rootfs: /bin/busybox and its applets as symlinks where `busybox --install -s`
 * puts them (`--list-full`), /etc/passwd and /etc/group with root, `app` (1000) and a
 * `staff` group app belongs to, and app's home. Owned by `owner` (root by default).
 */
export async function makeBusyboxRootfs(root: string, owner?: { uid: number; gid: number }): Promise<void> {
  await mkdir(join(root, 'bin'), { recursive: true });
  await copyFile(BUSYBOX, join(root, 'bin/busybox'));
  await chmod(join(root, 'bin/busybox'), 0o755);
  const applets = execFileSync(BUSYBOX, ['--list-full']).toString().trim().split('\n');
  for (const p of applets) {
    if (p === 'bin/busybox' || p === 'linuxrc') continue;
    await mkdir(dirname(join(root, p)), { recursive: true });
    await symlink('/bin/busybox', join(root, p));
  }
  await mkdir(join(root, 'etc'));
  await writeFile(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n');
  await writeFile(join(root, 'etc/group'), 'root:x:0:\nstaff:x:50:app\napp:x:1000:\nnogroup:x:65534:\n');
  await writeFile(join(root, 'etc/motd'), 'welcome\n');
  await mkdir(join(root, 'root'), { mode: 0o700 });
  await mkdir(join(root, 'home/app'), { recursive: true });
  await mkdir(join(root, 'srv/data'), { recursive: true });
  await writeFile(join(root, 'srv/data/keep.txt'), 'keep\n');
  await writeFile(join(root, 'srv/data/drop.txt'), 'drop\n');
  if (owner) execFileSync('chown', ['-R', '-h', `${owner.uid}:${owner.gid}`, root]);
  else await chown(join(root, 'home/app'), 1000, 1000);
}

export interface Entry {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  ino: number;
  mtimeMs: number;
  /** sha256 of a file's bytes, a symlink's target, a device's numbers. */
  content: string;
}

/** Every entry under `root` (relative path → what it is), for before/after comparisons. */
export async function listTree(root: string): Promise<Record<string, Entry>> {
  const out: Record<string, Entry> = {};
  const walk = async (rel: string): Promise<void> => {
    for (const name of (await readdir(rel ? join(root, rel) : root)).sort()) {
      const p = rel ? `${rel}/${name}` : name;
      const st = await lstat(join(root, p));
      const type = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : st.isCharacterDevice() ? 'char' : 'other';
      let content = '';
      if (st.isFile()) content = createHash('sha256').update(await readFile(join(root, p))).digest('hex');
      else if (st.isSymbolicLink()) content = await readlink(join(root, p));
      else if (st.isCharacterDevice()) content = `${st.rdev}`;
      out[p] = { type, mode: st.mode, uid: st.uid, gid: st.gid, ino: st.ino, mtimeMs: st.mtimeMs, content };
      if (st.isDirectory()) await walk(p);
    }
  };
  await walk('');
  return out;
}

/** Relative paths under `root`, with whiteouts (char 0/0) marked "path (whiteout)". */
export async function upperPaths(root: string): Promise<string[]> {
  const t = await listTree(root);
  return Object.entries(t)
    .map(([p, e]) => (e.type === 'char' && e.content === '0' ? `${p} (whiteout)` : p))
    .sort();
}

/** Pids of processes whose environment holds `marker` (e.g. "OCIBUILD_TEST_MARK=abc"). */
export async function processesWithMarker(marker: string): Promise<number[]> {
  const pids: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const env = (await readFile(`/proc/${name}/environ`)).toString().split('\0');
      if (env.includes(marker)) pids.push(Number(name));
    } catch {
      // gone, or a kernel thread
    }
  }
  return pids;
}
