/**
 * What a sandbox backend is asked to run: everything already resolved against the
 * rootfs (paths, user, environment), so that bwrap and systemd-nspawn only translate
 * it into their own flags and both give the step the same world.
 */
export type SandboxKind = 'bwrap' | 'nspawn';

export interface BindMount {
  /** Host path. */
  source: string;
  /** Absolute path inside the sandbox (resolved). */
  target: string;
  readOnly: boolean;
}

/**
 * How the sandbox relates to user namespaces:
 * - `none`: started by real root;
 * - `inside`: `enter` puts it in a user namespace where the caller is root (the
 *   overlay holder's, without real root);
 * - `create`: no namespace yet and no root: bwrap must create one itself.
 */
export type UsernsMode = 'none' | 'inside' | 'create';

export interface SandboxSpec {
  /** The tree that becomes `/`, as a path valid after `enter`. */
  root: string;
  /** Argument prefix entering the namespace where `root` is mounted (empty: the host's). */
  enter: string[];
  userns: UsernsMode;
  /** The program and arguments run inside, already wrapped for the user switch if any. */
  argv: string[];
  /** The complete environment of `argv`, in order. */
  env: Array<[string, string]>;
  /** Working directory inside (absolute, resolved, existing). */
  cwd: string;
  /** The ids bwrap maps itself to when it has to create a user namespace (`userns` not `none`). */
  uid: number;
  gid: number;
  hostname: string;
  network: boolean;
  /** Resolved paths inside the rootfs that get a fresh tmpfs (/tmp, /run), with their modes. */
  tmpfs: Array<{ path: string; mode: number }>;
  /** Bind mounts, targets resolved and existing (or under one of `tmpfs`), parents first. */
  binds: BindMount[];
}
