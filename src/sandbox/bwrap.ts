/**
 * The bubblewrap backend. bwrap 0.8 (Debian 12) has no `--overlay`, so it is given the
 * already merged tree (or the fallback copy) with `--bind ROOT /`, and builds the rest
 * itself: fresh /proc, a minimal /dev (null, zero, full, random, urandom, tty,
 * ptmx + pts) with a tmpfs /dev/shm, tmpfs /tmp and /run, new pid, ipc, uts (fixed
 * hostname), cgroup and, unless the step asks for network, net namespaces.
 *
 * Teardown: `--die-with-parent` makes the sandbox's init die with bwrap; an abort
 * SIGKILLs that init (its pid comes from `--info-fd`), after which bwrap itself reaps
 * it and exits. The kernel only lets a pid namespace's init be reaped once every
 * process in it is gone, so when bwrap has exited nothing of the step runs any more.
 */
import type { SandboxSpec } from './spec.js';
import { runSandboxProcess, type BackendIo, type SandboxChild, type SandboxProcessResult } from './process.js';

/** bwrap's command line for `spec` (after the `enter` prefix). */
export function bwrapArgs(spec: SandboxSpec, infoFd?: number): string[] {
  const a = ['bwrap', '--bind', spec.root, '/', '--proc', '/proc', '--dev', '/dev', '--perms', '1777', '--tmpfs', '/dev/shm'];
  for (const t of spec.tmpfs) a.push('--perms', t.mode.toString(8).padStart(4, '0'), '--tmpfs', t.path);
  for (const b of spec.binds) a.push(b.readOnly ? '--ro-bind' : '--bind', b.source, b.target);
  a.push('--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-cgroup-try');
  if (!spec.network) a.push('--unshare-net');
  if (spec.userns === 'create' || (spec.userns === 'inside' && (spec.uid !== 0 || spec.gid !== 0))) {
    // Only one id is mapped in an unprivileged namespace: the step's uid is a view, and
    // what it writes belongs to the invoking user (see run-step.ts).
    a.push('--unshare-user', '--uid', String(spec.uid), '--gid', String(spec.gid));
  }
  a.push('--hostname', spec.hostname, '--die-with-parent', '--new-session', '--clearenv');
  for (const [k, v] of spec.env) a.push('--setenv', k, v);
  a.push('--chdir', spec.cwd);
  if (infoFd !== undefined) a.push('--info-fd', String(infoFd));
  a.push('--', ...spec.argv);
  return a;
}

export async function runBwrap(spec: SandboxSpec, io: BackendIo): Promise<SandboxProcessResult> {
  let initPid: number | undefined;
  let info = '';
  const kill = (child: SandboxChild): void => {
    if (initPid !== undefined) {
      try {
        process.kill(initPid, 'SIGKILL');
        return;
      } catch {
        // already gone
      }
    }
    // Not started yet: bwrap's own death takes the sandbox with it (--die-with-parent),
    // though then without waiting for the namespace to empty.
    child.signal('SIGKILL');
  };
  return runSandboxProcess({
    argv: [...spec.enter, ...bwrapArgs(spec, 3)],
    env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' },
    onOutput: io.onOutput,
    tailLines: io.tailLines,
    signal: io.signal,
    extraOutputs: 1,
    onExtraOutput: (_fd, text) => {
      info += text;
      const m = /"child-pid"\s*:\s*(\d+)/.exec(info);
      if (m) initPid = Number(m[1]);
    },
    kill,
  });
}
