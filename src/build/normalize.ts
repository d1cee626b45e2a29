/**
 * What a sandboxed step (RUN, dpkg) leaves that differs from run to run although its
 * inputs are the same, made stable before the upper dir becomes a layer:
 * - logs and caches that record when things happened or are rebuilt on demand (dpkg,
 *   apt and update-alternatives logs, ld.so's aux-cache with inode numbers and times,
 *   debconf's `*-old` copies, apt lists and binary caches, man-db's index) are left
 *   out — only new or changed ones: a deletion (whiteout) stays a deletion;
 * - `/etc/machine-id` written by a step is made empty (systemd's "not yet set": each
 *   container gets its own at first boot);
 * - shadow's "date of last password change" (days since 1970) is clamped to
 *   SOURCE_DATE_EPOCH's day, as file dates are.
 * `.pyc` files need nothing here: with SOURCE_DATE_EPOCH set (every step has it) Python
 * writes hash-checked ones without a date.
 */
import { readFileSync } from 'node:fs';
import { lutimes, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { bytesContent } from '../layer/content.js';
import type { LayerEntry } from '../layer/entry.js';
import { walkTree } from '../layer/tree.js';

const DROPPED_FILES = new Set([
  'var/log/dpkg.log',
  'var/log/alternatives.log',
  'var/log/bootstrap.log',
  'var/cache/ldconfig/aux-cache',
  'var/cache/apt/pkgcache.bin',
  'var/cache/apt/srcpkgcache.bin',
]);
/** Every file below these (the directories themselves stay). */
const DROPPED_UNDER = ['var/log/apt/', 'var/lib/apt/lists/', 'var/cache/man/', 'var/cache/apt/archives/'];
/** Kept below a DROPPED_UNDER directory: apt's lock files and its download dir. */
const KEPT_UNDER = new Set(['var/lib/apt/lists/lock', 'var/lib/apt/lists/partial', 'var/cache/apt/archives/lock', 'var/cache/apt/archives/partial']);
const SHADOW_FILES = new Set(['etc/shadow', 'etc/shadow-']);

/** Whether a step's entry at `path` is volatile and left out (never a whiteout). */
export function isVolatile(path: string): boolean {
  const name = path.slice(path.lastIndexOf('/') + 1);
  if (name.startsWith('.wh.')) return false;
  if (DROPPED_FILES.has(path)) return true;
  if (path.startsWith('var/cache/debconf/') && path.endsWith('-old')) return true;
  return DROPPED_UNDER.some((d) => path.startsWith(d)) && !KEPT_UNDER.has(path);
}

/**
 * shadow(5) lines with the third field (last change, in days) clamped to `maxDay`.
 * Lines without a number there (empty: aging off) are left as they are.
 */
export function clampShadowDates(text: string, maxDay: number): string {
  return text
    .split('\n')
    .map((line) => {
      const f = line.split(':');
      if (f.length < 3 || !/^\d+$/.test(f[2]!) || Number(f[2]) <= maxDay) return line;
      f[2] = String(maxDay);
      return f.join(':');
    })
    .join('\n');
}

/**
 * The entries of a step's upper dir (`upper`, where its files are read from) with the
 * volatile ones left out or normalised, for a layer dated `sourceDateEpoch`.
 */
export function normalizeStepEntries(entries: LayerEntry[], upper: string, sourceDateEpoch: number): LayerEntry[] {
  const dropped = new Set(entries.filter((e) => e.type !== 'directory' && isVolatile(e.path)).map((e) => e.path));
  const out: LayerEntry[] = [];
  for (const e of entries) {
    if (dropped.has(e.path)) continue;
    // A hard link to a dropped file is that same volatile file under another name.
    if (e.type === 'hardlink' && dropped.has(e.target)) continue;
    if (e.type !== 'file') {
      out.push(e);
      continue;
    }
    if (e.path === 'etc/machine-id' && e.size > 0) {
      out.push({ ...e, size: 0, content: bytesContent(Buffer.alloc(0)) });
    } else if (SHADOW_FILES.has(e.path)) {
      const text = readFileSync(`${upper}/${e.path}`, 'utf8');
      const data = Buffer.from(clampShadowDates(text, Math.floor(sourceDateEpoch / 86400)), 'utf8');
      out.push({ ...e, size: data.length, content: bytesContent(data) });
    } else {
      out.push(e);
    }
  }
  return out;
}

/**
 * The same normalisation applied to a tree on disk that a step changed in place (the
 * layer is then the tree as it is): volatile files removed, machine-id emptied, shadow
 * dates clamped, and every date above `sourceDateEpoch` set to it, as the layer writer
 * would clamp them — so the tree equals what extracting its layer gives.
 */
export async function normalizeTree(root: string, sourceDateEpoch: number): Promise<void> {
  for (const e of await walkTree(root)) {
    const abs = `${root}/${e.path}`;
    if (e.type !== 'directory' && isVolatile(e.path)) await rm(abs);
    else if (e.type === 'file' && e.path === 'etc/machine-id' && e.size > 0) await truncate(abs, 0);
    else if (e.type === 'file' && SHADOW_FILES.has(e.path)) {
      const text = await readFile(abs, 'utf8');
      const clamped = clampShadowDates(text, Math.floor(sourceDateEpoch / 86400));
      if (clamped !== text) await writeFile(abs, clamped);
    }
  }
  // After the changes above, which touched their directories' dates.
  for (const e of await walkTree(root)) {
    if (e.mtime > sourceDateEpoch) await lutimes(`${root}/${e.path}`, sourceDateEpoch, sourceDateEpoch);
  }
}
