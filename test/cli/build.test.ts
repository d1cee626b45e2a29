// `ocibuild build` end to end: a signed fixture repository over HTTP, the real CLI,
// and the real judges — umoci unpacks, runc runs, skopeo inspects, dpkg checks the
// database, GNU tar reads the layer.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile, lstat, readlink } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildAptRepo, generateTestKey, tamperFile, type FixtureRepo, type TestKey } from '../support/aptrepo.js';
import { ocibuild, scratchSpec } from '../support/cli.js';
import { serveDirectory, type TestServer } from '../support/http.js';
import type { FixturePackage } from '../support/deb.js';
import { run } from '../oci/support.js';
import { debWith } from '../support/hostile-deb.js';


// A statically linked busybox from Debian's busybox-static: something runc can run.
const busybox = readFileSync('/bin/busybox');
const packages: FixturePackage[] = [
  {
    name: 'hello', version: '1.0-1', depends: 'libhello (>= 1.0), hello-data',
    files: {
      '/bin/busybox': { content: busybox, mode: 0o755 },
      '/bin/sh': { symlink: 'busybox' },
      '/usr/bin/su-tool': { content: 'setuid\n', mode: 0o4755 },
      '/usr/lib/hello/a': 'same content',
      '/usr/lib/hello/b': { hardlink: '/usr/lib/hello/a' },
      '/usr/share/hello/empty': { dir: true },
      '/etc/hello.conf': 'greeting=hi\n',
    },
    conffiles: ['/etc/hello.conf'],
    scripts: { postinst: '#!/bin/sh\necho configured\n' },
  },
  { name: 'libhello', version: '1.2-1', multiArch: 'same', files: { '/usr/lib/x86_64-linux-gnu/libhello.so.1': 'ELF?' }, dataCompression: 'zst' },
  { name: 'hello-data', version: '1.0-1', arch: 'all', files: { '/usr/share/hello/data.txt': 'data\n' }, dataCompression: 'gz' },
];

let tmp: string;
let key: TestKey;
let repo: FixtureRepo;
let server: TestServer;

before(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'ocibuild-build-'));
  key = await generateTestKey();
  repo = await buildAptRepo(path.join(tmp, 'repo'), [{ name: 'stable', components: { main: packages } }], { key });
  server = await serveDirectory(repo.dir);
});

after(async () => {
  await server?.close();
  await rm(tmp, { recursive: true, force: true });
});

function spec(url: string, keyring: string, pkgs: string[], extra: string[] = []): string {
  return scratchSpec(url, keyring, pkgs, ['config:', '  entrypoint: [/bin/busybox]', '  cmd: [echo, hello from an ocibuild image]', ...extra]);
}

async function specDir(name: string, body: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmp, `${name}-`));
  await writeFile(path.join(dir, 'image.yaml'), body);
  return dir;
}

test('build: an OCI layout that umoci unpacks, runc runs and skopeo reads; files and dpkg database intact', async () => {
  const dir = await specDir('happy', spec(server.url, repo.keyringPath, ['hello']));
  const layout = path.join(dir, 'layout');
  const r = await ocibuild(['build', '-f', path.join(dir, 'image.yaml'), '--output', `oci:${layout}:v1`, '--cache-dir', path.join(dir, 'cache'), '--digest-file', path.join(dir, 'digest')]);
  assert.equal(r.code, 0, r.stderr);
  const digest = r.stdout.trim();
  assert.match(digest, /^sha256:[0-9a-f]{64}$/);
  assert.equal((await readFile(path.join(dir, 'digest'), 'utf8')).trim(), digest);

  const inspect = JSON.parse((await run('skopeo', ['inspect', `oci:${layout}:v1`])).stdout) as { Digest: string; Layers: string[] };
  assert.equal(inspect.Digest, digest);
  assert.equal(inspect.Layers.length, 1);

  const bundle = path.join(dir, 'bundle');
  await run('umoci', ['unpack', '--image', `${layout}:v1`, bundle]);
  const rootfs = path.join(bundle, 'rootfs');
  // merged /usr: bin is a symlink, the package's /bin/busybox landed in usr/bin.
  assert.equal(await readlink(path.join(rootfs, 'bin')), 'usr/bin');
  assert.ok((await lstat(path.join(rootfs, 'usr/bin/busybox'))).isFile());
  assert.equal(await readlink(path.join(rootfs, 'usr/bin/sh')), 'busybox');
  assert.equal((await stat(path.join(rootfs, 'usr/bin/su-tool'))).mode & 0o7777, 0o4755);
  const a = await stat(path.join(rootfs, 'usr/lib/hello/a'));
  const b = await stat(path.join(rootfs, 'usr/lib/hello/b'));
  assert.equal(a.ino, b.ino, 'the hard link survives');
  assert.ok((await stat(path.join(rootfs, 'usr/share/hello/empty'))).isDirectory());
  assert.equal(await readFile(path.join(rootfs, 'usr/share/hello/data.txt'), 'utf8'), 'data\n');

  // dpkg sees the packages as installed and their files as unmodified.
  const query = await run('dpkg-query', [`--admindir=${rootfs}/var/lib/dpkg`, '-W', '-f', '${Package} ${Version} ${db:Status-Status}\n']);
  assert.deepEqual(query.stdout.trim().split('\n').sort(), ['hello 1.0-1 installed', 'hello-data 1.0-1 installed', 'libhello 1.2-1 installed']);
  await run('dpkg', [`--root=${rootfs}`, '--audit']);
  const verify = await run('dpkg', [`--root=${rootfs}`, '-V']);
  assert.equal(verify.stdout.trim(), '', `dpkg -V found differences:\n${verify.stdout}`);
  const search = await run('dpkg-query', [`--admindir=${rootfs}/var/lib/dpkg`, '-S', '/bin/busybox']);
  assert.match(search.stdout, /^hello: \/bin\/busybox/);
  assert.ok((await readdir(path.join(rootfs, 'var/lib/dpkg/info'))).includes('libhello:amd64.list'));
  assert.equal((await stat(path.join(rootfs, 'var/lib/dpkg/info/hello.postinst'))).mode & 0o777, 0o755);
  assert.match(await readFile(path.join(rootfs, 'var/lib/dpkg/status'), 'utf8'), /Conffiles:\n \/etc\/hello.conf [0-9a-f]{32}/);

  // runc runs the entrypoint (this machine: process.terminal must be false).
  const configPath = path.join(bundle, 'config.json');
  const config = JSON.parse(await readFile(configPath, 'utf8')) as { process: { terminal: boolean } };
  config.process.terminal = false;
  await writeFile(configPath, JSON.stringify(config));
  const out = await run('runc', ['run', '--bundle', bundle, `ocibuild-build-${process.pid}`]);
  assert.equal(out.stdout.trim(), 'hello from an ocibuild image');
});

test('build is reproducible: two empty stores, a warm store and another tag give the same manifest digest', async () => {
  const dir = await specDir('repro', spec(server.url, repo.keyringPath, ['hello', 'hello-data']));
  const build = async (cache: string, out: string): Promise<string> => {
    const r = await ocibuild(['build', '-f', path.join(dir, 'image.yaml'), '--output', out, '--cache-dir', path.join(dir, cache), '-q']);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.trim();
  };
  const first = await build('c1', `oci:${dir}/l1:a`);
  const second = await build('c2', `oci:${dir}/l2:a`);
  const warm = await build('c1', `oci:${dir}/l1:b`);
  assert.equal(second, first);
  assert.equal(warm, first);
  // Both tags share one layout.
  const index = JSON.parse(await readFile(path.join(dir, 'l1/index.json'), 'utf8')) as { manifests: Array<{ annotations?: Record<string, string> }> };
  assert.deepEqual(index.manifests.map((m) => m.annotations?.['org.opencontainers.image.ref.name']).sort(), ['a', 'b']);
  // The archive outputs hold the same image.
  const archive = await build('c1', `oci-archive:${dir}/image.tar:a`);
  assert.equal(archive, first);
  const inspect = JSON.parse((await run('skopeo', ['inspect', `oci-archive:${dir}/image.tar:a`])).stdout) as { Digest: string };
  assert.equal(inspect.Digest, first);
});

test('zstd layers carry the OCI zstd media type and a different digest; SOURCE_DATE_EPOCH sets created', async () => {
  const dir = await specDir('zstd', spec(server.url, repo.keyringPath, ['hello-data']));
  const r = await ocibuild(['build', '-f', path.join(dir, 'image.yaml'), '--output', `oci:${dir}/l:z`, '--cache-dir', path.join(dir, 'c'), '--compression', 'zstd', '--source-date-epoch', '1234567890', '-q']);
  assert.equal(r.code, 0, r.stderr);
  const raw = JSON.parse((await run('skopeo', ['inspect', '--raw', `oci:${dir}/l:z`])).stdout) as { layers: Array<{ mediaType: string }> };
  assert.equal(raw.layers[0]!.mediaType, 'application/vnd.oci.image.layer.v1.tar+zstd');
  const cfg = JSON.parse((await run('skopeo', ['inspect', '--config', '--raw', `oci:${dir}/l:z`])).stdout) as { created: string };
  assert.equal(cfg.created, '2009-02-13T23:31:30Z');
});

test('a .deb whose hash does not match the lock: error naming package and URL, nothing in the store or the output', async () => {
  const bad = await buildAptRepo(path.join(tmp, 'badrepo'), [{ name: 'stable', components: { main: packages } }], { key });
  const srv = await serveDirectory(bad.dir);
  try {
    const dir = await specDir('baddeb', spec(srv.url, bad.keyringPath, ['hello-data']));
    const cache = path.join(dir, 'cache');
    assert.equal((await ocibuild(['lock', '-f', path.join(dir, 'image.yaml'), '--cache-dir', cache])).code, 0);
    const deb = bad.debs.get('hello-data_1.0-1_all')!;
    await tamperFile(bad, deb.filename, (b) => Buffer.concat([b.subarray(0, b.length - 1), Buffer.from([b[b.length - 1]! ^ 1])]));
    const r = await ocibuild(['build', '-f', path.join(dir, 'image.yaml'), '--output', `oci:${dir}/out:x`, '--cache-dir', cache]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /hello-data/);
    assert.ok(r.stderr.includes(`${srv.url}/${deb.filename}`), r.stderr);
    assert.ok(!(await readdir(path.join(cache, 'blobs/sha256'))).includes(deb.sha256), 'the bad .deb is not in the store');
    await assert.rejects(stat(path.join(dir, 'out')), 'no output written');
  } finally {
    await srv.close();
  }
});

test('--locked with no lockfile, a stale lock, and an unwritable output: clear errors, nothing left behind', async () => {
  const dir = await specDir('locked', spec(server.url, repo.keyringPath, ['hello-data']));
  const cache = path.join(dir, 'cache');
  const none = await ocibuild(['build', '-f', path.join(dir, 'image.yaml'), '--output', `oci:${dir}/out`, '--cache-dir', cache, '--locked']);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /no lockfile/);
  assert.match(none.stderr, /hint: run ocibuild lock/);
  await assert.rejects(stat(path.join(dir, 'out')));

  assert.equal((await ocibuild(['lock', '-f', path.join(dir, 'image.yaml'), '--cache-dir', cache])).code, 0);
  await writeFile(path.join(dir, 'image.yaml'), spec(server.url, repo.keyringPath, ['hello-data', 'libhello']));
  const stale = await ocibuild(['build', '-f', path.join(dir, 'image.yaml'), '--output', `oci:${dir}/out`, '--cache-dir', cache, '--locked']);
  assert.equal(stale.code, 1);
  assert.match(stale.stderr, /stale/);

  const ro = path.join(dir, 'readonly');
  await mkdir(ro);
  await chmod(ro, 0o555);
  const isRoot = process.getuid?.() === 0;
  const target = isRoot ? '/proc/ocibuild-cannot-write-here' : path.join(ro, 'out');
  const unwritable = await ocibuild(['build', '-f', path.join(dir, 'image.yaml'), '--output', `oci:${target}`, '--cache-dir', cache]);
  assert.equal(unwritable.code, 1, unwritable.stderr);
  assert.match(unwritable.stderr, /ocibuild: /);
  assert.doesNotMatch(unwritable.stderr, /internal error/);

  const badOutput = await ocibuild(['build', '-f', path.join(dir, 'image.yaml'), '--output', 'tarball:/x']);
  assert.equal(badOutput.code, 2);
});

test('a hostile .deb (path traversal) and a truncated .deb: clear errors naming the package, nothing written outside, no output', async () => {
  const evil = await debWith([{ name: './', type: 'directory' }, { name: './etc/', type: 'directory' }, { name: '../../../../tmp/ocibuild-escaped', content: 'owned' }]);
  const bad = await buildAptRepo(path.join(tmp, 'hostile'), [{
    name: 'stable',
    components: { main: [{ name: 'evil', version: '1', arch: 'all', rawDeb: evil }, { name: 'cut', version: '1', files: { '/usr/share/cut/big': randomBytes(200_000) } }] },
  }], { key });
  const srv = await serveDirectory(bad.dir);
  try {
    const dir = await specDir('hostile', spec(srv.url, bad.keyringPath, ['evil']));
    const cache = path.join(dir, 'cache');
    const r = await ocibuild(['build', '-f', path.join(dir, 'image.yaml'), '--output', `oci:${dir}/out:x`, '--cache-dir', cache]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /evil 1/);
    assert.match(r.stderr, /"\.\.\/\.\.\/\.\.\/\.\.\/tmp\/ocibuild-escaped" has a "\.\." component/);
    await assert.rejects(stat('/tmp/ocibuild-escaped'), 'nothing escaped the root');
    await assert.rejects(stat(path.join(dir, 'out')), 'no output written');
    assert.deepEqual(await readdir(path.join(cache, 'cache', 'layers-v1')).catch(() => []), [], 'no layer cached');

    // A mirror whose copy of a .deb is cut short (it serves the short file as complete):
    // the size differs from the lock; an error naming the package and URL.
    const cutDeb = bad.debs.get('cut_1_amd64')!;
    await tamperFile(bad, cutDeb.filename, (b) => b.subarray(0, 1000));
    const dir2 = await specDir('truncated', spec(srv.url, bad.keyringPath, ['cut']));
    const cache2 = path.join(dir2, 'cache');
    const t = await ocibuild(['build', '-f', path.join(dir2, 'image.yaml'), '--output', `oci:${dir2}/out:x`, '--cache-dir', cache2]);
    assert.equal(t.code, 1, t.stderr);
    assert.match(t.stderr, /size mismatch for cut 1/);
    assert.ok(t.stderr.includes(`${srv.url}/${cutDeb.filename}`), t.stderr);
    assert.ok(!(await readdir(path.join(cache2, 'blobs/sha256'))).includes(cutDeb.sha256), 'the cut .deb is not in the store');
    await assert.rejects(stat(path.join(dir2, 'out')));
  } finally {
    await srv.close();
  }
});

test('files: land at their destination with the given mode, dated SOURCE_DATE_EPOCH, in their own layer', async () => {
  const dir = await specDir('files', spec(server.url, repo.keyringPath, ['hello-data'], [
    'files:',
    '  - {src: motd.txt, dest: /etc/motd, mode: "0600"}',
    '  - {src: tool.sh, dest: /usr/local/bin/tool}',
  ]));
  await writeFile(path.join(dir, 'motd.txt'), 'welcome\n');
  await writeFile(path.join(dir, 'tool.sh'), '#!/bin/sh\necho tool\n', { mode: 0o755 });
  const build = async (out: string): Promise<string> => {
    const r = await ocibuild(['build', '-f', path.join(dir, 'image.yaml'), '--output', `oci:${out}:f`, '--cache-dir', path.join(dir, 'c'), '--source-date-epoch', '1700000000', '-q']);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.trim();
  };
  const first = await build(path.join(dir, 'l1'));
  const raw = JSON.parse((await run('skopeo', ['inspect', '--raw', `oci:${dir}/l1:f`])).stdout) as { layers: unknown[] };
  assert.equal(raw.layers.length, 2, 'the apt layer and the files layer');
  const bundle = path.join(dir, 'bundle');
  await run('umoci', ['unpack', '--image', `${dir}/l1:f`, bundle]);
  const motd = await stat(path.join(bundle, 'rootfs/etc/motd'));
  assert.equal(motd.mode & 0o7777, 0o600);
  assert.equal(Math.floor(motd.mtimeMs / 1000), 1700000000);
  assert.equal((await stat(path.join(bundle, 'rootfs/usr/local/bin/tool'))).mode & 0o777, 0o755);
  assert.equal(await readFile(path.join(bundle, 'rootfs/etc/motd'), 'utf8'), 'welcome\n');
  // A touched source file (new mtime, same content) changes nothing.
  await writeFile(path.join(dir, 'motd.txt'), 'welcome\n');
  assert.equal(await build(path.join(dir, 'l2')), first);
});
