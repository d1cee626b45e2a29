/**
 * Whether this host can execute a platform's binaries, checked before a sandboxed step
 * would fail with a bare "Exec format error": the host's own architecture (and 32-bit
 * x86 on amd64), or another one through a binfmt_misc handler such as qemu-user-static
 * registers (with its "F" flag the interpreter works inside a sandbox's rootfs too).
 */
import { readFile } from 'node:fs/promises';
import { OcibuildError } from '../errors.js';
import { formatPlatform } from '../spec/platform.js';
import type { Platform } from '../spec/types.js';

/** Node's process.arch → OCI architecture names. */
const NODE_TO_OCI: Readonly<Record<string, string>> = {
  x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64', loong64: 'loong64', mips64el: 'mips64le',
};
/** OCI architecture → the name qemu-user's binfmt handlers carry (qemu-<name>). */
const QEMU_NAME: Readonly<Record<string, string>> = {
  amd64: 'x86_64', arm64: 'aarch64', arm: 'arm', '386': 'i386', ppc64le: 'ppc64le', s390x: 's390x', riscv64: 'riscv64', mips64le: 'mips64el', loong64: 'loongarch64',
};

export function hostArchitecture(): string {
  return NODE_TO_OCI[process.arch] ?? process.arch;
}

/** Throws a clear error when `platform`'s programs cannot run here. */
export async function checkCanRun(platform: Platform, where: string, binfmtDir = '/proc/sys/fs/binfmt_misc'): Promise<void> {
  const host = hostArchitecture();
  const arch = platform.architecture;
  if (platform.os !== 'linux') {
    throw new OcibuildError(`RUN steps for ${formatPlatform(platform)} cannot run in a Linux sandbox`, { where, hint: 'build linux/* platforms only when the spec has run: or install: dpkg' });
  }
  if (arch === host || (host === 'amd64' && arch === '386')) return;
  const qemu = QEMU_NAME[arch];
  const handler = qemu === undefined ? undefined : await readFile(`${binfmtDir}/qemu-${qemu}`, 'utf8').catch(() => undefined);
  if (handler?.split('\n')[0] === 'enabled') return;
  throw new OcibuildError(`cannot run ${formatPlatform(platform)} programs on this ${host} host: no binfmt_misc handler for ${arch}${qemu ? ` (qemu-${qemu})` : ''} is registered`, {
    where,
    hint: 'install qemu-user-static (Debian/Ubuntu: apt-get install qemu-user-static), or build this platform on a matching machine',
  });
}
