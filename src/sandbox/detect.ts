/**
 * Which sandbox can run here: `bwrap` by default when it works, `nspawn` when asked
 * (root only). Each is tried once per process with a trivial command, so that a
 * machine that cannot run it is told why (the tool's own words, and which package or
 * kernel feature is missing) before a build step would fail in a confusing way.
 */
import { execFile } from 'node:child_process';
import { access, constants, lstat, mkdir, mkdtemp, readFile, readlink, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OcibuildError } from '../errors.js';
import { namespacedRoot } from './privilege.js';
import type { SandboxKind } from './spec.js';

export type SandboxRequest = 'auto' | SandboxKind;

export interface SandboxChoice {
  kind: SandboxKind;
  /** Running as root (plain overlay mounts, real uid switches), of the machine or of a user namespace. */
  root: boolean;
  /** Root of a user namespace (a rootless build): overlays need `userxattr`, nspawn is out. */
  namespaced: boolean;
}

export interface DetectDeps {
  uid: number;
  /** uid 0 of a user namespace, not of the machine (privilege.ts); default false. */
  namespaced?: boolean;
  /** A program's path on PATH, or undefined. */
  which(name: string): Promise<string | undefined>;
  /** The contents of a /proc/sys file, or undefined when it does not exist. */
  readSysctl(path: string): Promise<string | undefined>;
  /** Runs a trial command; resolves with its exit code and output. */
  trial(argv: string[]): Promise<{ code: number | null; output: string }>;
}

export const hostDeps: DetectDeps = {
  uid: process.getuid?.() ?? -1,
  namespaced: namespacedRoot(),
  async which(name) {
    for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
      if (!dir) continue;
      try {
        await access(join(dir, name), constants.X_OK);
        return join(dir, name);
      } catch {
        // next
      }
    }
    return undefined;
  },
  async readSysctl(path) {
    return readFile(path, 'utf8').then(
      (t) => t.trim(),
      () => undefined,
    );
  },
  trial(argv) {
    return new Promise((resolve) => {
      execFile(argv[0]!, argv.slice(1), { env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' }, timeout: 60_000 }, (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : null) : 0;
        resolve({ code, output: `${stdout}${stderr}`.trim() || (err ? err.message : '') });
      });
    });
  },
};

/**
 * Why unprivileged user namespaces are unavailable, from the sysctls that switch them
 * off (Debian's patch, the generic limit, Ubuntu's AppArmor restriction), or undefined.
 */
export async function usernsBlocker(readSysctl: DetectDeps['readSysctl']): Promise<string | undefined> {
  if ((await readSysctl('/proc/sys/kernel/unprivileged_userns_clone')) === '0') {
    return 'unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0); enable them with `sysctl -w kernel.unprivileged_userns_clone=1`';
  }
  if ((await readSysctl('/proc/sys/user/max_user_namespaces')) === '0') {
    return 'user namespaces are disabled (user.max_user_namespaces = 0); enable them with `sysctl -w user.max_user_namespaces=15000`';
  }
  if ((await readSysctl('/proc/sys/kernel/apparmor_restrict_unprivileged_userns')) === '1') {
    return 'AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1); allow bwrap and unshare with an AppArmor profile, or `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`';
  }
  return undefined;
}

const cache = new Map<string, Promise<SandboxChoice>>();

/** The backend to use; rejects with an OcibuildError saying what to install or enable. */
export function detectSandbox(request: SandboxRequest = 'auto', deps: DetectDeps = hostDeps): Promise<SandboxChoice> {
  const key = `${request}:${deps.uid}`;
  const useCache = deps === hostDeps;
  let p = useCache ? cache.get(key) : undefined;
  if (!p) {
    p = detect(request, deps);
    if (useCache) {
      cache.set(key, p);
      p.catch(() => cache.delete(key));
    }
  }
  return p;
}

async function detect(request: SandboxRequest, deps: DetectDeps): Promise<SandboxChoice> {
  const root = deps.uid === 0;
  const namespaced = root && deps.namespaced === true;
  if (request === 'nspawn') {
    const why = await nspawnProblem(deps);
    if (why) throw new OcibuildError(`sandbox nspawn cannot be used: ${why.reason}`, { hint: why.hint });
    return { kind: 'nspawn', root: true, namespaced: false };
  }
  const bw = await bwrapProblem(deps);
  if (!bw) return { kind: 'bwrap', root, namespaced };
  if (request === 'bwrap') throw new OcibuildError(`sandbox bwrap cannot be used: ${bw.reason}`, { hint: bw.hint });
  const ns = await nspawnProblem(deps);
  if (!ns) return { kind: 'nspawn', root: true, namespaced: false };
  throw new OcibuildError(`no sandbox can run RUN steps here: bwrap: ${bw.reason}; systemd-nspawn: ${ns.reason}`, {
    hint: `${bw.hint}; or ${ns.hint}`,
  });
}

interface Problem {
  reason: string;
  hint: string;
}

async function bwrapProblem(deps: DetectDeps): Promise<Problem | undefined> {
  const bwrap = await deps.which('bwrap');
  if (!bwrap) return { reason: 'bwrap is not installed', hint: 'install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap)' };
  const root = deps.uid === 0;
  // The overlay holder (overlay.ts) and the way into its namespace, in both modes.
  for (const tool of ['unshare', 'nsenter', 'mount']) {
    if (!(await deps.which(tool))) return { reason: `${tool} is not installed`, hint: `install ${tool === 'mount' ? 'mount' : 'util-linux'}` };
  }
  if (!root) {
    const blocker = await usernsBlocker(deps.readSysctl);
    if (blocker) return { reason: blocker, hint: 'or run ocibuild as root' };
    const u = await deps.trial(['unshare', '--user', '--map-root-user', '--mount', 'true']);
    if (u.code !== 0) {
      return { reason: `unshare cannot create a user and mount namespace: ${u.output}`, hint: 'enable unprivileged user namespaces, or run ocibuild as root' };
    }
  }
  const trueBin = (await deps.which('true')) ?? '/bin/true';
  const t = await deps.trial([
    'bwrap',
    '--ro-bind', '/', '/',
    '--proc', '/proc',
    '--dev', '/dev',
    '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-net',
    ...(root ? [] : ['--unshare-user']),
    '--die-with-parent',
    '--', trueBin,
  ]);
  if (t.code !== 0) {
    return {
      reason: `a trial bwrap run failed: ${t.output || `exit code ${t.code}`}`,
      hint: root
        ? 'bwrap needs to create namespaces (in a container: CAP_SYS_ADMIN, or a seccomp profile allowing unshare/mount)'
        : 'unprivileged bwrap needs user namespaces; run as root or enable them',
    };
  }
  return undefined;
}

async function nspawnProblem(deps: DetectDeps): Promise<Problem | undefined> {
  if (deps.uid !== 0) return { reason: 'systemd-nspawn needs root', hint: 'run ocibuild as root, or use sandbox: bwrap' };
  if (deps.namespaced) {
    return { reason: 'systemd-nspawn needs the machine\'s root, and this rootless build runs as root of a user namespace', hint: 'use sandbox: bwrap, or run ocibuild as root' };
  }
  if (!(await deps.which('systemd-nspawn'))) {
    return { reason: 'systemd-nspawn is not installed', hint: 'install systemd-container (Debian/Ubuntu: apt-get install systemd-container)' };
  }
  for (const tool of ['unshare', 'nsenter', 'mount', 'setpriv']) {
    if (!(await deps.which(tool))) return { reason: `${tool} is not installed`, hint: `install ${tool === 'mount' ? 'mount' : 'util-linux'}` };
  }
  const trueBin = (await deps.which('true')) ?? '/usr/bin/true';
  const tree = await mkdtemp(join(tmpdir(), 'ocibuild-nspawn-trial-'));
  try {
    // A throwaway tree made of the host's own /usr (read-only) and top-level links, so
    // that `true` runs; only nspawn itself is being tried.
    const binds: string[] = [];
    await mkdir(join(tree, 'usr'));
    binds.push('--bind-ro=/usr:/usr');
    for (const top of ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32']) {
      const st = await lstat(`/${top}`).catch(() => undefined);
      if (!st) continue;
      if (st.isSymbolicLink()) await symlink(await readlink(`/${top}`), join(tree, top));
      else if (st.isDirectory()) {
        await mkdir(join(tree, top));
        binds.push(`--bind-ro=/${top}:/${top}`);
      }
    }
    const t = await deps.trial([
      'systemd-nspawn', '--quiet', '--register=no', '--keep-unit', '--as-pid2', '--pipe', '--settings=no',
      '--resolv-conf=off', '--timezone=off', '--link-journal=no', '--private-network',
      `--directory=${tree}`, `--machine=ocibuild-trial-${process.pid}`, ...binds, '--', trueBin,
    ]);
    if (t.code !== 0) {
      return {
        reason: `a trial systemd-nspawn run failed (exit code ${t.code}): ${t.output}`,
        hint: 'systemd-nspawn needs root with CAP_SYS_ADMIN and namespaces; or use sandbox: bwrap',
      };
    }
  } finally {
    await rm(tree, { recursive: true, force: true });
  }
  return undefined;
}
