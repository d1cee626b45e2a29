/**
 * Overlay mounts for a RUN step: read-only lower trees, an upper directory that
 * receives exactly what the step changed, and the merged tree the sandbox uses as `/`.
 *
 * The mount lives in a private mount namespace owned by a small holder process
 * (`unshare --mount`, plus `--user --map-root-user` without root), never in the
 * host's mount table: as root this is a plain overlay mount; without root the
 * kernel (>= 5.11) allows overlayfs inside a user namespace with the `userxattr`
 * option (overlay's own xattrs then become `user.overlay.*`). The sandbox is
 * started inside that namespace with `nsenter`, and this process reads the merged
 * tree through `/proc/<holder>/root`. The holder exits when its stdin closes, and
 * the namespace, and with it the overlay, goes away with the last process in it:
 * unmounting cannot be forgotten, not on errors, not on abort, not when this
 * process is killed.
 *
 * Mount options make the upper directory a plain diff that the layer writer can
 * read without overlay's private formats: no redirects for renamed directories
 * (`redirect_dir=nofollow`; "off" on kernels that refuse it), no metadata-only
 * copy-ups (`metacopy=off`), no inode index (`index=off`), no inode-number
 * composition (`xino=off`). Each is dropped when the kernel does not know it; which
 * ones hold is learnt once per filesystem by trial mounts.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, statfs } from 'node:fs/promises';
import { release } from 'node:os';
import { join, relative, sep } from 'node:path';
import { OcibuildError } from '../errors.js';
import { namespacedRoot } from './privilege.js';

export interface OverlayLayout {
  /** Read-only trees, topmost first (overlayfs's own order). */
  lowers: string[];
  /** Receives the changes; must be empty, on the same filesystem as `work`. */
  upper: string;
  /** overlayfs's scratch directory; must be empty. */
  work: string;
  /** Where the merged tree is mounted (inside the holder's namespace). */
  merged: string;
}

export interface OverlayFlavor {
  /**
   * Mounted inside a user namespace (no root): adds `userxattr`. The holder creates
   * the namespace, unless this process is already the root of one (a rootless build).
   */
  userns: boolean;
  /** The plain-diff options this kernel accepts. */
  options: string[];
}

export interface MountedOverlay {
  /** The merged tree, as this process can read it (through the holder's /proc/PID/root). */
  view: string;
  /** Argument prefix that runs a program in the namespace where `layout.merged` is the overlay. */
  enter: string[];
  holderPid: number;
  /** Ends the holder; resolves once the namespace, and so the mount, is gone. */
  unmount(): Promise<void>;
}

/** overlayfs cannot be used here; `reason` says which feature or privilege is missing. */
export class OverlayUnavailableError extends OcibuildError {
  constructor(
    readonly reason: string,
    hint: string,
  ) {
    super(`overlayfs is not usable: ${reason}`, { hint });
    this.name = 'OverlayUnavailableError';
  }
}

/** The options wanted for a plain diff, each with the alternatives to try in order. */
export const PLAIN_DIFF_OPTIONS: ReadonlyArray<readonly string[]> = [
  // "off" still follows existing redirects where redirect_always_follow is set, and the
  // kernel refuses it next to userxattr; "nofollow" neither creates nor follows them.
  ['redirect_dir=nofollow', 'redirect_dir=off'],
  ['metacopy=off'],
  ['index=off'],
  ['xino=off'],
];

// The legacy mount(2) call takes one page of option text (util-linux 2.38, as in
// Debian 12, does not use the new mount API); paths are made relative to keep under it.
const MAX_MOUNT_DATA = 4000;

/**
 * The `-o` text for mount(8), with every directory relative to `cwd`, the directory the
 * holder mounts from. Throws an OcibuildError for paths overlayfs cannot take in options.
 */
export function overlayMountData(layout: OverlayLayout, flavor: OverlayFlavor, cwd: string): string {
  if (layout.lowers.length === 0) throw new Error('overlay: no lower directory');
  const rel = (p: string): string => {
    if (/[,:\\\n]/.test(p)) {
      throw new OcibuildError(`overlayfs cannot take the path ${JSON.stringify(p)} (it contains ",", ":", "\\" or a newline)`, {
        where: p,
        hint: 'use a store and build directory whose path has none of these characters',
      });
    }
    const r = relative(cwd, p);
    return r === '' ? '.' : r;
  };
  const parts = [
    `lowerdir=${layout.lowers.map(rel).join(':')}`,
    `upperdir=${rel(layout.upper)}`,
    `workdir=${rel(layout.work)}`,
    ...(flavor.userns ? ['userxattr'] : []),
    ...flavor.options,
  ];
  const data = parts.join(',');
  if (data.length > MAX_MOUNT_DATA) {
    throw new OcibuildError(`overlay mount options are ${data.length} bytes, over the kernel's limit`, {
      hint: 'too many lower layers: flatten the rootfs into fewer directories',
    });
  }
  return data;
}

/** The deepest directory holding all of `paths` (absolute). */
export function commonParent(paths: string[]): string {
  const split = paths.map((p) => p.split(sep).filter((c) => c !== ''));
  const out: string[] = [];
  for (let i = 0; ; i++) {
    const c = split[0]![i];
    // Stop before any path's last component: the result is a proper ancestor of all.
    if (c === undefined || split.some((s) => s[i] !== c || s.length === i + 1)) break;
    out.push(c);
  }
  return '/' + out.join('/');
}

// The holder: mount, say so, then wait for stdin to close. `cat` keeps the namespace alive.
const HOLDER_SCRIPT = 'cd "$1" && mount -t overlay overlay -o "$2" "$3" || exit 1\necho ready\nexec cat >/dev/null';

/** Whether the holder makes a user namespace of its own (see OverlayFlavor.userns). */
function ownUserns(userns: boolean): boolean {
  return userns && !namespacedRoot();
}

function holderArgv(userns: boolean, cwd: string, data: string, merged: string): string[] {
  return [
    'unshare',
    ...(ownUserns(userns) ? ['--user', '--map-root-user'] : []),
    '--mount',
    '--propagation',
    'private',
    '--',
    'sh',
    '-c',
    HOLDER_SCRIPT,
    'ocibuild-overlay',
    cwd,
    data,
    merged,
  ];
}

interface HolderFailure {
  failed: true;
  stderr: string;
  code: number | null;
}

/** Starts a holder; resolves once the overlay is mounted, or with its failure. */
function startHolder(layout: OverlayLayout, flavor: OverlayFlavor): Promise<MountedOverlay | HolderFailure> {
  const cwd = commonParent([...layout.lowers, layout.upper, layout.work, layout.merged]);
  const data = overlayMountData(layout, flavor, cwd);
  return new Promise((resolve) => {
    const [cmd, ...args] = holderArgv(flavor.userns, cwd, data, layout.merged);
    const child = spawn(cmd!, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' },
    });
    let stdout = '';
    let stderr = '';
    let settled = false;
    const exited = new Promise<void>((r) => child.on('close', () => r()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString();
      if (!settled && stdout.includes('ready\n')) {
        settled = true;
        const pid = child.pid!;
        resolve({
          view: `/proc/${pid}/root${layout.merged}`,
          enter: ['nsenter', `--target=${pid}`, '--mount', ...(ownUserns(flavor.userns) ? ['--user', '--preserve-credentials'] : []), '--'],
          holderPid: pid,
          unmount: async () => {
            child.stdin.end();
            await exited;
          },
        });
      }
    });
    // A holder whose stdin is already closed (we died) exits by itself; EPIPE is not ours to report.
    child.stdin.on('error', () => undefined);
    child.on('error', (err) => {
      if (!settled) {
        settled = true;
        resolve({ failed: true, stderr: `${err.message}`, code: null });
      }
    });
    child.on('close', (code) => {
      if (!settled) {
        settled = true;
        resolve({ failed: true, stderr: stderr.trim(), code });
      }
    });
  });
}

/** Mounts the overlay in a fresh holder namespace. */
export async function mountOverlay(layout: OverlayLayout, flavor: OverlayFlavor): Promise<MountedOverlay> {
  await mkdir(layout.merged, { recursive: true });
  const r = await startHolder(layout, flavor);
  if ('failed' in r) {
    const reason = await diagnose(layout.upper, flavor.userns, r.stderr);
    throw new OverlayUnavailableError(reason.reason, reason.hint);
  }
  return r;
}

// One answer per filesystem and mode, failures included: the kernel does not change.
const flavorCache = new Map<string, Promise<OverlayFlavor>>();

/**
 * Learns, by trial mounts in `scratch` (on the filesystem the upper directory will be
 * on), which plain-diff options this kernel takes. Rejects with an
 * OverlayUnavailableError when overlayfs cannot be mounted at all.
 */
export async function probeOverlay(scratch: string, userns: boolean): Promise<OverlayFlavor> {
  const key = `${userns}:${(await stat(scratch)).dev}`;
  let p = flavorCache.get(key);
  if (!p) {
    p = probe(scratch, userns);
    flavorCache.set(key, p);
    // Only a definite answer is kept; an I/O error in the trial itself is retried.
    p.catch((err: unknown) => {
      if (!(err instanceof OverlayUnavailableError)) flavorCache.delete(key);
    });
  }
  return p;
}

async function probe(scratch: string, userns: boolean): Promise<OverlayFlavor> {
  const dir = await mkdtemp(join(scratch, '.overlay-probe-'));
  try {
    let n = 0;
    const attempt = async (options: string[]): Promise<HolderFailure | undefined> => {
      const d = join(dir, String(n++));
      const layout: OverlayLayout = { lowers: [join(d, 'lower')], upper: join(d, 'upper'), work: join(d, 'work'), merged: join(d, 'merged') };
      for (const p of [...layout.lowers, layout.upper, layout.work, layout.merged]) await mkdir(p, { recursive: true });
      const r = await startHolder(layout, { userns, options });
      if ('failed' in r) return r;
      await r.unmount();
      return undefined;
    };
    const first = PLAIN_DIFF_OPTIONS.map((alts) => alts[0]!);
    if ((await attempt(first)) === undefined) return { userns, options: first };
    const bare = await attempt([]);
    if (bare) {
      const reason = await diagnose(scratch, userns, bare.stderr);
      throw new OverlayUnavailableError(reason.reason, reason.hint);
    }
    const options: string[] = [];
    for (const alts of PLAIN_DIFF_OPTIONS) {
      for (const o of alts) {
        if ((await attempt([...options, o])) === undefined) {
          options.push(o);
          break;
        }
      }
    }
    return { userns, options };
  } finally {
    await rmTree(dir);
  }
}

// statfs f_type values (linux/magic.h).
const OVERLAYFS_MAGIC = 0x794c7630;
const TMPFS_MAGIC = 0x01021994;

/** Why a mount failed, in terms of the kernel feature or privilege that is missing. */
async function diagnose(upperDir: string, userns: boolean, stderr: string): Promise<{ reason: string; hint: string }> {
  const filesystems = await readFile('/proc/filesystems', 'utf8').catch(() => '');
  const said = stderr ? ` (mount said: ${stderr.split('\n')[0]})` : '';
  if (!/\toverlay$/m.test(filesystems)) {
    return {
      reason: `the kernel has no overlay filesystem (CONFIG_OVERLAY_FS; "overlay" is not in /proc/filesystems)${said}`,
      hint: 'load it with `modprobe overlay` as root, or use a kernel built with overlayfs',
    };
  }
  const fsType = await statfs(upperDir).then(
    (s) => s.type,
    () => undefined,
  );
  if (fsType === OVERLAYFS_MAGIC) {
    return {
      reason: `the build directory ${upperDir} is itself on overlayfs, which cannot hold an overlay's upper directory${said}`,
      hint: 'put the store and build directories on a real filesystem (a volume, not the container layer)',
    };
  }
  if (userns) {
    const [major = 0, minor = 0] = release().split('.').map((x) => parseInt(x, 10));
    if (major < 5 || (major === 5 && minor < 11)) {
      return {
        reason: `overlay mounts inside a user namespace need Linux 5.11 or later (the "userxattr" option); this kernel is ${release()}${said}`,
        hint: 'run ocibuild as root, or on a newer kernel',
      };
    }
    if (fsType === TMPFS_MAGIC) {
      return {
        reason: `${upperDir} is on tmpfs, which holds user.* xattrs only from Linux 6.6 on; overlay needs them without root${said}`,
        hint: 'put the store and build directories on a disk filesystem (ext4, xfs, btrfs)',
      };
    }
    return {
      reason: `mounting overlayfs inside a user namespace failed${said}`,
      hint: 'the filesystem holding the build directory must support user.* xattrs; or run as root',
    };
  }
  return { reason: `mount -t overlay failed${said}`, hint: 'see `dmesg` for the kernel\'s reason' };
}

/**
 * Removes a tree that overlayfs worked in: its `work/work` directory is left mode 000,
 * which stops a non-root `rm -r`.
 */
export async function rmTree(dir: string): Promise<void> {
  try {
    await rm(dir, { recursive: true, force: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM') throw err;
    await new Promise<void>((resolve, reject) => {
      const c = spawn('chmod', ['-R', 'u+rwx', dir], { stdio: 'ignore' });
      c.on('error', reject);
      c.on('close', () => resolve());
    });
    await rm(dir, { recursive: true, force: true });
  }
}
