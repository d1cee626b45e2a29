/**
 * The image config's `User` ("", "name", "uid", "name:group", "uid:gid", ...) resolved
 * against the rootfs's own /etc/passwd and /etc/group, as Docker and runc do: names
 * must exist there, numbers need not; without an explicit group a known user gets its
 * passwd gid and the supplementary groups that list it as a member; HOME comes from
 * passwd, else "/" (runc's default for an unknown numeric user).
 */
import { OcibuildError } from '../errors.js';

export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

export interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

export interface ResolvedUser {
  uid: number;
  gid: number;
  /** Supplementary groups, ascending, without duplicates. */
  groups: number[];
  home: string;
}

const ID = /^\d+$/;
// Linux ids are 32-bit; (uid_t)-1 means "unchanged" to the kernel and is no user.
const MAX_ID = 4294967294;

/** passwd(5) lines `name:pw:uid:gid:gecos:home:shell`; malformed lines are skipped (as libc does). */
export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 7 || !f[0] || !ID.test(f[2]!) || !ID.test(f[3]!)) continue;
    out.push({ name: f[0], uid: Number(f[2]), gid: Number(f[3]), home: f[5]! });
  }
  return out;
}

/** group(5) lines `name:pw:gid:member,member`. */
export function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 4 || !f[0] || !ID.test(f[2]!)) continue;
    out.push({ name: f[0], gid: Number(f[2]), members: f[3]!.split(',').filter((m) => m !== '') });
  }
  return out;
}

function numericId(text: string, what: string, spec: string): number {
  const n = Number(text);
  if (n > MAX_ID) throw userError(`${what} ${text} in user "${spec}" is out of range`, spec);
  return n;
}

/**
 * `spec` as an image config's `User`; `passwd`/`group` the rootfs's files (undefined
 * when the rootfs has none). Throws an OcibuildError naming the missing user or group.
 */
export function resolveUser(spec: string, passwd: string | undefined, group: string | undefined): ResolvedUser {
  const users = passwd === undefined ? [] : parsePasswd(passwd);
  const groups = group === undefined ? [] : parseGroup(group);
  const trimmed = spec.trim();
  const colon = trimmed.indexOf(':');
  const userPart = colon < 0 ? trimmed : trimmed.slice(0, colon);
  const groupPart = colon < 0 ? undefined : trimmed.slice(colon + 1);
  if (groupPart === '') throw userError(`user "${spec}" has an empty group after ":"`, spec);

  let entry: PasswdEntry | undefined;
  let uid: number;
  if (userPart === '') {
    if (groupPart !== undefined) throw userError(`user "${spec}" names a group but no user`, spec);
    uid = 0;
    entry = users.find((u) => u.uid === 0);
  } else if (ID.test(userPart)) {
    uid = numericId(userPart, 'uid', spec);
    entry = users.find((u) => u.uid === uid);
  } else {
    entry = users.find((u) => u.name === userPart);
    if (!entry) {
      throw userError(
        `user "${userPart}" is not in the image's /etc/passwd`,
        spec,
        passwd === undefined ? 'the image has no /etc/passwd: give a numeric uid[:gid]' : 'create the user in an earlier step, or give a numeric uid[:gid]',
      );
    }
    uid = entry.uid;
  }

  let gid: number;
  let supplementary: number[] = [];
  if (groupPart === undefined) {
    gid = entry?.gid ?? 0;
    if (entry) supplementary = groups.filter((g) => g.members.includes(entry!.name)).map((g) => g.gid);
  } else if (ID.test(groupPart)) {
    gid = numericId(groupPart, 'gid', spec);
  } else {
    const g = groups.find((x) => x.name === groupPart);
    if (!g) throw userError(`group "${groupPart}" is not in the image's /etc/group`, spec, 'give a numeric gid');
    gid = g.gid;
  }
  const all = [...new Set([gid, ...supplementary])].sort((a, b) => a - b);
  // runc's defaults for a user without passwd entry; root keeps its usual home.
  return { uid, gid, groups: all, home: entry?.home || (uid === 0 ? '/root' : '/') };
}

function userError(message: string, spec: string, hint?: string): OcibuildError {
  return new OcibuildError(message, { where: `user: ${JSON.stringify(spec)}`, hint });
}
