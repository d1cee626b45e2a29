/**
 * Release files (the payload of InRelease, or Release + Release.gpg), following
 * https://wiki.debian.org/DebianRepository/Format#A.22Release.22_files.
 */
import { OcibuildError } from '../errors.js';

export interface ReleaseEntry {
  size: number;
  /** Lower-case hex. */
  sha256: string;
}

export interface ReleaseFile {
  origin: string;
  label: string;
  suite: string;
  codename: string;
  date?: Date;
  validUntil?: Date;
  architectures: string[];
  components: string[];
  acquireByHash: boolean;
  /** e.g. "Packages": arch:all packages are (also) in binary-all, not only in binary-<arch>. */
  noSupportForArchitectureAll?: string;
  /** Path relative to dists/<suite>/ → size and sha256. */
  sha256: Map<string, ReleaseEntry>;
  /** apt's default pin priority for this suite: 500; 100 with NotAutomatic and
   *  ButAutomaticUpgrades (backports); 1 with NotAutomatic alone (experimental). */
  pin: number;
}

export function parseRelease(text: string, where: string): ReleaseFile {
  const fields = new Map<string, string>();
  let current: string | undefined;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/\r$/, '');
    if (line === '') {
      // A Release file is a single paragraph; anything after a blank line is not ours.
      if (fields.size > 0) break;
      continue;
    }
    if (line[0] === ' ' || line[0] === '\t') {
      if (current === undefined) {
        throw new OcibuildError(`malformed Release file: continuation line ${i + 1} before any field`, {
          where,
        });
      }
      fields.set(current, `${fields.get(current)}\n${line.trim()}`);
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) {
      throw new OcibuildError(`malformed Release file: line ${i + 1} is not "Field: value"`, { where });
    }
    current = line.slice(0, colon).trim().toLowerCase();
    fields.set(current, line.slice(colon + 1).trim());
  }

  const sums = fields.get('sha256');
  if (sums === undefined) {
    throw new OcibuildError('the Release file has no SHA256 section', {
      where,
      hint: 'MD5Sum/SHA1-only repositories cannot be verified and are not trusted; use a mirror that publishes SHA256 sums',
    });
  }
  const sha256 = new Map<string, ReleaseEntry>();
  for (const entry of sums.split('\n')) {
    if (entry === '') continue;
    const parts = entry.split(/\s+/);
    const [hex, size, path] = parts;
    if (parts.length !== 3 || !hex || !/^[0-9a-fA-F]{64}$/.test(hex) || !size || !/^\d+$/.test(size) || !path) {
      throw new OcibuildError(`malformed SHA256 entry in the Release file: ${JSON.stringify(entry)}`, { where });
    }
    sha256.set(path, { size: Number(size), sha256: hex.toLowerCase() });
  }

  const release: ReleaseFile = {
    origin: fields.get('origin') ?? '',
    label: fields.get('label') ?? '',
    suite: fields.get('suite') ?? '',
    codename: fields.get('codename') ?? '',
    architectures: words(fields.get('architectures')),
    components: words(fields.get('components')),
    acquireByHash: (fields.get('acquire-by-hash') ?? '').toLowerCase() === 'yes',
    sha256,
    pin: defaultPin(fields.get('notautomatic'), fields.get('butautomaticupgrades')),
  };
  const date = fields.get('date');
  if (date !== undefined) release.date = parseDate(date, 'Date', where);
  const validUntil = fields.get('valid-until');
  if (validUntil !== undefined) release.validUntil = parseDate(validUntil, 'Valid-Until', where);
  const nsa = fields.get('no-support-for-architecture-all');
  if (nsa !== undefined) release.noSupportForArchitectureAll = nsa;
  return release;
}

/** apt_preferences(5): "NotAutomatic: yes" suites get priority 1, with "ButAutomaticUpgrades: yes" 100. */
function defaultPin(notAutomatic: string | undefined, butAutomaticUpgrades: string | undefined): number {
  if ((notAutomatic ?? '').toLowerCase() !== 'yes') return 500;
  return (butAutomaticUpgrades ?? '').toLowerCase() === 'yes' ? 100 : 1;
}

function words(value: string | undefined): string[] {
  return value === undefined ? [] : value.split(/\s+/).filter((w) => w !== '');
}

/** RFC 2822 dates as apt writes them ("Sat, 10 Jun 2023 08:54:35 UTC"). */
function parseDate(value: string, field: string, where: string): Date {
  // Date.parse reads RFC 2822 but not the "UTC" zone name apt writes; GMT is equivalent.
  const ms = Date.parse(value.replace(/\bUTC$/, 'GMT'));
  if (Number.isNaN(ms)) {
    throw new OcibuildError(`malformed ${field} in the Release file: ${JSON.stringify(value)}`, { where });
  }
  return new Date(ms);
}
