/**
 * Debian architecture names and wildcards (Debian policy 11.1, dpkg-architecture(1)).
 * Every Debian architecture stands for a tuple abi-libc-os-cpu (amd64 is
 * base-gnu-linux-amd64, armhf is eabihf-gnu-linux-arm); a wildcard is such a
 * tuple with 'any' in some places ('linux-any', 'any-amd64', 'musl-any-any').
 */

type Tuple = readonly [abi: string, libc: string, os: string, cpu: string];

// The CPU names dpkg knows (its cputable); an architecture on another CPU
// matches nothing but itself.
const CPUS = new Set([
  'alpha', 'amd64', 'arc', 'armeb', 'arm', 'arm64', 'avr32', 'hppa', 'loong64', 'i386',
  'ia64', 'm32r', 'm68k', 'mips', 'mipsel', 'mipsr6', 'mipsr6el', 'mips64', 'mips64el',
  'mips64r6', 'mips64r6el', 'nios2', 'or1k', 'powerpc', 'powerpcel', 'ppc64', 'ppc64el',
  'riscv64', 's390', 's390x', 'sh3', 'sh3eb', 'sh4', 'sh4eb', 'sparc', 'sparc64', 'tilegx',
]);

// Architectures whose tuple does not follow the generic "<os prefix><cpu>" naming.
const SPECIAL: ReadonlyMap<string, Tuple> = new Map<string, Tuple>([
  ['armhf', ['eabihf', 'gnu', 'linux', 'arm']],
  ['armel', ['eabi', 'gnu', 'linux', 'arm']],
  ['arm64ilp32', ['ilp32', 'gnu', 'linux', 'arm64']],
  ['x32', ['x32', 'gnu', 'linux', 'amd64']],
  ['powerpcspe', ['spe', 'gnu', 'linux', 'powerpc']],
  ['mips64', ['abi64', 'gnu', 'linux', 'mips64']],
  ['mips64el', ['abi64', 'gnu', 'linux', 'mips64el']],
  ['mips64r6', ['abi64', 'gnu', 'linux', 'mips64r6']],
  ['mips64r6el', ['abi64', 'gnu', 'linux', 'mips64r6el']],
  ['mipsn32', ['abin32', 'gnu', 'linux', 'mips64']],
  ['mipsn32el', ['abin32', 'gnu', 'linux', 'mips64el']],
  ['mipsn32r6', ['abin32', 'gnu', 'linux', 'mips64r6']],
  ['mipsn32r6el', ['abin32', 'gnu', 'linux', 'mips64r6el']],
  ['musl-linux-armhf', ['eabihf', 'musl', 'linux', 'arm']],
  ['uclibc-linux-armel', ['eabi', 'uclibc', 'linux', 'arm']],
  ['uclinux-armel', ['eabi', 'uclibc', 'uclinux', 'arm']],
  ['kfreebsd-armhf', ['eabihf', 'gnu', 'kfreebsd', 'arm']],
  ['mint-m68k', ['base', 'tos', 'mint', 'm68k']],
]);

// "<prefix><cpu>" architecture names and the abi-libc-os they stand for; a bare
// CPU name is GNU/Linux.
const PREFIXES: ReadonlyArray<readonly [prefix: string, abi: string, libc: string, os: string]> = [
  ['musl-linux-', 'base', 'musl', 'linux'],
  ['uclibc-linux-', 'base', 'uclibc', 'linux'],
  ['uclinux-', 'base', 'uclibc', 'uclinux'],
  ['kfreebsd-', 'base', 'gnu', 'kfreebsd'],
  ['knetbsd-', 'base', 'gnu', 'knetbsd'],
  ['kopensolaris-', 'base', 'gnu', 'kopensolaris'],
  ['hurd-', 'base', 'gnu', 'hurd'],
  ['dragonflybsd-', 'base', 'bsd', 'dragonflybsd'],
  ['freebsd-', 'base', 'bsd', 'freebsd'],
  ['openbsd-', 'base', 'bsd', 'openbsd'],
  ['netbsd-', 'base', 'bsd', 'netbsd'],
  ['darwin-', 'base', 'bsd', 'darwin'],
  ['aix-', 'base', 'sysv', 'aix'],
  ['solaris-', 'base', 'sysv', 'solaris'],
];

const tupleCache = new Map<string, Tuple | null>();

/** The tuple of a concrete architecture name, or null for 'all', wildcards and unknown names. */
function archTuple(arch: string): Tuple | null {
  const cached = tupleCache.get(arch);
  if (cached !== undefined) return cached;
  let t: Tuple | null = null;
  // dpkg reads "linux-<arch>" as an alias of "<arch>".
  const name = arch.startsWith('linux-') && arch.indexOf('-', 6) < 0 ? arch.slice(6) : arch;
  const special = SPECIAL.get(name);
  if (special !== undefined) {
    t = special;
  } else if (CPUS.has(name)) {
    t = ['base', 'gnu', 'linux', name];
  } else {
    for (const [prefix, abi, libc, os] of PREFIXES) {
      if (name.startsWith(prefix)) {
        const cpu = name.slice(prefix.length);
        if (CPUS.has(cpu)) t = [abi, libc, os, cpu];
        break;
      }
    }
  }
  tupleCache.set(arch, t);
  return t;
}

/** The tuple of a wildcard with 'any' in the places it leaves open, or null if it is no wildcard. */
function wildcardTuple(wildcard: string): Tuple | null {
  const parts = wildcard.split('-');
  if (!parts.includes('any')) return null;
  // Shorter wildcards name the trailing fields: os-cpu, libc-os-cpu.
  switch (parts.length) {
    case 2:
      return ['any', 'any', parts[0] as string, parts[1] as string];
    case 3:
      return ['any', parts[0] as string, parts[1] as string, parts[2] as string];
    case 4:
      return parts as unknown as Tuple;
    default:
      return null;
  }
}

/**
 * Whether architecture `arch` (a concrete name such as amd64, or 'all') matches
 * `qualifierOrArch`, an architecture name or wildcard as dpkg's debarch_is reads
 * it: 'any' matches every architecture including 'all'; 'all' only 'all';
 * 'linux-any' every Linux architecture; 'any-amd64' every amd64 CPU (amd64, x32,
 * hurd-amd64, ...); 'armhf' equals 'linux-armhf'. Names are case-sensitive.
 *
 * 'native' (the ':native' qualifier) matches `nativeArch` only. The Multi-Arch
 * meaning of a ':any' qualifier (the target must be Multi-Arch: allowed) is the
 * resolver's concern, not this function's.
 */
export function matchesArch(qualifierOrArch: string, arch: string, nativeArch?: string): boolean {
  if (qualifierOrArch === 'native') return nativeArch !== undefined && arch === nativeArch;
  if (qualifierOrArch === arch || qualifierOrArch === 'any') return true;
  const real = archTuple(arch);
  if (real === null) return false;
  const wild = wildcardTuple(qualifierOrArch) ?? archTuple(qualifierOrArch);
  if (wild === null) return false;
  for (let k = 0; k < 4; k++) {
    const w = wild[k];
    if (w !== 'any' && w !== real[k]) return false;
  }
  return true;
}
