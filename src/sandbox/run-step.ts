/**
 * One RUN step: the spec's lines run by `/bin/sh -c` with `set -e` in a sandbox whose
 * `/` is an overlay of the lower trees, and the upper directory, holding exactly what
 * the step changed, is the result (src/sandbox/upper.ts turns it into a layer).
 *
 * The step sees its rootfs and nothing else of the host but what it was given: a
 * fresh /proc, a minimal /dev, tmpfs /tmp and /run, the requested read-only (or, for
 * caches, writable) bind mounts, and /etc/resolv.conf from the host only when it has
 * network. Its environment is exactly the image config's Env, the step's env, PATH
 * and HOME when those do not set them, and SOURCE_DATE_EPOCH; its hostname is fixed.
 * Mount points that do not exist in the image come from a scaffold layer below the
 * image (see scaffold.ts), so none of them reaches the upper directory.
 *
 * Without root, bwrap runs inside the overlay holder's user namespace, where only the
 * caller's uid is mapped (to 0): a step run as another user sees that uid, but what it
 * writes is owned by the caller, and the rootfs must belong to the caller too.
 */
import { lstat, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { OcibuildError } from '../errors.js';
import { detectSandbox, type SandboxChoice, type SandboxRequest } from './detect.js';
import { runBwrap } from './bwrap.js';
import { nspawnScaffold, runNspawn } from './nspawn.js';
import { mountOverlay, probeOverlay, rmTree, OverlayUnavailableError, type MountedOverlay, type OverlayFlavor } from './overlay.js';
import type { BackendIo, OutputHandler, SandboxProcessResult } from './process.js';
import { hostPath, isUnder, resolveInRoot } from './rootpath.js';
import { baseScaffold, removeScaffold, writeOverScaffold, writeScaffold, type ScaffoldEntry } from './scaffold.js';
import { copyLowers, diffToUpper, snapshot, type WhiteoutFormat } from './snapshot.js';
import type { BindMount, SandboxKind, SandboxSpec, UsernsMode } from './spec.js';
import { hostUidHelper } from './uid-helper.js';
import { resolveUser, type ResolvedUser } from './user.js';

/** The parts of an OCI image config a RUN step uses. */
export interface RunConfig {
  Env?: string[];
  WorkingDir?: string;
  User?: string;
}

export interface StepMount {
  /** Host path (file or directory). */
  source: string;
  /** Absolute path inside the sandbox. */
  target: string;
  /** Read-only unless false (cache mounts). */
  readOnly?: boolean;
}

export interface RunStepOptions {
  /** Read-only trees, topmost first: the cached rootfs last, earlier uppers above it. */
  lowers: string[];
  /**
   * A directory owned by this step, on the filesystem the result should be on; the
   * upper directory is created in it as `upper`, work files next to it and removed.
   */
  dir: string;
  /**
   * Give the step an /etc/hosts naming its hostname, as a container runtime gives a
   * build step (sudo, hostname -f, JVMs and some maintainer scripts look it up).
   */
  hosts?: boolean;
  /** The shell lines; one script, stopped by the first failing line. */
  run: string[];
  /** Where each of `run` was written ("image.yaml:12:5"), for the failing line's message. */
  lineWheres?: string[];
  /** A step of ocibuild's own (not the spec's RUN lines): its name and hint for a failure. */
  step?: { name: string; hint: string };
  config?: RunConfig;
  /** Per-step overrides of the image config. */
  env?: Record<string, string>;
  user?: string;
  workdir?: string;
  sourceDateEpoch: number;
  network?: boolean;
  mounts?: StepMount[];
  sandbox?: SandboxRequest;
  /**
   * `auto`: overlayfs, else the copy fallback with a warning; `require`: overlayfs or
   * an error; `copy`: the fallback; `in-place`: the single lower dir itself is the
   * root and takes the changes (no upper dir: the result is the tree), for a tree the
   * step owns alone, such as a bootstrap from scratch (overlayfs makes dpkg slower).
   */
  overlay?: 'auto' | 'require' | 'copy' | 'in-place';
  onOutput?: OutputHandler;
  /** Lines of output kept for the error message (default 30). */
  tailLines?: number;
  signal?: AbortSignal;
  warn?: (message: string) => void;
  /** Where the step comes from, for messages ("image.yaml:12"). */
  where?: string;
}

export interface RunStepResult {
  /** The upper directory: the step's changes in overlayfs's format (in place: the tree itself). */
  upper: string;
  sandbox: SandboxKind;
  method: 'overlay' | 'copy' | 'in-place';
  /**
   * How deletions are written in `upper`: overlayfs's character devices 0/0, or, from
   * the copy fallback on a filesystem that refuses those (overlayfs), `.wh.NAME` files.
   */
  whiteouts: WhiteoutFormat;
  /**
   * The namespace of overlayfs's own xattrs in `upper` (for upper.ts): `user` from a
   * `userxattr` mount without root, `trusted` otherwise.
   */
  overlayXattrs: 'trusted' | 'user';
}

/** A RUN step that exited non-zero: its exit code and the last lines of its output. */
export class StepFailedError extends OcibuildError {
  constructor(
    readonly stepExitCode: number | undefined,
    readonly termSignal: string | undefined,
    readonly outputTail: string[],
    where: string | undefined,
    /** The failing line (0-based) and the number of lines, when the shell said which. */
    line?: { index: number; of: number },
    /** What failed, for steps that are not the spec's RUN lines (dpkg's install). */
    step?: { name: string; hint: string },
  ) {
    const how = stepExitCode !== undefined ? `exit code ${stepExitCode}` : `signal ${termSignal ?? 'unknown'}`;
    const tail = outputTail.length > 0 ? `; its last output:\n${outputTail.map((l) => `  | ${l}`).join('\n')}` : ' with no output';
    const which = line && line.of > 1 && !step ? ` line ${line.index + 1} of ${line.of}` : '';
    super(`${step?.name ?? 'RUN'}${which} failed with ${how}${tail}`, { where, hint: step?.hint ?? 'the first failing line stops the step (sh -c with set -e)' });
    this.name = 'StepFailedError';
  }
}

export const SANDBOX_HOSTNAME = 'ocibuild';
const HOSTS = `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t${SANDBOX_HOSTNAME}\n`;
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const HOST_RESOLV_CONF = '/etc/resolv.conf';

/**
 * The script `sh -c` runs: the lines, stopped by the first one that fails, with the
 * umask runc gives a container (the caller's own would leak into file modes).
 */
export function stepScript(lines: string[]): string {
  // The preamble shares the first line, so the shell's line numbers in its messages
  // ("sh: 2: useradd: not found") count the spec's lines.
  if (lines.length === 0) return 'set -e; umask 0022';
  return [`set -e; umask 0022; ${lines[0]}`, ...lines.slice(1)].join('\n');
}

/**
 * Which of `lines` failed, from the shell's own message in the output's tail (dash and
 * bash name the script line: "sh: 3: …", "bash: line 3: …"); undefined when it does
 * not say (a command that only exits non-zero).
 */
export function failedLine(lines: readonly string[], tail: readonly string[]): number | undefined {
  let scriptLine: number | undefined;
  for (const t of tail) {
    // Only the step's own shell, started as /bin/sh (a nested `sh -c` says "sh: 1:").
    const m = /^\/bin\/sh: (?:line )?(\d+): /.exec(t);
    if (m) scriptLine = Number(m[1]);
  }
  if (scriptLine === undefined) return undefined;
  let first = 1;
  for (const [i, line] of lines.entries()) {
    const count = line.split('\n').length;
    if (scriptLine < first + count) return i;
    first += count;
  }
  return undefined;
}

/** The step's complete environment, in a stable order. */
export function stepEnv(config: RunConfig | undefined, env: Record<string, string> | undefined, home: string, sourceDateEpoch: number): Array<[string, string]> {
  const out = new Map<string, string>();
  const set = (k: string, v: string, from: string): void => {
    if (!/^[^=\0]+$/.test(k) || v.includes('\0')) throw new OcibuildError(`invalid environment variable ${JSON.stringify(k)}`, { where: from });
    out.delete(k);
    out.set(k, v);
  };
  for (const kv of config?.Env ?? []) {
    const eq = kv.indexOf('=');
    if (eq <= 0) set(kv, '', 'config.Env');
    else set(kv.slice(0, eq), kv.slice(eq + 1), 'config.Env');
  }
  for (const [k, v] of Object.entries(env ?? {})) set(k, v, 'env');
  if (!out.has('PATH')) out.set('PATH', DEFAULT_PATH);
  if (!out.has('HOME')) out.set('HOME', home);
  out.delete('SOURCE_DATE_EPOCH');
  out.set('SOURCE_DATE_EPOCH', String(sourceDateEpoch));
  return [...out];
}

interface Plan {
  missing: ScaffoldEntry[];
  user: ResolvedUser;
  cwd: string;
  tmpfs: Array<{ path: string; mode: number }>;
  binds: BindMount[];
}

const TMPFS_DIRS: Array<{ path: string; mode: number }> = [
  { path: '/tmp', mode: 0o1777 },
  { path: '/run', mode: 0o755 },
];
// Kernel filesystems the sandbox mounts whole; nothing may be bound below them.
const NO_BIND_UNDER = ['/proc', '/sys', '/dev'];

async function readInRoot(view: string, path: string): Promise<string | undefined> {
  const r = await resolveInRoot(view, path);
  if (r.kind !== 'file') return undefined;
  return readFile(hostPath(view, r.path), 'utf8');
}

/** Resolves everything the sandbox needs against the tree at `view`. */
async function plan(view: string, o: RunStepOptions, hostResolv: boolean): Promise<Plan> {
  const missing: ScaffoldEntry[] = [];
  // Said here, not as bwrap's "execvp /bin/sh: No such file or directory".
  if ((await resolveInRoot(view, '/bin/sh')).kind !== 'file') {
    throw new OcibuildError('the image has no /bin/sh to run the RUN lines with', {
      where: o.where,
      hint: 'install a shell in an earlier step (e.g. apt packages dash or bash, or busybox with a /bin/sh link)',
    });
  }
  const userSpec = o.user ?? o.config?.User ?? '';
  const user = resolveUser(userSpec, await readInRoot(view, '/etc/passwd'), await readInRoot(view, '/etc/group'));

  const tmpfs: Plan['tmpfs'] = [];
  for (const t of TMPFS_DIRS) {
    const r = await resolveInRoot(view, t.path);
    if (r.kind !== undefined && r.kind !== 'dir') throw new OcibuildError(`the image's ${t.path} is not a directory`, { where: o.where });
    if (r.kind === undefined) missing.push({ path: r.path, kind: 'dir', mode: t.mode });
    tmpfs.push({ path: r.path, mode: t.mode });
  }
  const inTmpfs = (p: string): boolean => tmpfs.some((t) => isUnder(p, t.path) && p !== t.path);

  const workdir = o.workdir ?? (o.config?.WorkingDir || '/');
  if (!workdir.startsWith('/')) throw new OcibuildError(`working directory ${JSON.stringify(workdir)} is not absolute`, { where: o.where });
  const wd = await resolveInRoot(view, workdir);
  if (wd.kind !== undefined && wd.kind !== 'dir') throw new OcibuildError(`working directory ${workdir} is not a directory in the image`, { where: o.where });
  if (wd.kind === undefined) {
    if (inTmpfs(wd.path)) throw new OcibuildError(`working directory ${workdir} is inside a tmpfs of the sandbox and does not exist`, { where: o.where });
    // Made for the step's user, as BuildKit makes a WORKDIR: a non-root user can write there.
    missing.push({ path: wd.path, kind: 'dir', ...(user.uid !== 0 || user.gid !== 0 ? { uid: user.uid, gid: user.gid } : {}) });
  }

  const binds: BindMount[] = [];
  const wanted: Array<{ source: string; target: string; readOnly: boolean; kind: 'file' | 'dir' }> = [];
  for (const m of o.mounts ?? []) {
    if (!m.target.startsWith('/')) throw new OcibuildError(`mount target ${JSON.stringify(m.target)} is not absolute`, { where: o.where });
    let st;
    try {
      st = await stat(m.source);
    } catch (err) {
      throw new OcibuildError(`mount source ${m.source} cannot be used: ${(err as Error).message}`, { where: o.where, cause: err });
    }
    wanted.push({ source: m.source, target: m.target, readOnly: m.readOnly !== false, kind: st.isDirectory() ? 'dir' : 'file' });
  }
  if (hostResolv) wanted.push({ source: HOST_RESOLV_CONF, target: '/etc/resolv.conf', readOnly: true, kind: 'file' });
  for (const w of wanted) {
    const r = await resolveInRoot(view, w.target);
    if (NO_BIND_UNDER.some((d) => isUnder(r.path, d))) {
      throw new OcibuildError(`mount target ${w.target} is under /proc, /sys or /dev`, { where: o.where });
    }
    if (r.kind !== undefined && (r.kind === 'dir') !== (w.kind === 'dir')) {
      throw new OcibuildError(`mount target ${w.target} is a ${r.kind === 'dir' ? 'directory' : 'file'} in the image but ${w.source} is not`, { where: o.where });
    }
    if (r.kind === undefined && !inTmpfs(r.path)) missing.push({ path: r.path, kind: w.kind });
    binds.push({ source: w.source, target: r.path, readOnly: w.readOnly });
  }
  return { missing, user, cwd: wd.path, tmpfs, binds };
}

// Runs the remaining argv after exporting NAME=VALUE arguments up to "--": the image's
// LD_* variables must not reach the host's setpriv, only the step.
const LATE_ENV = 'while [ "$1" != -- ]; do export "$1"; shift; done; shift; exec "$@"';

async function command(o: RunStepOptions, p: Plan, userns: UsernsMode): Promise<{ argv: string[]; env: Array<[string, string]>; binds: BindMount[] }> {
  let env = stepEnv(o.config, o.env, p.user.home, o.sourceDateEpoch);
  let argv = ['/bin/sh', '-c', stepScript(o.run)];
  const needsSwitch = p.user.uid !== 0 || p.user.gid !== 0 || p.user.groups.some((g) => g !== 0);
  if (userns !== 'none' || !needsSwitch) return { argv, env, binds: [] };
  const helper = await hostUidHelper();
  const late = env.filter(([k]) => k.startsWith('LD_'));
  if (late.length > 0) {
    env = env.filter(([k]) => !k.startsWith('LD_'));
    argv = ['/bin/sh', '-c', LATE_ENV, 'sh', ...late.map(([k, v]) => `${k}=${v}`), '--', ...argv];
  }
  return { argv: [...helper.argv(p.user.uid, p.user.gid, p.user.groups), ...argv], env, binds: helper.binds };
}

async function emptyDir(path: string): Promise<void> {
  await mkdir(path, { recursive: true });
  if ((await readdir(path)).length > 0) throw new OcibuildError(`${path} is not empty`, { where: path, hint: 'give each step a fresh directory' });
}

/** Runs one RUN step; see the module comment. */
export async function runStep(o: RunStepOptions): Promise<RunStepResult> {
  o.signal?.throwIfAborted();
  if (o.lowers.length === 0) throw new Error('runStep: no lower directory');
  for (const l of o.lowers) {
    const st = await lstat(l).catch(() => undefined);
    if (!st?.isDirectory()) throw new OcibuildError(`the rootfs ${l} is not a directory`, { where: l });
  }
  const choice = await detectSandbox(o.sandbox ?? 'auto');
  if (o.overlay === 'in-place' && o.lowers.length !== 1) throw new Error('runStep: in place needs exactly one tree');
  const upper = o.overlay === 'in-place' ? o.lowers[0]! : join(o.dir, 'upper');
  if (o.overlay !== 'in-place') await emptyDir(upper);
  const scaffold = [...baseScaffold(), ...(choice.kind === 'nspawn' ? nspawnScaffold() : [])];
  const hostResolv = o.network === true && (await stat(HOST_RESOLV_CONF).then(() => true, () => false));
  if (o.network && !hostResolv) o.warn?.(`network is on but the host has no ${HOST_RESOLV_CONF}; the step gets the image's own`);
  if (hostResolv) scaffold.push({ path: '/etc/resolv.conf', kind: 'file' });
  if (o.hosts) {
    // A writable copy of this step's own: what the step writes to it is in no layer.
    await mkdir(o.dir, { recursive: true });
    const hosts = join(o.dir, 'hosts');
    await writeFile(hosts, HOSTS, { mode: 0o644 });
    scaffold.push({ path: '/etc/hosts', kind: 'file' });
    o = { ...o, mounts: [...(o.mounts ?? []), { source: hosts, target: '/etc/hosts', readOnly: false }] };
  }

  let run: Ran | undefined;
  try {
    if (o.overlay === 'in-place') run = await inPlace(o, choice, upper, scaffold, hostResolv);
    else if (o.overlay !== 'copy') {
      try {
        run = await onOverlay(o, choice, upper, scaffold, hostResolv, await probeOverlay(o.dir, !choice.root || choice.namespaced));
      } catch (err) {
        if (!(err instanceof OverlayUnavailableError) || o.overlay === 'require') throw err;
        o.warn?.(`${err.message}; falling back to copying the rootfs and comparing it afterwards (slower, uses disk space)`);
      }
    }
    run ??= await onCopy(o, choice, upper, scaffold, hostResolv);
  } catch (err) {
    if (o.overlay !== 'in-place') await rmTree(upper);
    throw err;
  }

  const { result } = run;
  if ((result.aborted || result.spawnError || result.exitCode !== 0) && o.overlay !== 'in-place') await rmTree(upper);
  if (result.aborted) throw o.signal?.reason ?? new DOMException('The operation was aborted', 'AbortError');
  if (result.spawnError) {
    throw new OcibuildError(`the ${choice.kind} sandbox could not start: ${result.spawnError.message}`, { where: o.where, cause: result.spawnError });
  }
  if (result.exitCode !== 0) {
    const index = o.step ? undefined : failedLine(o.run, result.tail);
    const line = index !== undefined ? { index, of: o.run.length } : undefined;
    throw new StepFailedError(result.exitCode, result.termSignal, result.tail, (index !== undefined ? o.lineWheres?.[index] : undefined) ?? o.where, line, o.step);
  }
  if (run.whiteouts === 'wh-files') o.warn?.(`${o.dir} refuses whiteout devices (it is on overlayfs?): deletions are written as .wh.NAME files`);
  return {
    upper,
    sandbox: choice.kind,
    method: run.method,
    whiteouts: run.whiteouts,
    overlayXattrs: run.method === 'overlay' && (!choice.root || choice.namespaced) ? 'user' : 'trusted',
  };
}

interface Ran {
  result: SandboxProcessResult;
  method: 'overlay' | 'copy' | 'in-place';
  whiteouts: WhiteoutFormat;
}

async function onOverlay(o: RunStepOptions, choice: SandboxChoice, upper: string, scaffold: ScaffoldEntry[], hostResolv: boolean, flavor: OverlayFlavor): Promise<Ran> {
  const userns: UsernsMode = choice.root ? 'none' : 'inside';
  const scaffoldDir = join(o.dir, 'scaffold');
  const overDir = join(o.dir, 'scaffold-over');
  const layout = { lowers: [...o.lowers, scaffoldDir], upper, work: join(o.dir, 'work'), merged: join(o.dir, 'merged') };
  let mounted: MountedOverlay | undefined;
  try {
    await emptyDir(scaffoldDir);
    await emptyDir(layout.work);
    await writeScaffold(scaffoldDir, scaffold, o.sourceDateEpoch);
    mounted = await mountOverlay(layout, flavor);
    let p = await plan(mounted.view, o, hostResolv);
    // Mount points the image lacks go into a scaffold, which may only change unmounted:
    // first the one below the image; what a higher layer still hides, the one above.
    for (const round of ['below', 'above'] as const) {
      if (p.missing.length === 0) break;
      const view = mounted.view;
      if (round === 'above') {
        await emptyDir(overDir);
        await writeOverScaffold(overDir, view, p.missing, o.sourceDateEpoch);
      }
      await mounted.unmount();
      mounted = undefined;
      if (round === 'below') await writeScaffold(scaffoldDir, p.missing, o.sourceDateEpoch);
      else layout.lowers = [overDir, ...layout.lowers];
      mounted = await mountOverlay(layout, flavor);
      p = await plan(mounted.view, o, hostResolv);
    }
    if (p.missing.length > 0) throw new Error(`scaffold still lacks ${p.missing.map((m) => m.path).join(', ')}`);
    const cmd = await command(o, p, userns);
    o.signal?.throwIfAborted();
    const result = await launch(choice.kind, spec(layout.merged, mounted.enter, userns, p, cmd, o), o);
    return { result, method: 'overlay', whiteouts: 'device' };
  } finally {
    await mounted?.unmount();
    await rmTree(layout.work);
    await rmTree(scaffoldDir);
    await rmTree(overDir);
    await rm(layout.merged, { recursive: true, force: true });
  }
}

async function onCopy(o: RunStepOptions, choice: SandboxChoice, upper: string, scaffold: ScaffoldEntry[], hostResolv: boolean): Promise<Ran> {
  const userns: UsernsMode = choice.root ? 'none' : 'create';
  const copy = join(o.dir, 'copy');
  try {
    await emptyDir(copy);
    await copyLowers(o.lowers, copy);
    await writeScaffold(copy, scaffold, o.sourceDateEpoch);
    let p = await plan(copy, o, hostResolv);
    if (p.missing.length > 0) {
      await writeScaffold(copy, p.missing, o.sourceDateEpoch);
      p = await plan(copy, o, hostResolv);
    }
    // Taken after the scaffold was written, so that its entries are no change.
    const before = await snapshot(copy);
    const cmd = await command(o, p, userns);
    o.signal?.throwIfAborted();
    const result = await launch(choice.kind, spec(copy, [], userns, p, cmd, o), o);
    const ok = !result.aborted && !result.spawnError && result.exitCode === 0;
    return { result, method: 'copy', whiteouts: ok ? await diffToUpper(copy, before, upper) : 'device' };
  } finally {
    await rmTree(copy);
  }
}

async function inPlace(o: RunStepOptions, choice: SandboxChoice, root: string, scaffold: ScaffoldEntry[], hostResolv: boolean): Promise<Ran> {
  const userns: UsernsMode = choice.root ? 'none' : 'create';
  const created = await writeScaffold(root, scaffold, o.sourceDateEpoch);
  try {
    let p = await plan(root, o, hostResolv);
    if (p.missing.length > 0) {
      created.push(...(await writeScaffold(root, p.missing, o.sourceDateEpoch)));
      created.sort().reverse();
      p = await plan(root, o, hostResolv);
    }
    const cmd = await command(o, p, userns);
    o.signal?.throwIfAborted();
    return { result: await launch(choice.kind, spec(root, [], userns, p, cmd, o), o), method: 'in-place', whiteouts: 'device' };
  } finally {
    await removeScaffold(created);
  }
}

function spec(root: string, enter: string[], userns: UsernsMode, p: Plan, cmd: { argv: string[]; env: Array<[string, string]>; binds: BindMount[] }, o: RunStepOptions): SandboxSpec {
  const binds = [...p.binds, ...cmd.binds];
  // Parents before children, so that a bind inside another lands on top of it.
  binds.sort((a, b) => a.target.split('/').length - b.target.split('/').length || (a.target < b.target ? -1 : a.target > b.target ? 1 : 0));
  return {
    root,
    enter,
    userns,
    argv: cmd.argv,
    env: cmd.env,
    cwd: p.cwd,
    uid: userns === 'none' ? 0 : p.user.uid,
    gid: userns === 'none' ? 0 : p.user.gid,
    hostname: SANDBOX_HOSTNAME,
    network: o.network === true,
    tmpfs: p.tmpfs,
    binds,
  };
}

function launch(kind: SandboxKind, s: SandboxSpec, o: RunStepOptions): Promise<SandboxProcessResult> {
  const io: BackendIo = { onOutput: o.onOutput, tailLines: o.tailLines ?? 30, signal: o.signal };
  return kind === 'nspawn' ? runNspawn(s, io) : runBwrap(s, io);
}
