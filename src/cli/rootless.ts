/**
 * Rootless builds. Extracting a rootfs gives files to many owners (root, daemon,
 * nobody…) and a RUN step may switch users: an unprivileged process can do neither.
 * So, as podman and buildah do, a command that extracts or removes rootfs trees
 * (build, verify, cache) re-runs itself as uid 0 of a user namespace whose ids map to
 * the caller's own uid (0) and subordinate ids (1…N, from /etc/subuid and /etc/subgid,
 * written by the setuid helpers newuidmap/newgidmap of the uidmap package). Inside,
 * extraction, chown, setuid bits, file capabilities and uid switches work as with root;
 * overlays are mounted with `userxattr` (sandbox/overlay.ts) and systemd-nspawn is out.
 * On the host the store's files belong to the caller and to its subordinate ids, so
 * `ocibuild cache prune` (which runs in the same namespace) is the way to delete them.
 *
 * Without subordinate ids or the helpers the command runs as it is, unprivileged: what
 * needs no root (locking, `install: unpack` builds, pushing) works, and a step that
 * needs root fails with a hint naming what to set up. OCIBUILD_ROOTLESS=0 turns the
 * re-run off.
 */
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { accessSync, constants, readFileSync } from 'node:fs';
import { constants as osConstants, userInfo } from 'node:os';
import type { Duplex } from 'node:stream';

/** Set in the re-run process: it must not re-run again. */
export const IN_USERNS_ENV = 'OCIBUILD_IN_USERNS';
/** Commands that extract or remove rootfs trees. */
const NEEDS_ROOT = new Set(['build', 'verify', 'cache']);

export interface IdRange {
  start: number;
  count: number;
}

/**
 * The first subordinate range of `user` in subuid(5)/subgid(5) text: lines
 * `name-or-id:start:count`, as shadow's newuidmap reads them.
 */
export function subordinateRange(text: string, user: { name: string; id: number }): IdRange | undefined {
  for (const line of text.split('\n')) {
    const f = line.trim().split(':');
    if (f.length !== 3 || (f[0] !== user.name && f[0] !== String(user.id))) continue;
    const start = Number(f[1]);
    const count = Number(f[2]);
    if (Number.isSafeInteger(start) && Number.isSafeInteger(count) && count > 0) return { start, count };
  }
  return undefined;
}

export interface RootlessPlan {
  uid: number;
  gid: number;
  subuid: IdRange;
  subgid: IdRange;
}

/** The command name: the first argument that is not an option. */
function commandOf(args: readonly string[]): string | undefined {
  return args.find((a) => !a.startsWith('-'));
}

function onPath(name: string): boolean {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    try {
      if (dir) {
        accessSync(`${dir}/${name}`, constants.X_OK);
        return true;
      }
    } catch {
      // next
    }
  }
  return false;
}

/** Whether and how `args` re-runs in a user namespace; undefined to run as it is. */
export function rootlessPlan(args: readonly string[], env: NodeJS.ProcessEnv = process.env): RootlessPlan | undefined {
  const uid = process.getuid?.();
  const gid = process.getgid?.();
  if (uid === undefined || gid === undefined || uid === 0) return undefined;
  if (env[IN_USERNS_ENV] || env.OCIBUILD_ROOTLESS === '0') return undefined;
  const command = commandOf(args);
  if (command === undefined || !NEEDS_ROOT.has(command) || args.includes('--help') || args.includes('-h')) return undefined;
  if (!['unshare', 'newuidmap', 'newgidmap'].every(onPath)) return undefined;
  let name: string;
  try {
    name = userInfo().username;
  } catch {
    name = String(uid);
  }
  const read = (file: string): string => {
    try {
      return readFileSync(file, 'utf8');
    } catch {
      return '';
    }
  };
  const subuid = subordinateRange(read('/etc/subuid'), { name, id: uid });
  const subgid = subordinateRange(read('/etc/subgid'), { name, id: gid });
  if (!subuid || !subgid) return undefined;
  return { uid, gid, subuid, subgid };
}

// The child: tells the parent it is in its new user namespace, waits until the parent
// has written the id maps, then becomes the command.
const HANDSHAKE = 'echo ready >&3; read go <&3; exec 3<&-; exec "$@"';

function run(file: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(file, args, (err, _stdout, stderr) => (err ? reject(new Error(`${file} ${args.join(' ')}: ${stderr.trim() || err.message}`)) : resolve()));
  });
}

/**
 * Runs this same command (node, its options, the script, `args`) as root of a new
 * user namespace mapped per `plan`, and resolves with its exit code. Resolves with
 * undefined, after a warning, when the namespace cannot be set up (the caller then
 * runs the command itself).
 */
export async function runRootless(args: readonly string[], plan: RootlessPlan): Promise<number | undefined> {
  const script = process.argv[1]!;
  const child = spawn('unshare', ['--user', '--', 'sh', '-c', HANDSHAKE, 'sh', process.execPath, ...process.execArgv, script, ...args], {
    stdio: ['inherit', 'inherit', 'inherit', 'pipe'],
    env: { ...process.env, [IN_USERNS_ENV]: '1' },
  });
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  const channel = child.stdio[3] as Duplex;
  try {
    const ready = await Promise.race([once(channel, 'data'), exited.then(() => undefined)]);
    if (ready === undefined) throw new Error('unshare --user failed (are unprivileged user namespaces enabled?)');
    const pid = String(child.pid);
    await run('newuidmap', [pid, '0', String(plan.uid), '1', '1', String(plan.subuid.start), String(plan.subuid.count)]);
    await run('newgidmap', [pid, '0', String(plan.gid), '1', '1', String(plan.subgid.start), String(plan.subgid.count)]);
  } catch (err) {
    child.kill('SIGKILL');
    await exited;
    process.stderr.write(`ocibuild: warning: cannot run rootless in a user namespace (${(err as Error).message}); going on unprivileged, and a step that needs root will fail\n`);
    return undefined;
  }
  channel.end('go\n');
  // Signals are passed on, SIGINT too (`kill -INT` of this pid, `timeout -s INT`); a
  // terminal's Ctrl-C reaches the child in this process group as well, and the child
  // takes the repeat as the same request (main.ts). This process only waits.
  const forward = (sig: NodeJS.Signals): void => {
    child.kill(sig);
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  const handlers = signals.map((sig) => {
    const h = (): void => forward(sig);
    process.on(sig, h);
    return [sig, h] as const;
  });
  try {
    const [code, signal] = await exited;
    if (signal) return 128 + (signalNumber(signal) ?? 1);
    return code ?? 1;
  } finally {
    for (const [sig, h] of handlers) process.removeListener(sig, h);
  }
}

function signalNumber(signal: NodeJS.Signals): number | undefined {
  return (osConstants.signals as Record<string, number | undefined>)[signal];
}
