/**
 * Root of the machine, or root of a user namespace. A rootless build runs as uid 0 of
 * a user namespace that maps the caller's subordinate ids (cli/rootless.ts): there it
 * can chown, switch users and mount overlays, but the kernel keeps `trusted.*` xattrs
 * (overlayfs's default) and device nodes other than whiteouts out of reach, and
 * systemd-nspawn refuses to run.
 */
import { readFileSync } from 'node:fs';

let cached: boolean | undefined;

/** The initial user namespace maps every id to itself: `0 0 4294967295`. */
export function isInitialUserNamespace(uidMap: string): boolean {
  const lines = uidMap.trim().split('\n');
  return lines.length === 1 && lines[0]!.trim().split(/\s+/).join(' ') === '0 0 4294967295';
}

/** uid 0 in a user namespace other than the machine's own. */
export function namespacedRoot(): boolean {
  if (cached === undefined) {
    let map: string;
    try {
      map = readFileSync('/proc/self/uid_map', 'utf8');
    } catch {
      map = '0 0 4294967295';
    }
    cached = process.getuid?.() === 0 && !isInitialUserNamespace(map);
  }
  return cached;
}
