// An unprivileged user with subordinate ids, and a copy of the CLI it can run: for
// tests of rootless builds (src/cli/rootless.ts). The tests run as root and set this up
// themselves (useradd, usermod --add-subuids, the uidmap package).
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { chownSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { subordinateRange } from '../../src/cli/rootless.js';
import { run, type CliRun } from './cli.js';

export const ROOTLESS_USER = 'ocibuild-rootless';
// A range no other test or system user is likely to hold; 65536 ids cover nobody (65534).
export const SUB_START = 300000;
export const SUB_COUNT = 65536;

export interface RootlessUser {
  uid: number;
  gid: number;
  /** The CLI copy the user runs. */
  cli: string;
  /** A directory (made if missing) owned by the user. */
  dir(p: string): Promise<string>;
  /** Runs the CLI as the user, HOME in `home`. */
  ocibuild(args: string[], env?: NodeJS.ProcessEnv): Promise<CliRun>;
  /** Starts the CLI as the user (its pid is the CLI's own: setpriv and the launcher exec). */
  spawn(args: string[]): ChildProcessWithoutNullStreams;
}

function sh(cmd: string): string {
  return execFileSync('sh', ['-c', cmd], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Sets up the user (idempotent) and copies the CLI into `tmp` (which must be 0755). */
export async function rootlessUser(tmp: string): Promise<RootlessUser> {
  if (process.getuid?.() !== 0) throw new Error('setting up a rootless test user needs root');
  // One set-up at a time: test files run in parallel, and two useradds or usermods
  // racing would fail or write a range twice.
  const setup = [
    'set -e',
    'command -v newuidmap >/dev/null && command -v newgidmap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q uidmap >/dev/null',
    `id -u ${ROOTLESS_USER} >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin ${ROOTLESS_USER}`,
    `grep -q '^${ROOTLESS_USER}:' /etc/subuid 2>/dev/null || usermod --add-subuids ${SUB_START}-${SUB_START + SUB_COUNT - 1} ${ROOTLESS_USER}`,
    `grep -q '^${ROOTLESS_USER}:' /etc/subgid 2>/dev/null || usermod --add-subgids ${SUB_START}-${SUB_START + SUB_COUNT - 1} ${ROOTLESS_USER}`,
  ].join('\n');
  execFileSync('flock', ['/run/lock/ocibuild-rootless-user.lock', 'sh', '-c', setup], { stdio: ['ignore', 'pipe', 'pipe'] });
  for (const file of ['/etc/subuid', '/etc/subgid']) {
    if (!subordinateRange(readFileSync(file, 'utf8'), { name: ROOTLESS_USER, id: -1 })) throw new Error(`${file} has no usable range for ${ROOTLESS_USER}`);
  }
  const uid = Number(sh(`id -u ${ROOTLESS_USER}`).trim());
  const gid = Number(sh(`id -g ${ROOTLESS_USER}`).trim());

  // The repository may sit in root's private home: the user runs a readable copy.
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
  const app = path.join(tmp, 'app');
  await mkdir(app, { recursive: true });
  for (const part of ['bin', 'dist', 'native', 'node_modules', 'package.json']) execFileSync('cp', ['-a', path.join(root, part), app]);
  execFileSync('chmod', ['-R', 'a+rX', app]);
  const cli = path.join(app, 'bin/ocibuild');

  return {
    uid,
    gid,
    cli,
    async dir(p) {
      await mkdir(p, { recursive: true });
      chownSync(p, uid, gid);
      return p;
    },
    ocibuild(args, env = {}) {
      return run('setpriv', [`--reuid=${uid}`, `--regid=${gid}`, '--init-groups', '--', cli, ...args], {
        PATH: process.env.PATH,
        HOME: path.join(tmp, 'home'),
        LC_ALL: 'C',
        ...env,
      });
    },
    spawn(args) {
      return spawn('setpriv', [`--reuid=${uid}`, `--regid=${gid}`, '--init-groups', '--', cli, ...args], {
        env: { PATH: process.env.PATH, HOME: path.join(tmp, 'home'), LC_ALL: 'C' },
      });
    },
  };
}
