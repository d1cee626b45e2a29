/**
 * apt's record of which packages were installed only as dependencies
 * (`/var/lib/apt/extended_states`, "Auto-Installed: 1"), as `apt-get install` leaves
 * it: so that in the image `apt-get autoremove` and `apt-mark showauto` know what the
 * spec asked for and what came along. Requested packages and the essential set (a
 * bootstrap's, as debootstrap and mmdebstrap leave it) are manual; every other locked
 * package is automatic. Paragraphs of the base image's file are kept, sorted by name.
 */
import type { LockEntry } from '../apt/lockfile.js';
import { parseControlParagraph } from '../deb/deb.js';

export const EXTENDED_STATES = 'var/lib/apt/extended_states';

/** `arch`: the image's Debian architecture (apt records arch:all packages under it). */
export function extendedStates(entries: readonly LockEntry[], manual: ReadonlySet<string>, arch: string, existing?: string): string {
  const byKey = new Map<string, string>();
  for (const para of (existing ?? '').split(/\n\s*\n/)) {
    if (para.trim() === '') continue;
    const f = parseControlParagraph(para.trim(), EXTENDED_STATES);
    const pkg = f.get('Package');
    if (pkg) byKey.set(`${pkg}:${f.get('Architecture') ?? ''}`, `${para.trim()}\n`);
  }
  for (const e of entries) {
    const a = e.architecture === 'all' ? arch : e.architecture;
    const key = `${e.package}:${a}`;
    if (manual.has(e.package) || e.requiredBy.includes('requested')) {
      byKey.delete(key);
      continue;
    }
    byKey.set(key, `Package: ${e.package}\nArchitecture: ${a}\nAuto-Installed: 1\n`);
  }
  return [...byKey.keys()].sort().map((k) => byKey.get(k)!).join('\n');
}
