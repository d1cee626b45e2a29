/**
 * The installed set from a dpkg status file (var/lib/dpkg/status of a base image).
 * Only packages whose Status says "installed" count, as for apt's CurrentVer:
 * half-installed, config-files or not-installed entries are not there for apt either.
 */
import { OcibuildError } from '../errors.js';
import type { InstalledPackage, PackageRecord } from './types.js';

const MULTI_ARCH = new Set(['same', 'foreign', 'allowed', 'no']);

export function parseDpkgStatus(text: string, where: string, nativeArch?: string): InstalledPackage[] {
  const out: InstalledPackage[] = [];
  const lines = text.replace(/\r\n?/g, '\n').split('\n');
  let fields = new Map<string, string>();
  let start = 1;
  let key: string | undefined;
  const flush = (): void => {
    if (fields.size === 0) return;
    const pkg = fields.get('package');
    const version = fields.get('version');
    const status = (fields.get('status') ?? '').split(/\s+/);
    if (!pkg) throw new OcibuildError('paragraph without a Package field', { where: `${where}:${start}` });
    // "install ok installed": the third word is dpkg's package state.
    if (status[2] === 'installed' && version) {
      const arch = fields.get('architecture') ?? 'all';
      if (!nativeArch || arch === nativeArch || arch === 'all') {
        const ma = fields.get('multi-arch') ?? 'no';
        out.push({
          package: pkg,
          version,
          architecture: arch,
          multiArch: (MULTI_ARCH.has(ma) ? ma : 'no') as PackageRecord['multiArch'],
          essential: fields.get('essential') === 'yes',
          provides: fields.get('provides') ?? '',
          depends: fields.get('depends') ?? '',
          preDepends: fields.get('pre-depends') ?? '',
          conflicts: fields.get('conflicts') ?? '',
          breaks: fields.get('breaks') ?? '',
          source: fields.get('source') ?? '',
          priority: fields.get('priority') ?? '',
        });
      }
    }
    fields = new Map();
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line === '') {
      flush();
      key = undefined;
      continue;
    }
    if (fields.size === 0) start = i + 1;
    if (line[0] === ' ' || line[0] === '\t') {
      if (key && key !== 'description' && key !== 'conffiles') fields.set(key, `${fields.get(key)} ${line.trim()}`);
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) throw new OcibuildError(`malformed line ${JSON.stringify(line.slice(0, 80))}`, { where: `${where}:${i + 1}` });
    key = line.slice(0, colon).toLowerCase();
    fields.set(key, line.slice(colon + 1).trim());
  }
  flush();
  return out;
}
