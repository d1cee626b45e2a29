// A signed apt repository in a directory, laid out like a Debian mirror:
//   pool/<component>/<prefix>/<source>/<name>_<version>_<arch>.deb
//   dists/<suite>/{Release,InRelease,Release.gpg}
//   dists/<suite>/<component>/binary-<arch>/Packages{,.gz,.xz}[/by-hash/SHA256/<hex>]
//   keyring.gpg (binary OpenPGP public key)
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { gzipSync } from 'node:zlib';
import * as openpgp from 'openpgp';
import { buildDeb, packagesParagraph, type FixturePackage } from './deb.js';

export interface TestKey { armoredPrivateKey: string; armoredPublicKey: string; keyringBinary: Uint8Array; fingerprint: string; }

/** An EdDSA (legacy, v4) key with an ECDH subkey: the kind gpgv 2.2 (Debian 12) verifies. */
export async function generateTestKey(name = 'ocibuild test archive'): Promise<TestKey> {
  const { privateKey, publicKey } = await openpgp.generateKey({
    type: 'ecc',
    curve: 'ed25519Legacy',
    userIDs: [{ name, email: 'archive@ocibuild.invalid' }],
    date: new Date('2000-01-01T00:00:00Z'), // before any Release date a test may sign at
    format: 'object',
  });
  return {
    armoredPrivateKey: privateKey.armor(),
    armoredPublicKey: publicKey.armor(),
    keyringBinary: publicKey.write(),
    fingerprint: publicKey.getFingerprint().toUpperCase(),
  };
}

export interface FixtureSuite {
  /** Directory under dists/, e.g. 'stable' or 'bookworm-updates'; also the Suite field. */
  name: string;
  codename?: string; origin?: string; label?: string;
  /** Packages per component. Arch 'all' packages go to binary-all/Packages and, like
   *  Debian (No-Support-for-Architecture-all: Packages), to every binary-<arch>/Packages. */
  components: Record<string, FixturePackage[]>;
  architectures?: string[];              // default ['amd64']
  date?: Date; validUntil?: Date;        // default Date 2024-01-01T00:00:00Z, no Valid-Until
  inRelease?: boolean; releaseGpg?: boolean;  // default both true
  /** Which Packages files exist; default ['gz','xz']. Release always lists the
   *  uncompressed Packages too, as Debian's does, even when the file is absent. */
  compressions?: Array<'gz' | 'xz' | 'none'>;
  /** Also write by-hash/SHA256/<hex> copies and set Acquire-By-Hash: yes. */
  acquireByHash?: boolean;
  /** List arch:all packages in binary-all only (no No-Support-for-Architecture-all), as
   *  many third-party repositories do; consumers must then read binary-all. */
  archAllSeparate?: boolean;
  /** Extra Release fields, e.g. {NotAutomatic: 'yes', ButAutomaticUpgrades: 'yes'} for a backports-like suite. */
  releaseFields?: Record<string, string>;
}

export interface FixtureDeb { path: string; filename: string; sha256: string; size: number }

export interface FixtureRepo {
  dir: string; keyringPath: string; key: TestKey;
  /** Keyed `${name}_${version}_${arch}` (version as given, epoch included). */
  debs: Map<string, FixtureDeb>;
}

export const DEFAULT_RELEASE_DATE = new Date('2024-01-01T00:00:00Z');

interface LzmaNative { compress(input: Buffer, options: { preset?: number }): Promise<Buffer> }
const lzma = createRequire(import.meta.url)('lzma-native') as LzmaNative;

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const md5 = (b: Uint8Array): string => createHash('md5').update(b).digest('hex');

/** RFC 2822 in UTC the way Debian's Release files write it: `Sat, 10 Jun 2023 08:53:33 UTC`. */
export function releaseDate(d: Date): string {
  return d.toUTCString().replace(/GMT$/, 'UTC');
}

/** Debian's pool prefix: the first letter, or four for lib* sources. */
export function poolPrefix(source: string): string {
  return source.startsWith('lib') && source.length > 3 ? source.slice(0, 4) : source.slice(0, 1);
}

/** The path of a package under the repository root, e.g. pool/main/h/hello/hello_2.10-3_amd64.deb. */
export function poolPath(component: string, pkg: FixturePackage): string {
  const source = (pkg.source ?? pkg.name).replace(/\s*\(.*\)\s*$/, '');
  const version = pkg.version.replace(/^\d+:/, '');
  return `pool/${component}/${poolPrefix(source)}/${source}/${pkg.name}_${version}_${pkg.arch ?? 'amd64'}.deb`;
}

async function writeAt(root: string, rel: string, data: Uint8Array | string): Promise<void> {
  const path = join(root, rel);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, data);
}

interface IndexFile { rel: string; data: Buffer; published: boolean }

export async function buildAptRepo(
  dir: string,
  suites: FixtureSuite[],
  options: { key?: TestKey; signWith?: TestKey } = {},
): Promise<FixtureRepo> {
  const root = resolve(dir);
  const key = options.key ?? (await generateTestKey());
  const signer = await openpgp.readPrivateKey({ armoredKey: (options.signWith ?? key).armoredPrivateKey });
  const keyringPath = join(root, 'keyring.gpg');
  await writeAt(root, 'keyring.gpg', key.keyringBinary);

  const debs = new Map<string, FixtureDeb>();
  const debBytes = new Map<string, Buffer>();
  /** Builds (once) and places a package in the pool; returns its Packages paragraph. */
  const place = async (component: string, pkg: FixturePackage): Promise<string> => {
    const filename = poolPath(component, pkg);
    const id = `${pkg.name}_${pkg.version}_${pkg.arch ?? 'amd64'}`;
    const bytes = pkg.rawDeb ?? (await buildDeb(pkg));
    const seen = debBytes.get(filename);
    if (seen && !seen.equals(bytes)) throw new Error(`fixture repo: two different packages at ${filename}`);
    if (!seen) {
      await writeAt(root, filename, bytes);
      debBytes.set(filename, bytes);
      debs.set(id, { path: join(root, filename), filename, sha256: sha256(bytes), size: bytes.length });
    }
    return packagesParagraph(pkg, [
      ['Filename', filename],
      ['Size', String(bytes.length)],
      ['MD5sum', md5(bytes)],
      ['SHA256', sha256(bytes)],
    ]);
  };

  for (const suite of suites) {
    const archs = suite.architectures ?? ['amd64'];
    const compressions = suite.compressions ?? ['gz', 'xz'];
    const components = Object.keys(suite.components);
    const files: IndexFile[] = [];
    for (const component of components) {
      const pkgs = suite.components[component] ?? [];
      const paragraphs = new Map<string, string[]>([['all', []], ...archs.map((a) => [a, []] as [string, string[]])]);
      for (const pkg of pkgs) {
        const arch = pkg.arch ?? 'amd64';
        const text = await place(component, pkg);
        const targets = arch === 'all' ? (suite.archAllSeparate ? ['all'] : ['all', ...archs]) : [arch];
        for (const t of targets) {
          const list = paragraphs.get(t);
          if (!list) throw new Error(`fixture repo: ${pkg.name} is ${arch} but suite ${suite.name} has architectures ${archs.join(' ')}`);
          list.push(text);
        }
      }
      for (const [arch, list] of paragraphs) {
        const base = `${component}/binary-${arch}/Packages`;
        const plain = Buffer.from(list.join('\n'));
        files.push({ rel: base, data: plain, published: compressions.includes('none') });
        if (compressions.includes('gz')) files.push({ rel: `${base}.gz`, data: gzipSync(plain, { level: 9 }), published: true });
        if (compressions.includes('xz')) files.push({ rel: `${base}.xz`, data: await lzma.compress(plain, { preset: 6 }), published: true });
      }
    }

    const distDir = `dists/${suite.name}`;
    for (const f of files) {
      if (!f.published) continue;
      await writeAt(root, `${distDir}/${f.rel}`, f.data);
      if (suite.acquireByHash) await writeAt(root, `${distDir}/${dirname(f.rel)}/by-hash/SHA256/${sha256(f.data)}`, f.data);
    }
    if (suite.acquireByHash) {
      // Debian also keeps the uncompressed index by hash even where only compressed files are served.
      for (const f of files) if (!f.published) await writeAt(root, `${distDir}/${dirname(f.rel)}/by-hash/SHA256/${sha256(f.data)}`, f.data);
    }

    const sizeWidth = Math.max(1, ...files.map((f) => String(f.data.length).length));
    const list = (hash: (b: Uint8Array) => string): string =>
      files.map((f) => ` ${hash(f.data)} ${String(f.data.length).padStart(sizeWidth)} ${f.rel}\n`).join('');
    const fields: Array<[string, string | undefined]> = [
      ['Origin', suite.origin ?? 'ocibuild'],
      ['Label', suite.label ?? 'ocibuild'],
      ['Suite', suite.name],
      ['Codename', suite.codename ?? suite.name],
      ['Date', releaseDate(suite.date ?? DEFAULT_RELEASE_DATE)],
      ['Valid-Until', suite.validUntil ? releaseDate(suite.validUntil) : undefined],
      ['Acquire-By-Hash', suite.acquireByHash ? 'yes' : undefined],
      ['No-Support-for-Architecture-all', suite.archAllSeparate ? undefined : 'Packages'],
      ['Architectures', ['all', ...archs].join(' ')],
      ['Components', components.join(' ')],
      ['Description', `ocibuild test repository ${suite.name}`],
      ...Object.entries(suite.releaseFields ?? {}),
    ];
    const release =
      fields.filter((f): f is [string, string] => f[1] !== undefined).map(([k, v]) => `${k}: ${v}\n`).join('') +
      `MD5Sum:\n${list(md5)}SHA256:\n${list(sha256)}`;
    await writeAt(root, `${distDir}/Release`, release);

    if (suite.inRelease ?? true) {
      const message = await openpgp.createCleartextMessage({ text: release });
      await writeAt(root, `${distDir}/InRelease`, await openpgp.sign({ message, signingKeys: signer, date: suite.date ?? DEFAULT_RELEASE_DATE }));
    }
    if (suite.releaseGpg ?? true) {
      const message = await openpgp.createMessage({ binary: Buffer.from(release) });
      const signature = await openpgp.sign({ message, signingKeys: signer, detached: true, date: suite.date ?? DEFAULT_RELEASE_DATE });
      await writeAt(root, `${distDir}/Release.gpg`, signature);
    }
  }

  return { dir: root, keyringPath, key, debs };
}

/** Rewrites a file of the repository without fixing Release (for hash-mismatch tests). */
export async function tamperFile(repo: FixtureRepo, relPath: string, mutate: (b: Buffer) => Buffer): Promise<void> {
  const path = join(repo.dir, relPath);
  await writeFile(path, mutate(await readFile(path)));
}
