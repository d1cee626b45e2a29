// End to end: the real CLI against a signed fixture repository over HTTP.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildAptRepo, generateTestKey, tamperFile, type FixtureRepo, type TestKey } from '../support/aptrepo.js';
import { ocibuild, scratchSpec } from '../support/cli.js';
import { serveDirectory, type TestServer } from '../support/http.js';
import type { FixturePackage } from '../support/deb.js';

const packages: FixturePackage[] = [
  { name: 'app', version: '1.0-1', depends: 'libfoo (>= 1.2), mail-transport-agent | mta-fallback, python3:any' },
  { name: 'libfoo', version: '1.2-3', depends: 'libc6 (>= 2.36)', multiArch: 'same' },
  { name: 'libc6', version: '2.36-9', multiArch: 'same', priority: 'required' },
  { name: 'postfix', version: '3.7.10', provides: 'mail-transport-agent', depends: 'libc6' },
  { name: 'python3', version: '3.11.2-1', multiArch: 'allowed', preDepends: 'python3-minimal (= 3.11.2-1)' },
  { name: 'python3-minimal', version: '3.11.2-1', depends: 'libc6' },
  { name: 'docs', version: '1', arch: 'all' },
  { name: 'needs-new', version: '1', depends: 'libfoo (>= 2.0)' },
];

let tmp: string;
let key: TestKey;
let repo: FixtureRepo;
let server: TestServer;

before(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'ocibuild-lock-'));
  key = await generateTestKey();
  repo = await buildAptRepo(path.join(tmp, 'repo'), [{ name: 'stable', codename: 'bookworm', components: { main: packages } }], { key });
  server = await serveDirectory(repo.dir);
});

after(async () => {
  await server?.close();
  await rm(tmp, { recursive: true, force: true });
});

async function specDir(name: string, body: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmp, `${name}-`));
  await writeFile(path.join(dir, 'image.yaml'), body);
  return dir;
}

function specFor(url: string, keyring: string, pkgs: string[], extra = ''): string {
  return scratchSpec(url, keyring, pkgs, extra ? [extra] : []);
}

function lockPackages(text: string): string[] {
  return [...text.matchAll(/^Package: (.*)\nVersion: (.*)$/gm)].map((m) => `${m[1]}=${m[2]}`);
}

test('lock writes the resolved set in install order with checksums and reasons, byte-identical on rerun', async () => {
  const dir = await specDir('happy', specFor(server.url, repo.keyringPath, ['app', 'docs']));
  const cache = path.join(dir, 'cache');
  const first = await ocibuild(['lock', '-f', path.join(dir, 'image.yaml'), '--cache-dir', cache]);
  assert.equal(first.code, 0, first.stderr);
  const lockPath = path.join(dir, 'Packages-stable-amd64.lock');
  const text = await readFile(lockPath, 'utf8');
  assert.deepEqual(lockPackages(text), [
    'libc6=2.36-9', 'libfoo=1.2-3', 'postfix=3.7.10', 'python3-minimal=3.11.2-1', 'python3=3.11.2-1', 'app=1.0-1', 'docs=1',
  ]);
  assert.match(text, /^Lock-Format: 1$/m);
  assert.match(text, /^Inputs-Digest: sha256:[0-9a-f]{64}$/m);
  const deb = repo.debs.get('libfoo_1.2-3_amd64')!;
  const para = text.split('\n\n').find((p) => p.startsWith('Package: libfoo\n'))!;
  assert.match(para, new RegExp(`^SHA256: ${deb.sha256}$`, 'm'));
  assert.match(para, new RegExp(`^Size: ${deb.size}$`, 'm'));
  assert.match(para, new RegExp(`^Filename: ${deb.filename.replace(/[+.]/g, '\\$&')}$`, 'm'));
  assert.match(para, new RegExp(`^Source-URL: ${server.url}$`, 'm'));
  assert.match(para, /^Suite: stable$/m);
  assert.match(para, /^Required-By: app$/m);
  assert.match(text, /Package: app\n(.*\n)*?Required-By: requested/);

  const indexFetches = (): number => server.requests.filter((r) => /Packages/.test(r.path)).length;
  const fetchedBefore = indexFetches();
  const second = await ocibuild(['lock', '-f', path.join(dir, 'image.yaml'), '--cache-dir', cache]);
  assert.equal(second.code, 0, second.stderr);
  assert.equal(await readFile(lockPath, 'utf8'), text);
  assert.equal(indexFetches(), fetchedBefore, 'a warm store downloads no index again');

  // A fresh store gives the same bytes too.
  const third = await ocibuild(['lock', '-f', path.join(dir, 'image.yaml'), '--cache-dir', path.join(dir, 'cache2')]);
  assert.equal(third.code, 0, third.stderr);
  assert.equal(await readFile(lockPath, 'utf8'), text);

  // apt.lockfile naming a directory that does not exist yet: it is made.
  const inDir = await specDir('lock-dir', specFor(server.url, repo.keyringPath, ['app', 'docs']).replace('apt:\n', 'apt:\n  lockfile: locks/{suite}/Packages-{arch}.lock\n'));
  const made = await ocibuild(['lock', '-f', path.join(inDir, 'image.yaml'), '--cache-dir', cache]);
  assert.equal(made.code, 0, made.stderr);
  assert.equal(await readFile(path.join(inDir, 'locks/stable/Packages-amd64.lock'), 'utf8'), text);
});

test('--check passes on a fresh lock, fails on a stale or missing one, and never writes', async () => {
  const dir = await specDir('check', specFor(server.url, repo.keyringPath, ['libfoo']));
  const spec = path.join(dir, 'image.yaml');
  const cache = path.join(dir, 'cache');
  const missing = await ocibuild(['lock', '-f', spec, '--check', '--cache-dir', cache]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /no lockfile/);
  assert.match(missing.stderr, /hint: run ocibuild lock/);

  assert.equal((await ocibuild(['lock', '-f', spec, '--cache-dir', cache])).code, 0);
  const lockPath = path.join(dir, 'Packages-stable-amd64.lock');
  const before = await readFile(lockPath, 'utf8');
  assert.equal((await ocibuild(['lock', '-f', spec, '--locked', '--cache-dir', cache])).code, 0);

  await writeFile(spec, specFor(server.url, repo.keyringPath, ['libfoo', 'docs']));
  const stale = await ocibuild(['lock', '-f', spec, '--check', '--cache-dir', cache]);
  assert.equal(stale.code, 1);
  assert.match(stale.stderr, /Packages-stable-amd64\.lock: the lockfile is stale/);
  assert.equal(await readFile(lockPath, 'utf8'), before);
});

test('an unsatisfiable request shows the chain; an unknown name suggests near names; no lockfile is left', async () => {
  const dir = await specDir('impossible', specFor(server.url, repo.keyringPath, ['needs-new']));
  const r = await ocibuild(['lock', '-f', path.join(dir, 'image.yaml'), '--cache-dir', path.join(dir, 'cache')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /needs-new → libfoo \(>= 2\.0\), but the newest libfoo is 1\.2-3 in stable\/main/);
  const dir2 = await specDir('unknown', specFor(server.url, repo.keyringPath, ['libfo']));
  const r2 = await ocibuild(['lock', '-f', path.join(dir2, 'image.yaml'), '--cache-dir', path.join(dir2, 'cache')]);
  assert.equal(r2.code, 1);
  assert.match(r2.stderr, /image\.yaml:8:14: unknown package libfo/);
  assert.match(r2.stderr, /did you mean libfoo/);
  for (const d of [dir, dir2]) assert.deepEqual((await readdir(d)).sort(), ['cache', 'image.yaml']);
});

test('spec errors exit 2 with file:line:col', async () => {
  const dir = await specDir('badyaml', 'from: scratch\napt:\n  packagez: [a]\n');
  const r = await ocibuild(['lock', '-f', path.join(dir, 'image.yaml')]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /image\.yaml:3:3: .*packagez/);
  const usage = await ocibuild(['lock', '--no-such-flag']);
  assert.equal(usage.code, 2);
});

async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

test('an unreachable mirror is an error naming the URL, leaving no lockfile behind', async () => {
  const url = `http://127.0.0.1:${await closedPort()}/debian`;
  const dir = await specDir('unreachable', specFor(url, repo.keyringPath, ['libfoo']));
  const r = await ocibuild(['lock', '-f', path.join(dir, 'image.yaml'), '--cache-dir', path.join(dir, 'cache')]);
  assert.equal(r.code, 1);
  assert.ok(r.stderr.includes(url), r.stderr);
  assert.deepEqual((await readdir(dir)).filter((f) => f !== 'cache').sort(), ['image.yaml']);
});

test('a repository signed by an unknown key is refused; --insecure-no-verify warns and goes on', async () => {
  const other = await generateTestKey('someone else');
  const bad = await buildAptRepo(path.join(tmp, 'badsig'), [{ name: 'stable', components: { main: packages } }], { key, signWith: other });
  const srv = await serveDirectory(bad.dir);
  try {
    const dir = await specDir('badsig', specFor(srv.url, bad.keyringPath, ['libfoo']));
    const r = await ocibuild(['lock', '-f', path.join(dir, 'image.yaml'), '--cache-dir', path.join(dir, 'cache')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /signature/i);
    assert.match(r.stderr, /--insecure-no-verify/);
    assert.deepEqual((await readdir(dir)).filter((f) => f !== 'cache'), ['image.yaml']);
    const r2 = await ocibuild(['lock', '-f', path.join(dir, 'image.yaml'), '--cache-dir', path.join(dir, 'cache'), '--insecure-no-verify']);
    assert.equal(r2.code, 0, r2.stderr);
    assert.match(r2.stderr, /WARNING/);
    assert.deepEqual(lockPackages(await readFile(path.join(dir, 'Packages-stable-amd64.lock'), 'utf8')), ['libc6=2.36-9', 'libfoo=1.2-3']);
  } finally {
    await srv.close();
  }
});

test('a tampered index is refused and nothing unverified enters the store', async () => {
  const t = await buildAptRepo(path.join(tmp, 'tampered'), [{ name: 'stable', components: { main: packages } }], { key });
  // Every compression the Release lists: an intact Packages.gz would be a valid fallback.
  for (const f of ['Packages.xz', 'Packages.gz']) await tamperFile(t, `dists/stable/main/binary-amd64/${f}`, (b) => Buffer.concat([b, Buffer.from('x')]));
  const srv = await serveDirectory(t.dir);
  try {
    const dir = await specDir('tampered', specFor(srv.url, t.keyringPath, ['libfoo']));
    const cache = path.join(dir, 'cache');
    const r = await ocibuild(['lock', '-f', path.join(dir, 'image.yaml'), '--cache-dir', cache]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /binary-amd64\/Packages\.xz/);
    assert.match(r.stderr, /sha256|size|mismatch/i);
    const blobs = await readdir(path.join(cache, 'blobs/sha256')).catch(() => [] as string[]);
    const sums = await Promise.all(blobs.map(async (b) => (await import('node:crypto')).createHash('sha256').update(await readFile(path.join(cache, 'blobs/sha256', b))).digest('hex') === b));
    assert.ok(sums.every(Boolean), 'every blob in the store matches its name');
    assert.deepEqual((await readdir(dir)).filter((f) => f !== 'cache'), ['image.yaml']);
  } finally {
    await srv.close();
  }
});

test('Release + Release.gpg is used when InRelease is missing', async () => {
  const t = await buildAptRepo(path.join(tmp, 'noinrelease'), [{ name: 'stable', components: { main: packages }, inRelease: false }], { key });
  const srv = await serveDirectory(t.dir);
  try {
    const dir = await specDir('noinrelease', specFor(srv.url, t.keyringPath, ['python3']));
    const r = await ocibuild(['lock', '-f', path.join(dir, 'image.yaml'), '--cache-dir', path.join(dir, 'cache')]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(lockPackages(await readFile(path.join(dir, 'Packages-stable-amd64.lock'), 'utf8')), [
      'libc6=2.36-9', 'python3-minimal=3.11.2-1', 'python3=3.11.2-1',
    ]);
    assert.ok(srv.requests.some((q) => q.path.endsWith('/Release.gpg')));
  } finally {
    await srv.close();
  }
});

test('--platform locks each architecture into its own lockfile', async () => {
  const both = (p: FixturePackage): FixturePackage[] => [p, { ...p, arch: 'arm64' }];
  const t = await buildAptRepo(path.join(tmp, 'multiarch'), [{
    name: 'stable',
    architectures: ['amd64', 'arm64'],
    components: { main: [...both({ name: 'tool', version: '1', depends: 'libc6' }), ...both({ name: 'libc6', version: '2.36' }), { name: 'libc6', version: '2.37', arch: 'arm64' }, { name: 'data', version: '1', arch: 'all' }] },
  }], { key });
  const srv = await serveDirectory(t.dir);
  try {
    const dir = await specDir('multiarch', specFor(srv.url, t.keyringPath, ['tool', 'data'], 'platforms: [linux/amd64, linux/arm64]'));
    const r = await ocibuild(['lock', '-f', path.join(dir, 'image.yaml'), '--cache-dir', path.join(dir, 'cache')]);
    assert.equal(r.code, 0, r.stderr);
    const amd = await readFile(path.join(dir, 'Packages-stable-amd64.lock'), 'utf8');
    const arm = await readFile(path.join(dir, 'Packages-stable-arm64.lock'), 'utf8');
    assert.deepEqual(lockPackages(amd), ['data=1', 'libc6=2.36', 'tool=1']);
    assert.deepEqual(lockPackages(arm), ['data=1', 'libc6=2.37', 'tool=1']);
    assert.match(arm, /^Architecture: arm64$/m);
    assert.match(arm, /Filename: pool\/main\/t\/tool\/tool_1_arm64\.deb/);
    // --platform narrows to one of them.
    const only = await ocibuild(['lock', '-f', path.join(dir, 'image.yaml'), '--cache-dir', path.join(dir, 'cache'), '--platform', 'linux/arm64', '--check']);
    assert.equal(only.code, 0, only.stderr);
    const bad = await ocibuild(['lock', '-f', path.join(dir, 'image.yaml'), '--platform', 'linux/sparc']);
    assert.equal(bad.code, 2);
  } finally {
    await srv.close();
  }
});
