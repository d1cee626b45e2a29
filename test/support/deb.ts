// Real .deb files built in pure Node for tests: an ar archive holding debian-binary,
// control.tar.* and data.tar.*, shaped the way `dpkg-deb --build` shapes them, so that
// dpkg-deb (and anything that reads Debian archives) accepts them.
import { createHash } from 'node:crypto';
import { readFileSync, realpathSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { gzipSync } from 'node:zlib';

export type FixtureFile = string | Buffer | { content: string | Buffer; mode?: number; uid?: number; gid?: number }
  | { symlink: string } | { hardlink: string } | { dir: true; mode?: number };

export interface FixturePackage {
  name: string; version: string; arch?: string;            // default 'amd64'
  depends?: string; preDepends?: string; recommends?: string; suggests?: string; conflicts?: string; breaks?: string;
  provides?: string; replaces?: string; multiArch?: 'same' | 'foreign' | 'allowed'; essential?: boolean;
  priority?: string; section?: string; source?: string; description?: string; installedSize?: number;
  /** data.tar contents; keys are absolute paths like '/usr/bin/hello'. Parent directories are added. */
  files?: Record<string, FixtureFile>;
  /** The .deb's bytes as they are (e.g. a hostile archive made by hand); the other
   *  fields then only describe it in the Packages index. */
  rawDeb?: Buffer;
  scripts?: Partial<Record<'preinst' | 'postinst' | 'prerm' | 'postrm' | 'config', string>>;
  conffiles?: string[];
  /** Extra control fields, written after the known ones and before Description. */
  extraControl?: Record<string, string>;
  /** Default 'xz' like dpkg-deb; 'zst' runs the system `zstd`. */
  dataCompression?: 'gz' | 'xz' | 'zst' | 'none';
  /** Default 'gz'. */
  controlCompression?: 'gz' | 'xz' | 'none';
  /** Modification time of every member, seconds since the epoch; default 1700000000. */
  mtime?: number;
}

export const DEFAULT_MTIME = 1700000000;

/** A host executable or library (symlinks followed) as a fixture file, mode 0755. */
export function hostFile(path: string): { content: Buffer; mode: number } {
  return { content: readFileSync(realpathSync(path)), mode: 0o755 };
}

/**
 * The smallest base a RUN step runs on: Debian's static busybox (busybox-static) as
 * /bin/sh, and root (with `nobody`, nobody/nogroup too) in /etc/passwd and /etc/group.
 */
export function busyboxFiles(opts: { nobody?: boolean } = {}): Record<string, FixtureFile> {
  return {
    '/bin/busybox': { content: readFileSync('/bin/busybox'), mode: 0o755 },
    '/bin/sh': { symlink: 'busybox' },
    '/etc/passwd': `root:x:0:0:root:/root:/bin/sh\n${opts.nobody ? 'nobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n' : ''}`,
    '/etc/group': `root:x:0:\n${opts.nobody ? 'nogroup:x:65534:\n' : ''}`,
  };
}

/**
 * The host's setcap as a package, its libcap and libc off the library path (busybox,
 * static glibc, would load that libc's NSS modules); run it with
 * LD_LIBRARY_PATH=/opt/caplib.
 */
export function captools(): FixturePackage {
  return {
    name: 'captools',
    version: '1.0-1',
    files: {
      '/usr/sbin/setcap': hostFile('/usr/sbin/setcap'),
      '/opt/caplib/libcap.so.2': hostFile('/lib/x86_64-linux-gnu/libcap.so.2'),
      '/opt/caplib/libc.so.6': hostFile('/lib/x86_64-linux-gnu/libc.so.6'),
      '/usr/lib64/ld-linux-x86-64.so.2': hostFile('/lib64/ld-linux-x86-64.so.2'),
    },
  };
}
const MAINTAINER = 'ocibuild tests <tests@ocibuild.invalid>';

// ---------------------------------------------------------------------------
// control

/** Formats a multi-line Description the way deb-control(5) wants: continuation lines
 *  start with a space, an empty line is written as " .". */
function formatDescription(text: string): string {
  const [synopsis = '', ...rest] = text.replace(/\n+$/, '').split('\n');
  return [synopsis, ...rest.map((l) => (l.trim() === '' ? ' .' : l.startsWith(' ') ? l : ` ${l}`))].join('\n');
}

/** The known control fields in dpkg's output order, without Description. */
function controlFields(pkg: FixturePackage): Array<[string, string]> {
  const f: Array<[string, string]> = [];
  const add = (k: string, v: string | undefined): void => {
    if (v !== undefined && v !== '') f.push([k, v]);
  };
  add('Package', pkg.name);
  if (pkg.source !== undefined && pkg.source !== pkg.name) add('Source', pkg.source);
  add('Version', pkg.version);
  add('Architecture', pkg.arch ?? 'amd64');
  if (pkg.essential) add('Essential', 'yes');
  add('Maintainer', MAINTAINER);
  add('Installed-Size', String(pkg.installedSize ?? computeInstalledSize(pkg)));
  add('Pre-Depends', pkg.preDepends);
  add('Depends', pkg.depends);
  add('Recommends', pkg.recommends);
  add('Suggests', pkg.suggests);
  add('Breaks', pkg.breaks);
  add('Conflicts', pkg.conflicts);
  add('Replaces', pkg.replaces);
  add('Provides', pkg.provides);
  add('Section', pkg.section ?? 'misc');
  add('Priority', pkg.priority ?? 'optional');
  add('Multi-Arch', pkg.multiArch);
  for (const [k, v] of Object.entries(pkg.extraControl ?? {})) add(k, v);
  return f;
}

/** The DEBIAN/control text (ends with a newline). */
export function controlParagraph(pkg: FixturePackage): string {
  const lines = controlFields(pkg).map(([k, v]) => `${k}: ${v}`);
  lines.push(`Description: ${formatDescription(pkg.description ?? `${pkg.name} test fixture\nA package built by the ocibuild test suite.`)}`);
  return lines.join('\n') + '\n';
}

/** Fields for a Packages paragraph: the control fields plus the archive's own, with
 *  Description last. Used by aptrepo.ts. */
export function packagesParagraph(pkg: FixturePackage, extra: Array<[string, string]>): string {
  const control = controlParagraph(pkg);
  const at = control.indexOf('\nDescription: ');
  const head = control.slice(0, at + 1);
  const description = control.slice(at + 1);
  return head + extra.map(([k, v]) => `${k}: ${v}\n`).join('') + description;
}

/** dpkg-gencontrol's rule: a KiB (rounded up) per regular file, one per other inode. */
function computeInstalledSize(pkg: FixturePackage): number {
  let kib = 0;
  for (const e of dataEntries(pkg)) kib += e.type === '0' ? Math.max(1, Math.ceil(e.data.length / 1024)) : 1;
  return kib;
}

// ---------------------------------------------------------------------------
// tar (POSIX ustar, like dpkg-deb's own writer)

interface TarEntry {
  name: string;          // './usr/bin/hello', directories end in '/'
  type: '0' | '1' | '2' | '5';
  mode: number; uid: number; gid: number; mtime: number;
  linkname: string;
  data: Buffer;
}

function octal(value: number, width: number): string {
  const s = value.toString(8);
  if (s.length > width - 1) throw new Error(`tar: ${value} does not fit in ${width} octal digits`);
  return s.padStart(width - 1, '0') + '\0';
}

function splitUstarName(name: string): [prefix: string, name: string] {
  if (Buffer.byteLength(name) <= 100) return ['', name];
  // ustar: the prefix holds leading directories, split at a '/'.
  for (let i = name.indexOf('/'); i !== -1; i = name.indexOf('/', i + 1)) {
    const prefix = name.slice(0, i);
    const rest = name.slice(i + 1);
    if (Buffer.byteLength(prefix) <= 155 && Buffer.byteLength(rest) <= 100 && rest !== '') return [prefix, rest];
  }
  throw new Error(`tar: path too long for ustar: ${name}`);
}

function tarHeader(e: TarEntry): Buffer {
  const h = Buffer.alloc(512);
  const [prefix, name] = splitUstarName(e.name);
  if (Buffer.byteLength(e.linkname) > 100) throw new Error(`tar: link target too long: ${e.linkname}`);
  h.write(name, 0, 100, 'utf8');
  h.write(octal(e.mode & 0o7777, 8), 100, 'ascii');
  h.write(octal(e.uid, 8), 108, 'ascii');
  h.write(octal(e.gid, 8), 116, 'ascii');
  h.write(octal(e.type === '0' ? e.data.length : 0, 12), 124, 'ascii');
  h.write(octal(e.mtime, 12), 136, 'ascii');
  h.write('        ', 148, 'ascii');
  h.write(e.type, 156, 'ascii');
  h.write(e.linkname, 157, 100, 'utf8');
  h.write('ustar\0', 257, 'ascii');
  h.write('00', 263, 'ascii');
  h.write(e.uid === 0 ? 'root' : '', 265, 32, 'ascii');
  h.write(e.gid === 0 ? 'root' : '', 297, 32, 'ascii');
  h.write(octal(0, 8), 329, 'ascii');
  h.write(octal(0, 8), 337, 'ascii');
  h.write(prefix, 345, 155, 'utf8');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'ascii');
  return h;
}

function tar(entries: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    parts.push(tarHeader(e));
    if (e.type === '0' && e.data.length > 0) {
      parts.push(e.data);
      const pad = (512 - (e.data.length % 512)) % 512;
      if (pad) parts.push(Buffer.alloc(pad));
    }
  }
  parts.push(Buffer.alloc(1024)); // two zero blocks end the archive
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------
// data.tar

function relPath(path: string): string {
  if (!path.startsWith('/')) throw new Error(`fixture file paths must be absolute: ${path}`);
  const rel = path.replace(/^\/+/, '').replace(/\/+$/, '');
  if (rel === '' || rel.split('/').some((c) => c === '' || c === '.' || c === '..')) throw new Error(`bad fixture path: ${path}`);
  return rel;
}

function compareComponents(a: string, b: string): number {
  const x = a.split('/');
  const y = b.split('/');
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const p = x[i]!;
    const q = y[i]!;
    if (p !== q) return p < q ? -1 : 1;
  }
  return x.length - y.length;
}

function defaultFileMode(rel: string, data: Buffer): number {
  return /(^|\/)s?bin\//.test(rel) || data.subarray(0, 2).toString('latin1') === '#!' ? 0o755 : 0o644;
}

/** data.tar entries: './', every parent directory, then the files in path order;
 *  hard links come last so their targets precede them. */
function dataEntries(pkg: FixturePackage): TarEntry[] {
  const mtime = pkg.mtime ?? DEFAULT_MTIME;
  const dir = (rel: string, mode = 0o755): TarEntry => ({ name: rel === '' ? './' : `./${rel}/`, type: '5', mode, uid: 0, gid: 0, mtime, linkname: '', data: Buffer.alloc(0) });
  const main = new Map<string, TarEntry>();
  const links: TarEntry[] = [];
  const files = Object.entries(pkg.files ?? {}).map(([p, f]) => [relPath(p), f] as const);
  for (const [rel] of files) {
    const parts = rel.split('/');
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join('/');
      if (!main.has(parent)) main.set(parent, dir(parent));
    }
  }
  for (const [rel, f] of files) {
    if (typeof f === 'string' || Buffer.isBuffer(f)) {
      const data = Buffer.from(f);
      main.set(rel, { name: `./${rel}`, type: '0', mode: defaultFileMode(rel, data), uid: 0, gid: 0, mtime, linkname: '', data });
    } else if ('content' in f) {
      const data = Buffer.from(f.content);
      main.set(rel, { name: `./${rel}`, type: '0', mode: f.mode ?? defaultFileMode(rel, data), uid: f.uid ?? 0, gid: f.gid ?? 0, mtime, linkname: '', data });
    } else if ('symlink' in f) {
      main.set(rel, { name: `./${rel}`, type: '2', mode: 0o777, uid: 0, gid: 0, mtime, linkname: f.symlink, data: Buffer.alloc(0) });
    } else if ('hardlink' in f) {
      links.push({ name: `./${rel}`, type: '1', mode: 0o644, uid: 0, gid: 0, mtime, linkname: `./${relPath(f.hardlink)}`, data: Buffer.alloc(0) });
    } else {
      main.set(rel, dir(rel, f.mode ?? 0o755));
    }
  }
  for (const l of links) {
    const target = main.get(l.linkname.slice(2));
    if (!target || target.type !== '0') throw new Error(`${pkg.name}: hard link ${l.name} needs a regular file ${l.linkname} in the package`);
    l.mode = target.mode;
    l.uid = target.uid;
    l.gid = target.gid;
  }
  const sorted = [...main.keys()].sort(compareComponents).map((k) => main.get(k)!);
  links.sort((a, b) => compareComponents(a.name, b.name));
  return [dir(''), ...sorted, ...links];
}

// ---------------------------------------------------------------------------
// control.tar

function controlEntries(pkg: FixturePackage, data: TarEntry[]): TarEntry[] {
  const mtime = pkg.mtime ?? DEFAULT_MTIME;
  const file = (name: string, text: string, mode: number): TarEntry => ({ name: `./${name}`, type: '0', mode, uid: 0, gid: 0, mtime, linkname: '', data: Buffer.from(text) });
  const members = new Map<string, TarEntry>();
  members.set('control', file('control', controlParagraph(pkg), 0o644));
  const byName = new Map(data.map((e) => [e.name, e]));
  // md5sums lists regular files (hard links included, as `find -type f` sees them), paths without './'.
  const sums = data.filter((e) => e.type === '0' || e.type === '1').map((e) => {
    const content = e.type === '1' ? byName.get(e.linkname)!.data : e.data;
    return `${createHash('md5').update(content).digest('hex')}  ${e.name.slice(2)}\n`;
  });
  if (sums.length) members.set('md5sums', file('md5sums', sums.join(''), 0o644));
  if (pkg.conffiles?.length) members.set('conffiles', file('conffiles', pkg.conffiles.map((c) => `${c}\n`).join(''), 0o644));
  for (const [name, body] of Object.entries(pkg.scripts ?? {})) if (body !== undefined) members.set(name, file(name, body, 0o755));
  const dir: TarEntry = { name: './', type: '5', mode: 0o755, uid: 0, gid: 0, mtime, linkname: '', data: Buffer.alloc(0) };
  return [dir, ...[...members.keys()].sort().map((k) => members.get(k)!)];
}

// ---------------------------------------------------------------------------
// compression and ar

interface LzmaNative { compress(input: Buffer, options: { preset?: number }): Promise<Buffer> }
const lzma = createRequire(import.meta.url)('lzma-native') as LzmaNative;

async function compress(data: Buffer, kind: 'gz' | 'xz' | 'zst' | 'none'): Promise<{ ext: string; data: Buffer }> {
  switch (kind) {
    case 'none': return { ext: '', data };
    case 'gz': return { ext: '.gz', data: gzipSync(data, { level: 9 }) };
    case 'xz': return { ext: '.xz', data: await lzma.compress(data, { preset: 6 }) };
    case 'zst': {
      const r = spawnSync('zstd', ['-q', '-c', '-3'], { input: data, maxBuffer: 1 << 30 });
      if (r.error) throw r.error;
      if (r.status !== 0) throw new Error(`zstd failed: ${r.stderr.toString()}`);
      return { ext: '.zst', data: r.stdout };
    }
  }
}

function arMember(name: string, data: Buffer, mtime: number): Buffer[] {
  const h = Buffer.alloc(60, 0x20);
  if (name.length > 16) throw new Error(`ar: member name too long: ${name}`);
  h.write(name, 0, 'ascii');
  h.write(String(mtime), 16, 'ascii');
  h.write('0', 28, 'ascii');
  h.write('0', 34, 'ascii');
  h.write('100644', 40, 'ascii');
  h.write(String(data.length), 48, 'ascii');
  h.write('`\n', 58, 'ascii');
  return data.length % 2 ? [h, data, Buffer.from('\n')] : [h, data];
}

/** Builds the .deb in memory. Deterministic: the same package gives the same bytes. */
export async function buildDeb(pkg: FixturePackage): Promise<Buffer> {
  const mtime = pkg.mtime ?? DEFAULT_MTIME;
  const data = dataEntries(pkg);
  const control = await compress(tar(controlEntries(pkg, data)), pkg.controlCompression ?? 'gz');
  const payload = await compress(tar(data), pkg.dataCompression ?? 'xz');
  return Buffer.concat([
    Buffer.from('!<arch>\n'),
    ...arMember('debian-binary', Buffer.from('2.0\n'), mtime),
    ...arMember(`control.tar${control.ext}`, control.data, mtime),
    ...arMember(`data.tar${payload.ext}`, payload.data, mtime),
  ]);
}
