import { usageError } from '../errors.js';
import { debianArch } from './platform.js';
import type { AptSource, ImageSpec, Platform } from './types.js';

export type PresetKind = 'ubuntu' | 'debian';

/** Release number → codename, for the releases the presets know. */
export const UBUNTU_RELEASES: Readonly<Record<string, string>> = {
  '18.04': 'bionic',
  '20.04': 'focal',
  '22.04': 'jammy',
  '24.04': 'noble',
  '24.10': 'oracular',
  '25.04': 'plucky',
};

export const DEBIAN_RELEASES: Readonly<Record<string, string>> = {
  '11': 'bullseye',
  '12': 'bookworm',
  '13': 'trixie',
};

/** Architectures Ubuntu keeps on archive.ubuntu.com; every other one lives on ports. */
const UBUNTU_PRIMARY_ARCHES = new Set(['amd64', 'i386']);

function releases(kind: PresetKind): Readonly<Record<string, string>> {
  return kind === 'ubuntu' ? UBUNTU_RELEASES : DEBIAN_RELEASES;
}

/**
 * The release number for a version written as a number ("22.04", "12") or a
 * codename ("jammy", "bookworm"); undefined when the preset does not know it.
 */
export function presetRelease(kind: PresetKind, version: string): string | undefined {
  const table = releases(kind);
  const v = version.trim().toLowerCase();
  if (table[v] !== undefined) return v;
  return Object.keys(table).find((k) => table[k] === v);
}

/** "22.04 (jammy), 24.04 (noble)", for error messages. */
export function knownReleases(kind: PresetKind): string {
  return Object.entries(releases(kind)).map(([n, c]) => `${n} (${c})`).join(', ');
}

/**
 * The apt sources of an Ubuntu or Debian release for one Debian architecture.
 * Keyrings stay undefined: the repository client picks the host's archive keyring.
 */
export function sourcesPreset(kind: PresetKind, version: string, arch: string): AptSource[] {
  const release = presetRelease(kind, version);
  const codename = release === undefined ? undefined : releases(kind)[release];
  if (codename === undefined) {
    throw usageError(`unknown ${kind} version "${version}"`, undefined,
      `known ${kind} versions: ${knownReleases(kind)}; for others list apt.sources yourself`);
  }
  if (kind === 'ubuntu') {
    const url = UBUNTU_PRIMARY_ARCHES.has(arch)
      ? 'http://archive.ubuntu.com/ubuntu'
      : 'http://ports.ubuntu.com/ubuntu-ports';
    return [{
      url,
      suites: [codename, `${codename}-updates`, `${codename}-security`],
      components: ['main', 'universe'],
    }];
  }
  // Debian serves security updates from a separate archive (since bullseye the
  // suite is CODENAME-security, not CODENAME/updates).
  return [
    { url: 'http://deb.debian.org/debian', suites: [codename, `${codename}-updates`], components: ['main'] },
    { url: 'http://deb.debian.org/debian-security', suites: [`${codename}-security`], components: ['main'] },
  ];
}

/**
 * The sources to use for one platform of a spec. A preset depends on the
 * architecture (Ubuntu's ports archive), so it is recomputed; explicit sources
 * are the same for every platform.
 */
export function sourcesForPlatform(spec: ImageSpec, platform: Platform): AptSource[] {
  const apt = spec.apt;
  if (apt === undefined) return [];
  if (apt.presetKind !== undefined && apt.presetVersion !== undefined) {
    return sourcesPreset(apt.presetKind, apt.presetVersion, debianArch(platform));
  }
  return apt.sources;
}
