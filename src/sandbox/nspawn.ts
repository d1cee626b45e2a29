/**
 * The systemd-nspawn backend (root only). Tested with systemd 252 (Debian 12) on a
 * machine whose PID 1 is not systemd, where these flags make it work:
 *
 * - `--register=no --keep-unit`: no machined registration and no transient scope; both
 *   need a running systemd (D-Bus), which containers and CI runners lack.
 * - `--as-pid2`: a stub init is PID 1 and reaps zombies; the step's shell is PID 2 and
 *   gets normal signal semantics (a shell as PID 1 ignores SIGTERM).
 * - `--pipe`: stdin/stdout/stderr are passed through as they are (no pty).
 * - `--resolv-conf=off --timezone=off --link-journal=no`: nspawn would otherwise copy
 *   or bind /etc/resolv.conf and /etc/localtime and create /var/log/journal, all of
 *   which would end up in the layer; resolv.conf is bound like any other mount instead.
 * - `--settings=no`: no .nspawn file on the host changes a build.
 * - `--private-network` unless the step asks for network; nspawn always gives its own
 *   uts (`--hostname`), ipc, pid and mount namespaces, /proc, /sys (read-only), /dev
 *   and tmpfs /run and /tmp.
 * - `--machine=ocibuild-<random>`: concurrent steps need distinct names (nspawn keeps
 *   per-machine state under /run/systemd/nspawn). Where the host's /run is no tmpfs,
 *   nspawn prints "Attempted to remove disk file system under
 *   /run/systemd/nspawn/propagate/..." on exit; the directory is still removed, and
 *   that line is kept out of the step's output.
 *
 * nspawn also injects variables (container=, container_uuid= with a random value,
 * container_host_*, TERM, HOME, USER, LOGNAME, NOTIFY_SOCKET, ...) that
 * `--setenv` can override but not remove; a one-line `sh` wrapper unsets those the
 * step was not given, so that both backends hand the step the same environment.
 *
 * Teardown: without `--boot`, SIGTERM makes nspawn SIGKILL everything in the container
 * and clean up; nspawn is started under `setpriv --pdeathsig=TERM` so that happens
 * when ocibuild dies too.
 */
import { randomBytes } from 'node:crypto';
import type { SandboxSpec } from './spec.js';
import { runSandboxProcess, type BackendIo, type SandboxProcessResult } from './process.js';
import type { ScaffoldEntry } from './scaffold.js';

/** Variables systemd-nspawn sets in the container by itself (systemd 252), plus the shell's own. */
export const NSPAWN_INJECTED_ENV = [
  'container',
  'container_uuid',
  'container_host_id',
  'container_host_version_id',
  'container_host_build_id',
  'container_host_variant_id',
  'container_host_image_id',
  'container_host_image_version',
  'TERM',
  'HOME',
  'USER',
  'LOGNAME',
  'SHELL',
  'LANG',
  'PATH',
  'NOTIFY_SOCKET',
  'LISTEN_FDS',
  'LISTEN_PID',
  'LISTEN_FDNAMES',
  'CREDENTIALS_DIRECTORY',
  'SHLVL',
];

/** Paths nspawn creates in the tree when they are missing (besides the base mount points). */
export function nspawnScaffold(): ScaffoldEntry[] {
  return [
    // nspawn refuses a tree without /usr ("doesn't look like it has an OS tree").
    { path: '/usr', kind: 'dir' },
    { path: '/root', kind: 'dir', mode: 0o700 },
    { path: '/var', kind: 'dir' },
  ];
}

// nspawn's --bind=SRC:DST splits on ':'; a literal one is written "\:".
function bindPath(p: string): string {
  return p.replace(/\\/g, '\\\\').replace(/:/g, '\\:');
}

export function nspawnArgs(spec: SandboxSpec, machine: string): string[] {
  if (spec.userns !== 'none') throw new Error('systemd-nspawn runs as root only');
  const a = [
    'setpriv',
    '--pdeathsig=TERM',
    '--',
    'systemd-nspawn',
    '--quiet',
    '--register=no',
    '--keep-unit',
    '--as-pid2',
    '--pipe',
    '--settings=no',
    '--resolv-conf=off',
    '--timezone=off',
    '--link-journal=no',
    `--directory=${spec.root}`,
    `--machine=${machine}`,
    `--hostname=${spec.hostname}`,
    `--chdir=${spec.cwd}`,
  ];
  if (!spec.network) a.push('--private-network');
  for (const b of spec.binds) a.push(`${b.readOnly ? '--bind-ro' : '--bind'}=${bindPath(b.source)}:${bindPath(b.target)}`);
  for (const [k, v] of spec.env) a.push(`--setenv=${k}=${v}`);
  const given = new Set(spec.env.map(([k]) => k));
  const unset = NSPAWN_INJECTED_ENV.filter((k) => !given.has(k) || k === 'SHLVL');
  a.push('--', '/bin/sh', '-c', `unset ${unset.join(' ')}; exec "$@"`, 'sh', ...spec.argv);
  return a;
}

// systemd 252 on a host whose /run is no tmpfs: the per-machine directory is removed
// all the same; the complaint is nspawn's, not the step's output.
const PROPAGATE_NOISE = /^Attempted to remove disk file system under "\/run\/systemd\/nspawn\/propagate\/ocibuild-[0-9a-f]+", and we can't allow that\.$/;

export function isPropagateNoise(line: string): boolean {
  return PROPAGATE_NOISE.test(line);
}

// How long nspawn gets to kill the container and clean up after SIGTERM before it is
// killed itself (it then leaves /run/systemd/nspawn state behind).
const TERM_GRACE_MS = 20_000;

export async function runNspawn(spec: SandboxSpec, io: BackendIo): Promise<SandboxProcessResult> {
  const machine = `ocibuild-${randomBytes(6).toString('hex')}`;
  let escalate: NodeJS.Timeout | undefined;
  try {
    return await runSandboxProcess({
      argv: [...spec.enter, ...nspawnArgs(spec, machine)],
      // nspawn reads SYSTEMD_NSPAWN_* and friends from its environment; none may change a build.
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' },
      onOutput: io.onOutput,
      tailLines: io.tailLines,
      signal: io.signal,
      dropLine: (line, stream) => stream === 'stderr' && isPropagateNoise(line),
      kill: (child) => {
        child.signal('SIGTERM');
        escalate = setTimeout(() => child.signal('SIGKILL'), TERM_GRACE_MS);
        escalate.unref();
      },
    });
  } finally {
    if (escalate) clearTimeout(escalate);
  }
}
