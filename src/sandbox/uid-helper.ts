/**
 * Switching to the image's `User` inside a sandbox started as root.
 *
 * Neither backend can do it for any image: bubblewrap before 0.11 (Debian 12 has
 * 0.8) takes `--uid` only together with a new user namespace, where uid 1000 would
 * really be host root writing root-owned files into the layer; systemd-nspawn's
 * `--user` asks the image's `getent` (absent from busybox and distroless images) and
 * takes no group. And the image may have no setpriv/su at all.
 *
 * So the host's own util-linux `setpriv` does it: the program, its shared libraries
 * and the host's dynamic loader are bind-mounted read-only under /run/ocibuild (a
 * tmpfs of the sandbox, so nothing reaches the layer) and started through that loader
 * with `--inhibit-cache` and `--library-path`, so that the image's libc and
 * ld.so.cache are never mixed in. setpriv sets gid, supplementary groups and uid,
 * clears the inheritable capabilities, and execs the image's /bin/sh.
 */
import { execFile } from 'node:child_process';
import { access, constants, realpath } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { OcibuildError } from '../errors.js';
import type { BindMount } from './spec.js';

export interface UidHelper {
  /** Read-only binds the helper needs, all under /run/ocibuild. */
  binds: BindMount[];
  /** The argv prefix that switches to uid/gid/groups then runs the rest of the argv. */
  argv(uid: number, gid: number, groups: number[]): string[];
}

export const HELPER_DIR = '/run/ocibuild';

/** Parses `ldd` output: the loader and the libraries with a path. */
export function parseLdd(text: string): { loader: string | undefined; libs: Array<{ soname: string; path: string }> } {
  let loader: string | undefined;
  const libs: Array<{ soname: string; path: string }> = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const arrow = /^(\S+) => (\/\S+) \(0x[0-9a-f]+\)$/.exec(line);
    if (arrow) {
      libs.push({ soname: arrow[1]!, path: arrow[2]! });
      continue;
    }
    const bare = /^(\/\S+) \(0x[0-9a-f]+\)$/.exec(line);
    if (bare) loader = bare[1]!;
  }
  return { loader, libs };
}

let cached: Promise<UidHelper> | undefined;

/** The host setpriv helper; rejects with an OcibuildError naming what is missing. */
export function hostUidHelper(): Promise<UidHelper> {
  cached ??= build();
  cached.catch(() => (cached = undefined));
  return cached;
}

async function findInPath(name: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    if (!dir) continue;
    const p = join(dir, name);
    try {
      await access(p, constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return undefined;
}

async function build(): Promise<UidHelper> {
  const setpriv = await findInPath('setpriv');
  if (!setpriv) {
    throw new OcibuildError('running a step as a non-root user needs the host\'s setpriv, which is not installed', {
      hint: 'install util-linux (Debian/Ubuntu: apt-get install util-linux)',
    });
  }
  const out = await new Promise<string>((resolve, reject) =>
    execFile('ldd', [setpriv], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' } }, (err, stdout, stderr) =>
      err ? reject(new OcibuildError(`ldd ${setpriv} failed: ${stderr.trim() || err.message}`, { hint: 'install libc-bin (ldd)' })) : resolve(stdout),
    ),
  );
  const { loader, libs } = parseLdd(out);
  if (!loader) throw new OcibuildError(`cannot find the dynamic loader of ${setpriv} in ldd's output`, { where: setpriv });
  const binds: BindMount[] = [
    { source: await realpath(setpriv), target: `${HELPER_DIR}/setpriv`, readOnly: true },
    { source: await realpath(loader), target: `${HELPER_DIR}/lib/ld.so`, readOnly: true },
  ];
  for (const l of libs) binds.push({ source: await realpath(l.path), target: `${HELPER_DIR}/lib/${basename(l.soname)}`, readOnly: true });
  return {
    binds,
    argv: (uid, gid, groups) => [
      `${HELPER_DIR}/lib/ld.so`,
      '--inhibit-cache',
      '--library-path',
      `${HELPER_DIR}/lib`,
      `${HELPER_DIR}/setpriv`,
      `--regid=${gid}`,
      groups.length > 0 ? `--groups=${groups.join(',')}` : '--clear-groups',
      `--reuid=${uid}`,
      '--inh-caps=-all',
      '--',
    ],
  };
}
