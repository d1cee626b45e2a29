// `ocibuild build` end to end: a signed fixture repository over HTTP, the real CLI,
// and the real judges — umoci unpacks, runc runs, skopeo inspects, dpkg checks the
// database, GNU tar reads the layer.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile, lstat, readlink } from 'node:fs/promises';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildAptRepo, generateTestKey, tamperFile, type FixtureRepo, type TestKey } from '../support/aptrepo.js';
import { CLI, ocibuild, scratchSpec } from '../support/cli.js';
import { serveDirectory, type TestServer } from '../support/http.js';
import type { FixturePackage } from '../support/deb.js';
import { run } from '../oci/support.js';
import { debWith } from '../support/hostile-deb.js';
import { formatBytes } from '../../src/cli/progress.js';


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
  // A directory whose mode a files: entry under it must keep.
  { name: 'spool', version: '1', files: { '/var/spool/drop': { dir: true, mode: 0o1733 } } },
  // Stands in for apt: its presence makes the build write apt's auto marks.
  { name: 'apt', version: '2.6.1', files: { '/usr/bin/apt-get': '#!/bin/sh\n', '/var/lib/apt/lists/partial': { dir: true } } },
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

test('install: unpack with apt in the image writes apt\'s auto marks: dependencies auto, requested packages manual', async () => {
  const dir = await specDir('states', spec(server.url, repo.keyringPath, ['hello', 'apt']));
  const layout = path.join(dir, 'layout');
  const r = await ocibuild(['build', '-f', path.join(dir, 'image.yaml'), '--output', `oci:${layout}:v1`, '--cache-dir', path.join(dir, 'cache'), '-q']);
  assert.equal(r.code, 0, r.stderr);
  const rootfs = path.join(dir, 'rootfs');
  await run('umoci', ['raw', 'unpack', '--image', `${layout}:v1`, rootfs]);
  assert.equal(
    await readFile(path.join(rootfs, 'var/lib/apt/extended_states'), 'utf8'),
    'Package: hello-data\nArchitecture: amd64\nAuto-Installed: 1\n\nPackage: libhello\nArchitecture: amd64\nAuto-Installed: 1\n',
  );
  // apt itself reads it so: apt-mark on the image's own database.
  const aptMark = await run('apt-mark', ['showauto', '-o', `Dir=${rootfs}`, '-o', `Dir::State::status=${rootfs}/var/lib/dpkg/status`, '-o', 'Dir::Etc::SourceList=/dev/null', '-o', 'Dir::Etc::SourceParts=/dev/null']);
  assert.deepEqual(aptMark.stdout.trim().split('\n').sort(), ['hello-data', 'libhello']);
  // Without apt in the image, no such file.
  const plain = await specDir('states-none', spec(server.url, repo.keyringPath, ['hello']));
  const r2 = await ocibuild(['build', '-f', path.join(plain, 'image.yaml'), '--output', `oci:${plain}/layout:v1`, '--cache-dir', path.join(dir, 'cache'), '-q']);
  assert.equal(r2.code, 0, r2.stderr);
  await run('umoci', ['raw', 'unpack', '--image', `${plain}/layout:v1`, path.join(plain, 'rootfs')]);
  await assert.rejects(stat(path.join(plain, 'rootfs/var/lib/apt/extended_states')), { code: 'ENOENT' });
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

test('files: a symlinked parent is followed (merged /usr stays), existing parents keep their mode, missing ones are made', async () => {
  const dir = await specDir('files-parents', spec(server.url, repo.keyringPath, ['hello', 'spool'], [
    'files:',
    '  - {src: tool.sh, dest: /bin/tool2, mode: "0755"}',
    '  - {src: note.txt, dest: /var/spool/drop/note}',
    '  - {src: note.txt, dest: /new/dir/file}',
  ]));
  await writeFile(path.join(dir, 'tool.sh'), '#!/bin/sh\necho tool\n');
  await writeFile(path.join(dir, 'note.txt'), 'note\n');
  const r = await ocibuild(['build', '-f', path.join(dir, 'image.yaml'), '--output', `oci:${dir}/out:f`, '--cache-dir', path.join(dir, 'c'), '--source-date-epoch', '1700000000', '-q']);
  assert.equal(r.code, 0, r.stderr);
  const bundle = path.join(dir, 'bundle');
  await run('umoci', ['unpack', '--image', `${dir}/out:f`, bundle]);
  const root = path.join(bundle, 'rootfs');
  assert.equal(readlinkSync(path.join(root, 'bin')), 'usr/bin', '/bin is still the merged-/usr link');
  assert.equal(await readFile(path.join(root, 'usr/bin/tool2'), 'utf8'), '#!/bin/sh\necho tool\n');
  assert.ok(existsSync(path.join(root, 'usr/bin/busybox')), 'the package files under /bin are all there');
  assert.equal((await stat(path.join(root, 'var/spool/drop'))).mode & 0o7777, 0o1733, "the package's mode, not 0755");
  assert.equal((await stat(path.join(root, 'new/dir'))).mode & 0o7777, 0o755);
  // The files layer itself: no entry for bin, the existing parents repeated as they are.
  const index = JSON.parse(await readFile(path.join(dir, 'out/index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
  const manifest = JSON.parse(await readFile(path.join(dir, 'out/blobs/sha256', index.manifests[0]!.digest.slice(7)), 'utf8')) as { layers: Array<{ digest: string }> };
  const listing = (await run('tar', ['-tvzf', path.join(dir, 'out/blobs/sha256', manifest.layers[1]!.digest.slice(7))])).stdout;
  assert.doesNotMatch(listing, / bin\/?$/m);
  assert.match(listing, /^drwx-wx-wt .* var\/spool\/drop\/$/m);
  assert.match(listing, / usr\/bin\/tool2$/m);
});

test('files: a missing source fails at once with its spec line, before any package is fetched', async () => {
  const dir = await specDir('files-missing', spec(server.url, repo.keyringPath, ['hello'], ['files:', '  - {src: nope.txt, dest: /etc/nope}']));
  const r = await ocibuild(['build', '-f', path.join(dir, 'image.yaml'), '--output', `oci:${dir}/out:f`, '--cache-dir', path.join(dir, 'c')]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /image\.yaml:\d+:5: files: cannot read .*nope\.txt: no such file/);
  assert.doesNotMatch(r.stderr, /fetched|resolving/);
});

test('progress when not a terminal: plain lines per download and per layer written, the cache named on a rebuild, nothing with -q', async () => {
  const dir = await specDir('progress', spec(server.url, repo.keyringPath, ['hello'], ['files:', '  - {src: motd.txt, dest: /etc/motd}']));
  await writeFile(path.join(dir, 'motd.txt'), 'welcome\n');
  const cache = path.join(dir, 'cache');
  const args = ['build', '-f', path.join(dir, 'image.yaml'), '--output', `oci:${dir}/out:p`, '--cache-dir', cache];
  const cold = await ocibuild(args);
  assert.equal(cold.code, 0, cold.stderr);
  const digest = cold.stdout.trim();
  // A pipe is not a terminal: no carriage returns, no escape sequences, whole lines.
  assert.doesNotMatch(cold.stderr, /[\r\x1b]/);
  assert.ok(cold.stderr.endsWith('\n'));
  const lines = cold.stderr.trimEnd().split('\n');
  const at = (re: RegExp): number => {
    const i = lines.findIndex((l) => re.test(l));
    assert.ok(i >= 0, `no line matching ${re} in:\n${cold.stderr}`);
    return i;
  };
  for (const pkg of ['hello', 'libhello', 'hello-data']) at(new RegExp(`^fetched ${pkg} \\([\\d.]+ (B|KiB|MiB)\\)$`));
  const summary = at(/^packages: 3 downloaded \([\d.]+ (KiB|MiB) in \d+\.\d s\)$/);
  const aptStart = at(/^writing apt layer \([\d.]+ (KiB|MiB) of files\)$/);
  const aptDone = at(/^wrote apt layer: [\d.]+ (KiB|MiB) in \d+\.\d s \([\d.]+ (B|KiB|MiB|GiB)\/s\), sha256:[0-9a-f]{64}$/);
  const filesStart = at(/^writing files layer \(8 B of files\)$/);
  const filesDone = at(/^wrote files layer: [\d.]+ B in \d+\.\d s \([\d.]+ (B|KiB|MiB)\/s\), sha256:[0-9a-f]{64}$/);
  const end = at(new RegExp(`^wrote oci:${dir}/out:p: ${digest}$`));
  assert.ok(summary < aptStart && aptStart < aptDone && aptDone < filesStart && filesStart < filesDone && filesDone < end, cold.stderr);
  // The layer digests printed are the manifest's layers.
  const manifest = JSON.parse((await run('skopeo', ['inspect', '--raw', `oci:${dir}/out:p`])).stdout) as { layers: Array<{ digest: string; size: number }> };
  assert.deepEqual([lines[aptDone]!, lines[filesDone]!].map((l) => l.slice(-71)), manifest.layers.map((l) => l.digest));
  // ... and the bytes counted are the layer blobs as stored.
  assert.deepEqual([lines[aptDone]!, lines[filesDone]!].map((l) => /: ([\d.]+ [KM]?i?B) in /.exec(l)?.[1]), manifest.layers.map((l) => formatBytes(l.size)));

  const warm = await ocibuild(args);
  assert.equal(warm.code, 0, warm.stderr);
  assert.equal(warm.stdout.trim(), digest);
  assert.match(warm.stderr, /^packages: all 3 already in the store$/m);
  assert.ok(warm.stderr.includes(`apt layer: unchanged, from the layer cache (${manifest.layers[0]!.digest})`), warm.stderr);
  assert.ok(warm.stderr.includes(`files layer: unchanged, from the layer cache (${manifest.layers[1]!.digest})`), warm.stderr);
  assert.doesNotMatch(warm.stderr, /^(writing|fetched)/m);

  const quiet = await ocibuild([...args.slice(0, 4), `oci:${dir}/out2:p`, '--cache-dir', path.join(dir, 'cache2'), '-q']);
  assert.equal(quiet.code, 0, quiet.stderr);
  assert.equal(quiet.stderr, '');
  assert.equal(quiet.stdout.trim(), digest);
});

// Several platforms: a fixture repository with a `tool` package per architecture
// (each names its architecture in a file) and an arch:all dependency.
describe('several platforms: one lock and one image per platform under an OCI image index', () => {
  let multi: FixtureRepo;
  let srv: TestServer;
  let dir: string;
  let indexDigest: string;
  let index: IndexDoc;
  const PLATFORMS = [
    { os: 'linux', architecture: 'amd64' },
    { os: 'linux', architecture: 'arm64' },
    { os: 'linux', architecture: 'arm', variant: 'v7' },
  ];
  const DEBIAN = ['amd64', 'arm64', 'armhf'];

  interface IndexDoc {
    mediaType: string;
    manifests: Array<{ mediaType: string; digest: string; platform: { os: string; architecture: string; variant?: string } }>;
    annotations?: Record<string, string>;
  }

  const sha = (b: string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

  function multiSpec(pkgs: string[], extra: string[] = []): string {
    return scratchSpec(srv.url, multi.keyringPath, pkgs, ['files:', '  - {src: motd.txt, dest: /etc/motd}', 'config:', '  cmd: [/bin/busybox, cat, /usr/share/tool/arch]', ...extra]);
  }

  async function multiDir(name: string, body: string): Promise<string> {
    const d = await specDir(name, body);
    await writeFile(path.join(d, 'motd.txt'), 'welcome\n');
    return d;
  }

  before(async () => {
    const tool = (arch: string, files: FixturePackage['files'] = {}): FixturePackage => ({
      name: 'tool', version: '1.0-1', arch, depends: 'tool-data', files: { '/usr/share/tool/arch': `${arch}\n`, ...files },
    });
    multi = await buildAptRepo(path.join(tmp, 'multiarch'), [{
      name: 'stable',
      architectures: DEBIAN,
      components: {
        main: [
          // Only the amd64 build carries a binary this machine can run.
          tool('amd64', { '/bin/busybox': { content: busybox, mode: 0o755 } }),
          // The newest file of all platforms dates every image of the index.
          { ...tool('arm64'), mtime: 1700000500 },
          tool('armhf'),
          { name: 'tool-data', version: '1.0-1', arch: 'all', files: { '/usr/share/tool/data': 'data\n' } },
          { name: 'amd64-only', version: '1', files: { '/usr/share/amd64-only': 'x\n' } },
        ],
      },
    }], { key });
    srv = await serveDirectory(multi.dir);
    dir = await multiDir('multi', multiSpec(['tool'], ['platforms: [linux/amd64, linux/arm64, linux/arm/v7]']));
    const r = await ocibuild(['build', '-f', path.join(dir, 'image.yaml'), '--output', `oci:${dir}/layout:multi`, '--cache-dir', path.join(dir, 'cache'), '--digest-file', path.join(dir, 'digest')]);
    assert.equal(r.code, 0, r.stderr);
    indexDigest = r.stdout.trim();
    assert.match(r.stderr, /^packages for linux\/arm64: /m);
    assert.match(r.stderr, /^wrote apt layer for linux\/arm\/v7: .*sha256:[0-9a-f]{64}$/m);
    assert.ok(r.stderr.includes(`(image index of 3 platforms)`), r.stderr);
    const raw = (await run('skopeo', ['inspect', '--raw', `oci:${dir}/layout:multi`])).stdout;
    assert.equal(sha(raw), indexDigest, 'the digest printed is the index skopeo reads');
    index = JSON.parse(raw) as IndexDoc;
  });

  after(async () => {
    await srv?.close();
  });

  test('the index: its media type, one manifest per platform in the spec\'s order, a lock per architecture, the digest file', async () => {
    assert.equal(index.mediaType, 'application/vnd.oci.image.index.v1+json');
    assert.deepEqual(index.manifests.map((m) => m.platform), PLATFORMS);
    assert.ok(index.manifests.every((m) => m.mediaType === 'application/vnd.oci.image.manifest.v1+json'));
    assert.deepEqual(index.annotations, { 'org.opencontainers.image.created': '2023-11-14T22:21:40Z' });
    assert.equal((await readFile(path.join(dir, 'digest'), 'utf8')).trim(), indexDigest);
    const top = JSON.parse(await readFile(path.join(dir, 'layout/index.json'), 'utf8')) as { manifests: Array<{ mediaType: string; digest: string; annotations: Record<string, string> }> };
    assert.deepEqual(top.manifests.map((m) => [m.mediaType, m.digest, m.annotations['org.opencontainers.image.ref.name']]), [['application/vnd.oci.image.index.v1+json', indexDigest, 'multi']]);
    for (const arch of DEBIAN) {
      const lock = await readFile(path.join(dir, `Packages-stable-${arch}.lock`), 'utf8');
      assert.match(lock, new RegExp(`^Package: tool\\nVersion: 1.0-1\\nArchitecture: ${arch}$`, 'm'));
    }
  });

  test('skopeo copy --override-arch picks each platform: its config, its packages; the files layer is shared; amd64 runs', async () => {
    const filesLayers = new Set<string>();
    for (const [i, p] of PLATFORMS.entries()) {
      const copy = path.join(dir, `copy-${DEBIAN[i]}`);
      await run('skopeo', ['copy', '--override-arch', p.architecture, ...(p.variant ? ['--override-variant', p.variant] : []), `oci:${dir}/layout:multi`, `oci:${copy}:one`]);
      const manifestRaw = (await run('skopeo', ['inspect', '--raw', `oci:${copy}:one`])).stdout;
      assert.equal(sha(manifestRaw), index.manifests[i]!.digest);
      const manifest = JSON.parse(manifestRaw) as { layers: Array<{ digest: string }>; annotations: Record<string, string> };
      assert.equal(manifest.layers.length, 2);
      filesLayers.add(manifest.layers[1]!.digest);
      assert.deepEqual(manifest.annotations, index.annotations);
      const config = JSON.parse((await run('skopeo', ['inspect', '--config', '--raw', `oci:${copy}:one`])).stdout) as { architecture: string; variant?: string; os: string; created: string };
      assert.deepEqual([config.os, config.architecture, config.variant], [p.os, p.architecture, p.variant]);
      assert.equal(config.created, '2023-11-14T22:21:40Z', 'one date for all platforms: the newest file of any');

      const bundle = path.join(dir, `bundle-${DEBIAN[i]}`);
      await run('umoci', ['unpack', '--image', `${copy}:one`, bundle]);
      const rootfs = path.join(bundle, 'rootfs');
      assert.equal(await readFile(path.join(rootfs, 'usr/share/tool/arch'), 'utf8'), `${DEBIAN[i]}\n`);
      assert.equal(await readFile(path.join(rootfs, 'etc/motd'), 'utf8'), 'welcome\n');
      const status = await run('dpkg-query', [`--admindir=${rootfs}/var/lib/dpkg`, '-W', '-f', '${Package}:${Architecture}\n']);
      assert.deepEqual(status.stdout.trim().split('\n').sort(), [`tool-data:all`, `tool:${DEBIAN[i]}`]);
      if (p.architecture === 'amd64') {
        const configPath = path.join(bundle, 'config.json');
        const rt = JSON.parse(await readFile(configPath, 'utf8')) as { process: { terminal: boolean } };
        rt.process.terminal = false;
        await writeFile(configPath, JSON.stringify(rt));
        const out = await run('runc', ['run', '--bundle', bundle, `ocibuild-multi-${process.pid}`]);
        assert.equal(out.stdout, 'amd64\n');
      }
    }
    assert.equal(filesLayers.size, 1, 'one files layer for every platform');
  });

  test('--platform picks and orders; one platform is a plain manifest, the same bytes as in the index; a new store and an archive give the same index', async () => {
    const build = async (args: string[], out: string, cache = 'cache'): Promise<string> => {
      const r = await ocibuild(['build', '-f', path.join(dir, 'image.yaml'), '--output', out, '--cache-dir', path.join(dir, cache), '-q', ...args]);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout.trim();
    };
    const one = await build(['--platform', 'linux/arm64'], `oci:${dir}/one:arm64`);
    assert.equal(one, index.manifests[1]!.digest, 'the arm64 image alone is the arm64 image of the index');
    const oneTop = JSON.parse(await readFile(path.join(dir, 'one/index.json'), 'utf8')) as { manifests: Array<{ mediaType: string; platform: unknown }> };
    assert.equal(oneTop.manifests[0]!.mediaType, 'application/vnd.oci.image.manifest.v1+json');
    assert.deepEqual(oneTop.manifests[0]!.platform, { architecture: 'arm64', os: 'linux' });

    // amd64 alone is dated by its own packages, so it differs from the index's amd64 image by that date only.
    const amd64 = await build(['--platform', 'linux/amd64'], `oci:${dir}/one:amd64`);
    assert.notEqual(amd64, index.manifests[0]!.digest);
    assert.equal(JSON.parse((await run('skopeo', ['inspect', '--config', '--raw', `oci:${dir}/one:amd64`])).stdout).created, '2023-11-14T22:13:20Z');
    const dated = await build(['--platform', 'linux/amd64', '--source-date-epoch', '1700000500'], `oci:${dir}/one:dated`);
    assert.equal(dated, index.manifests[0]!.digest, 'with the same date it is the same image');

    // Without arm64 the newest file is older: pinned to the first build's date, the images are the same.
    const two = await build(['--platform', 'linux/arm/v7,linux/amd64', '--source-date-epoch', '1700000500'], `oci:${dir}/two:x`);
    const twoIndex = JSON.parse((await run('skopeo', ['inspect', '--raw', `oci:${dir}/two:x`])).stdout) as IndexDoc;
    assert.equal(sha(JSON.stringify(twoIndex)), two);
    assert.deepEqual(twoIndex.manifests.map((m) => m.digest), [index.manifests[2]!.digest, index.manifests[0]!.digest]);

    const fresh = await build([], `oci-archive:${dir}/multi.tar:multi`, 'cache-fresh');
    assert.equal(fresh, indexDigest);
    assert.equal(sha((await run('skopeo', ['inspect', '--raw', `oci-archive:${dir}/multi.tar:multi`])).stdout), indexDigest);
  });

  test('bad multi-platform requests: clear errors, nothing written, no lock changed', async () => {
    const d = await multiDir('multi-bad', multiSpec(['tool'], ['platforms: [linux/amd64, linux/arm64]']));
    const cache = path.join(d, 'cache');
    const build = (args: string[], out = `oci:${d}/out:x`): ReturnType<typeof ocibuild> =>
      ocibuild(['build', '-f', path.join(d, 'image.yaml'), '--output', out, '--cache-dir', cache, ...args]);
    const listing = async (): Promise<string[]> => (await readdir(d)).sort();

    const docker = await build([], `docker-archive:${d}/image.tar:app:1`);
    assert.equal(docker.code, 2, docker.stderr);
    assert.match(docker.stderr, /docker-archive holds one platform \(docker load has no image index\); this build has 2 platforms/);
    assert.match(docker.stderr, /hint: build one platform with --platform, or write all of them to oci:DIR\[:TAG\] or oci-archive:FILE\[:TAG\]/);
    assert.deepEqual(await listing(), ['image.yaml', 'motd.txt'], 'refused before locking or writing anything');

    for (const [args, message] of [
      [['--platform', 'linux/amd64,linux/amd64'], /--platform: linux\/amd64 is listed twice/],
      [['--platform', 'linux/amd64,'], /--platform: "linux\/amd64," has an empty item/],
      [['--platform', 'linux/amd64,linux/sparc'], /unknown platform architecture "sparc"/],
    ] as Array<[string[], RegExp]>) {
      const r = await build(args);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
      assert.match(r.stderr, /hint: /);
    }
    assert.deepEqual(await listing(), ['image.yaml', 'motd.txt']);

    // --locked with the amd64 lock only: the arm64 one is missing, named with its platform.
    assert.equal((await ocibuild(['lock', '-f', path.join(d, 'image.yaml'), '--cache-dir', cache, '--platform', 'linux/amd64'])).code, 0);
    const locked = await build(['--locked']);
    assert.equal(locked.code, 1, locked.stderr);
    assert.ok(locked.stderr.includes(`${d}/Packages-stable-arm64.lock: no lockfile for linux/arm64`), locked.stderr);
    assert.deepEqual(await listing(), ['Packages-stable-amd64.lock', 'cache', 'image.yaml', 'motd.txt']);

    // A package that exists for amd64 only: arm64 cannot be locked, so no image at all.
    const onlyOne = await multiDir('multi-missing', multiSpec(['amd64-only'], ['platforms: [linux/amd64, linux/arm64]']));
    const missing = await ocibuild(['build', '-f', path.join(onlyOne, 'image.yaml'), '--output', `oci:${onlyOne}/out:x`, '--cache-dir', path.join(onlyOne, 'cache')]);
    assert.equal(missing.code, 1, missing.stderr);
    assert.match(missing.stderr, /amd64-only/);
    assert.ok(!(await readdir(onlyOne)).includes('out'), 'no output');
    assert.ok(!(await readdir(onlyOne)).includes('Packages-stable-arm64.lock'));

    // name:arch for one platform's architecture cannot serve the others (and was once dropped silently).
    const qualified = await multiDir('multi-qualified', multiSpec(['"tool:arm64"'], ['platforms: [linux/amd64, linux/arm64]']));
    for (const cmd of [['build', '--output', `oci:${qualified}/out:x`], ['lock']]) {
      const q = await ocibuild([cmd[0]!, '-f', path.join(qualified, 'image.yaml'), '--cache-dir', path.join(qualified, 'cache'), ...cmd.slice(1)]);
      assert.equal(q.code, 2, q.stderr);
      assert.ok(q.stderr.includes(`${qualified}/image.yaml:8:14: tool:arm64 asks for architecture arm64, but linux/amd64 is amd64`), q.stderr);
      assert.match(q.stderr, /hint: write tool without :arm64/);
    }
    assert.deepEqual((await readdir(qualified)).sort(), ['image.yaml', 'motd.txt']);

    // A lockfile name without {arch}, given two architectures on the command line.
    const shared = await multiDir('multi-shared-lock', multiSpec(['tool']).replace('  install: unpack\n', '  install: unpack\n  lockfile: tool.lock\n'));
    const sharedLock = await ocibuild(['build', '-f', path.join(shared, 'image.yaml'), '--output', `oci:${shared}/out:x`, '--cache-dir', path.join(shared, 'cache'), '--platform', 'linux/amd64,linux/arm64']);
    assert.equal(sharedLock.code, 2, sharedLock.stderr);
    assert.ok(sharedLock.stderr.includes(`the lockfiles of amd64 and arm64 would both be ${shared}/tool.lock`), sharedLock.stderr);
    assert.match(sharedLock.stderr, /hint: put \{arch\} in apt\.lockfile/);
    assert.deepEqual((await readdir(shared)).sort(), ['image.yaml', 'motd.txt']);
  });
});

test('--depfile: Make sees the spec, lockfile, keyring and added files as inputs; touching one makes the image out of date', async () => {
  const dir = await specDir('depfile', spec(server.url, repo.keyringPath, ['hello'], ['files:', '  - {src: "my file#1.txt", dest: /etc/my-file.txt}']));
  await writeFile(path.join(dir, 'my file#1.txt'), 'added\n');
  const yaml = path.join(dir, 'image.yaml');
  const cmd = [CLI, 'build', '-f', yaml, '-o', `oci:${path.join(dir, 'out')}`, '--cache-dir', path.join(dir, 'cache'), '--digest-file', 'digest', '--depfile', 'digest.d', '-q'];
  await writeFile(path.join(dir, 'Makefile'), `digest:\n\t${cmd.join(' ')}\n-include digest.d\n`);
  const { execFile } = await import('node:child_process');
  // Asynchronous: the fixture repository answering the build lives in this process.
  const make = (...args: string[]): Promise<{ code: number; out: string }> =>
    new Promise((ok) => execFile('make', ['-C', dir, ...args], (err, stdout, stderr) => ok({ code: err ? Number((err as { code?: unknown }).code ?? -1) : 0, out: stdout + stderr })));
  const first = await make();
  assert.equal(first.code, 0, first.out);
  const dep = await readFile(path.join(dir, 'digest.d'), 'utf8');
  assert.ok(dep.startsWith('digest:'), dep);
  for (const f of [yaml, path.join(dir, 'Packages-stable-amd64.lock'), repo.keyringPath, path.join(dir, 'my\\ file\\#1.txt')]) assert.ok(dep.includes(f), `${f} in\n${dep}`);
  assert.equal((await make('-q', 'digest')).code, 0, 'up to date right after the build');
  const later = new Date(Date.now() + 5000);
  const { utimes } = await import('node:fs/promises');
  await utimes(path.join(dir, 'my file#1.txt'), later, later);
  assert.notEqual((await make('-q', 'digest')).code, 0, 'an added file changed: out of date');
});
