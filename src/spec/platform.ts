import { usageError } from '../errors.js';
import type { Platform } from './types.js';

/** The platform built when a spec lists none. */
export const DEFAULT_PLATFORM: Platform = { os: 'linux', architecture: 'amd64' };

/**
 * OCI architecture (GOARCH names, as in image indexes) → Debian architecture.
 * The arm entries depend on the variant and live in debianArch().
 */
const DEBIAN_ARCH: Readonly<Record<string, string>> = {
  amd64: 'amd64',
  arm64: 'arm64',
  '386': 'i386',
  ppc64le: 'ppc64el',
  s390x: 's390x',
  riscv64: 'riscv64',
  mips64le: 'mips64el',
};

/** Variants each architecture may carry; an empty list means "no variant". */
const VARIANTS: Readonly<Record<string, readonly string[]>> = {
  amd64: ['v1', 'v2', 'v3', 'v4'],
  arm64: ['v8'],
  arm: ['v5', 'v6', 'v7'],
  '386': [],
  ppc64le: [],
  s390x: [],
  riscv64: [],
  mips64le: [],
};

// Object.keys would list '386' first (integer-like keys sort ahead), so messages use this order.
const KNOWN_ARCHES = ['amd64', 'arm64', 'arm', '386', 'ppc64le', 's390x', 'riscv64', 'mips64le'];

/** Common non-OCI spellings, so the error can say what to write instead. */
const ARCH_ALIASES: Readonly<Record<string, string>> = {
  x86_64: 'amd64',
  aarch64: 'arm64',
  armhf: 'arm/v7',
  armel: 'arm/v6',
  i386: '386',
  i686: '386',
  ppc64el: 'ppc64le',
  mips64el: 'mips64le',
};

/**
 * Parses "os/arch[/variant]" ("linux/amd64", "linux/arm64/v8", "linux/arm/v7").
 * `where` is the file:line:col the string came from, for the error.
 */
export function parsePlatform(s: string, where?: string): Platform {
  const parts = s.trim().split('/');
  const [os, architecture, variant] = parts;
  if (parts.length < 2 || parts.length > 3 || !os || !architecture || (parts.length === 3 && !variant)) {
    throw usageError(`invalid platform "${s}": expected os/arch[/variant]`, where,
      'write it like linux/amd64, linux/arm64 or linux/arm/v7');
  }
  if (os !== 'linux') {
    throw usageError(`unsupported platform os "${os}" in "${s}"`, where,
      'Debian and Ubuntu images are linux only: write linux/ARCH');
  }
  const variants = VARIANTS[architecture];
  if (variants === undefined) {
    const alias = ARCH_ALIASES[architecture];
    throw usageError(`unknown platform architecture "${architecture}" in "${s}"`, where,
      alias ? `OCI calls it linux/${alias}` : `known architectures: ${KNOWN_ARCHES.join(', ')}`);
  }
  if (variant !== undefined && !variants.includes(variant)) {
    throw usageError(`unknown variant "${variant}" for architecture ${architecture} in "${s}"`, where,
      variants.length > 0 ? `known variants of ${architecture}: ${variants.join(', ')}` : `${architecture} takes no variant`);
  }
  // containerd normalizes a bare "arm" to arm/v7; doing the same here keeps indexes
  // and lockfile names identical to what other tools produce.
  if (architecture === 'arm' && variant === undefined) return { os, architecture, variant: 'v7' };
  return variant === undefined ? { os, architecture } : { os, architecture, variant };
}

/** The inverse of parsePlatform: "linux/arm/v7". */
export function formatPlatform(p: Platform): string {
  return p.variant ? `${p.os}/${p.architecture}/${p.variant}` : `${p.os}/${p.architecture}`;
}

/** True when two platforms select the same image (arm64 and arm64/v8 are one). */
export function samePlatform(a: Platform, b: Platform): boolean {
  const v = (p: Platform): string => (p.architecture === 'arm64' && p.variant === 'v8' ? '' : (p.variant ?? ''));
  return a.os === b.os && a.architecture === b.architecture && v(a) === v(b);
}

/** The Debian architecture name apt uses for this platform (binary-ARCH, Packages-…-ARCH.lock). */
export function debianArch(p: Platform): string {
  if (p.architecture === 'arm') {
    // Debian's armhf baseline is ARMv7 with VFPv3-D16; armel covers v5te and v6.
    return p.variant === 'v5' || p.variant === 'v6' ? 'armel' : 'armhf';
  }
  const arch = DEBIAN_ARCH[p.architecture];
  if (arch === undefined) {
    throw usageError(`no Debian architecture for platform ${formatPlatform(p)}`, undefined,
      `supported: ${KNOWN_ARCHES.map((a) => `linux/${a}`).join(', ')}`);
  }
  return arch;
}
