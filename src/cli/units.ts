/**
 * Sizes and durations as people write them on a command line (`cache prune
 * --keep-storage 10GB --older-than 7d`), and ages as `cache ls` prints them.
 */
import { usageError } from '../errors.js';

// coreutils (dd, du, sort -h): K and KiB are 1024, KB and kB are 1000.
const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kib: 1024,
  kb: 1000,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  mb: 1000 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  gb: 1000 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4,
  tb: 1000 ** 4,
};

/** `10GB` → 10⁹, `500MiB` → 500·2²⁰, `1.5G` → 1.5·2³⁰, `0` → 0 (bytes, rounded down). */
export function parseSize(text: string, option = '--keep-storage'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$/.exec(text);
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) {
    throw usageError(`${JSON.stringify(text)} is not a size`, option, 'write a number and a unit, e.g. 10GB, 500MiB, 2G (K/KiB=1024, KB=1000) or 0');
  }
  return Math.floor(Number(m[1]) * unit);
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** `7d`, `12h`, `30m`, `0s`, `1h30m`, `1.5d` → milliseconds. A bare `0` is 0; other bare numbers are refused. */
export function parseDuration(text: string, option = '--older-than'): number {
  const t = text.trim();
  if (t === '0') return 0;
  const part = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/gy;
  let total = 0;
  let end = 0;
  for (let m = part.exec(t); m; m = part.exec(t)) {
    total += Number(m[1]) * DURATION_UNITS[m[2]!]!;
    end = part.lastIndex;
  }
  if (t === '' || end !== t.length) {
    throw usageError(`${JSON.stringify(text)} is not a duration`, option, 'write a number and a unit (s, m, h, d, w), e.g. 7d, 12h, 30m, 1h30m or 0s');
  }
  return Math.floor(total);
}

/** 90 000 ms → "2m ago"; the largest whole unit, as `docker ps` prints ages. */
export function formatAge(ms: number): string {
  if (ms < 0) return 'just now';
  const s = Math.floor(ms / 1000);
  if (s < 60) return s < 5 ? 'just now' : `${s}s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ago`;
  return `${Math.floor(h / 24)}d ago`;
}
