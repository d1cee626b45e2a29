// The fixture apt repository is judged by the real tools: dpkg-deb reads our .debs,
// gpgv checks our signatures and apt-get/apt-cache use the served repository.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { buildAptRepo, generateTestKey, tamperFile, type FixtureRepo, type FixtureSuite } from './aptrepo.js';
import { buildDeb, controlParagraph, type FixturePackage } from './deb.js';
import { serveDirectory, type TestServer } from './http.js';
import { scratchDirs } from './scratch.js';

const freshDir = await scratchDirs('aptrepo');

const key = await generateTestKey();
const otherKey = await generateTestKey('someone else');

const hello: FixturePackage = {
  name: 'hello', version: '1:2.10-3', source: 'hello',
  preDepends: 'libfoo1 (>= 1.0)', depends: 'hello-data (>= 2.10), default-greeter',
  section: 'devel', priority: 'optional',
  description: 'example package based on GNU hello\nThe GNU hello program produces a familiar, friendly greeting.\n\nIt is a fixture.',
  files: {
    '/usr/bin/hello': '#!/bin/sh\necho "Hello, world!"\n',
    '/usr/bin/hi': { symlink: 'hello' },
    '/etc/hello.conf': { content: 'greeting=hello\n', mode: 0o640 },
    '/usr/share/doc/hello/copyright': 'public domain\n',
  },
  conffiles: ['/etc/hello.conf'],
  scripts: { postinst: '#!/bin/sh\nset -e\nexit 0\n' },
};
const pkgs: FixturePackage[] = [
  hello,
  { name: 'libfoo1', version: '1.0-1', source: 'libfoo', multiArch: 'same', files: { '/usr/lib/x86_64-linux-gnu/libfoo.so.1': Buffer.from([0x7f, 0x45, 0x4c, 0x46]) } },
  { name: 'hello-data', version: '2.10-3', arch: 'all', source: 'hello', multiArch: 'foreign', files: { '/usr/share/hello/greeting.txt': 'hello\n' }, dataCompression: 'zst' },
  { name: 'greeter-impl', version: '0.9', provides: 'default-greeter', dataCompression: 'gz', controlCompression: 'xz' },
];
const suites = (overrides: Partial<FixtureSuite> = {}): FixtureSuite[] => [
  { name: 'stable', codename: 'fixture', components: { main: pkgs, contrib: [{ name: 'extra-tool', version: '3.0', arch: 'all' }] }, ...overrides },
];

/** Runs a tool asynchronously: apt talks to the server in this same process. */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env, cwd?: string): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((ok, fail) => {
    const child = spawn(cmd, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', fail);
    child.on('close', (code, signal) => ok({ status: code ?? (signal ? -1 : 0), stdout, stderr }));
  });
}

/** apt with every path under `tmp` and none of the host's configuration. */
async function isolatedApt(tmp: string, server: TestServer, repo: FixtureRepo, suite = 'stable', components = 'main contrib') {
  for (const d of ['etc/parts', 'etc/sources.d', 'etc/trusted.d', 'etc/preferences.d', 'state/lists/partial', 'cache/archives/partial', 'log']) {
    await mkdir(join(tmp, d), { recursive: true });
  }
  await writeFile(join(tmp, 'status'), '');
  await writeFile(join(tmp, 'sources.list'), `deb [signed-by=${repo.keyringPath}] ${server.url}/ ${suite} ${components}\n`);
  const conf = {
    'Dir::Etc::Main': join(tmp, 'apt.conf'),
    'Dir::Etc::Parts': join(tmp, 'etc/parts'),
    'Dir::Etc::SourceList': join(tmp, 'sources.list'),
    'Dir::Etc::SourceParts': join(tmp, 'etc/sources.d'),
    'Dir::Etc::Trusted': repo.keyringPath,
    'Dir::Etc::TrustedParts': join(tmp, 'etc/trusted.d'),
    'Dir::Etc::Preferences': join(tmp, 'preferences'),
    'Dir::Etc::PreferencesParts': join(tmp, 'etc/preferences.d'),
    'Dir::State': join(tmp, 'state'),
    'Dir::State::status': join(tmp, 'status'),
    'Dir::Cache': join(tmp, 'cache'),
    'Dir::Log': join(tmp, 'log'),
    'APT::Architecture': 'amd64',
    'APT::Architectures': 'amd64',
    'APT::Sandbox::User': 'root',
    'Acquire::Languages': 'none',
    'Acquire::PDiffs': 'false',
    'Acquire::http::Proxy': 'DIRECT',
    'Acquire::Retries': '0',
    'Debug::NoLocking': 'true',
  };
  const text = Object.entries(conf).map(([k, v]) => `${k} "${v}";\n`).join('');
  await writeFile(join(tmp, 'apt.conf'), text);
  // APT_CONFIG is read before the parts directory, so the host's apt.conf.d stays out.
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, APT_CONFIG: join(tmp, 'apt.conf'), LC_ALL: 'C' };
  const opts = Object.entries(conf).flatMap(([k, v]) => ['-o', `${k}=${v}`]);
  return {
    aptGet: (...args: string[]) => run('apt-get', [...opts, ...args], env),
    aptCache: (...args: string[]) => run('apt-cache', [...opts, ...args], env),
  };
}

test('buildDeb produces archives dpkg-deb reads, lists and extracts', async () => {
  const dir = await freshDir('deb');
  const debPath = join(dir, 'hello.deb');
  await writeFile(debPath, await buildDeb(hello));

  const info = await run('dpkg-deb', ['--info', debPath]);
  assert.equal(info.status, 0, info.stderr);
  assert.match(info.stdout, /new Debian package, version 2\.0/);
  assert.match(info.stdout, /^ Package: hello$/m);
  assert.match(info.stdout, /^ Version: 1:2\.10-3$/m);
  assert.match(info.stdout, /^ Pre-Depends: libfoo1 \(>= 1\.0\)$/m);
  assert.match(info.stdout, /^ {2}\.$/m, 'blank description line written as " ."');
  assert.match(info.stdout, /md5sums/);
  assert.match(info.stdout, /\* +postinst/);

  const field = await run('dpkg-deb', ['--field', debPath, 'Depends']);
  assert.equal(field.stdout.trim(), 'hello-data (>= 2.10), default-greeter');

  const contents = await run('dpkg-deb', ['--contents', debPath]);
  assert.equal(contents.status, 0, contents.stderr);
  const names = contents.stdout.trim().split('\n').map((l) => l.split(/\s+/).slice(5).join(' '));
  assert.deepEqual(names, [
    './', './etc/', './etc/hello.conf', './usr/', './usr/bin/', './usr/bin/hello', './usr/bin/hi -> hello',
    './usr/share/', './usr/share/doc/', './usr/share/doc/hello/', './usr/share/doc/hello/copyright',
  ]);
  assert.match(contents.stdout, /^-rw-r----- root\/root +15 2023-11-14 22:13 \.\/etc\/hello\.conf$/m);
  assert.match(contents.stdout, /^-rwxr-xr-x root\/root .* \.\/usr\/bin\/hello$/m);

  const out = join(dir, 'x');
  const x = await run('dpkg-deb', ['-x', debPath, out]);
  assert.equal(x.status, 0, x.stderr);
  assert.equal(await readFile(join(out, 'usr/bin/hello'), 'utf8'), '#!/bin/sh\necho "Hello, world!"\n');
  const ctrl = join(dir, 'ctrl');
  assert.equal((await run('dpkg-deb', ['-e', debPath, ctrl])).status, 0);
  assert.equal(await readFile(join(ctrl, 'control'), 'utf8'), controlParagraph(hello));
  assert.equal(await readFile(join(ctrl, 'conffiles'), 'utf8'), '/etc/hello.conf\n');
  // md5sums paths are relative to the unpacked root
  const check = await run('md5sum', ['-c', join(ctrl, 'md5sums')], process.env, out);
  assert.equal(check.status, 0, check.stdout + check.stderr);
  assert.match(check.stdout, /usr\/bin\/hello: OK/);

  // Every compression dpkg-deb knows, and deterministic output.
  for (const c of ['gz', 'xz', 'zst', 'none'] as const) {
    const p = join(dir, `c-${c}.deb`);
    await writeFile(p, await buildDeb({ ...hello, dataCompression: c, controlCompression: c === 'zst' ? 'gz' : c }));
    const r = await run('dpkg-deb', ['--contents', p]);
    assert.equal(r.status, 0, `${c}: ${r.stderr}`);
    assert.match(r.stdout, /\.\/usr\/bin\/hello$/m);
  }
  assert.ok((await buildDeb(hello)).equals(await buildDeb(hello)));
});

test('repository layout, Release hashes and gpgv signatures', async () => {
  const dir = await freshDir('layout');
  const repo = await buildAptRepo(dir, suites({ acquireByHash: true, validUntil: new Date('2100-01-01T00:00:00Z') }), { key });
  assert.equal(repo.key.fingerprint, key.fingerprint);
  assert.deepEqual([...repo.debs.keys()].sort(), ['extra-tool_3.0_all', 'greeter-impl_0.9_amd64', 'hello-data_2.10-3_all', 'hello_1:2.10-3_amd64', 'libfoo1_1.0-1_amd64']);
  assert.equal(repo.debs.get('hello_1:2.10-3_amd64')?.filename, 'pool/main/h/hello/hello_2.10-3_amd64.deb');
  assert.equal(repo.debs.get('libfoo1_1.0-1_amd64')?.filename, 'pool/main/libf/libfoo/libfoo1_1.0-1_amd64.deb');
  for (const d of repo.debs.values()) {
    const bytes = await readFile(d.path);
    assert.equal(bytes.length, d.size);
    assert.equal(createHash('sha256').update(bytes).digest('hex'), d.sha256);
  }

  const dist = join(dir, 'dists/stable');
  const release = await readFile(join(dist, 'Release'), 'utf8');
  assert.match(release, /^Origin: ocibuild\nLabel: ocibuild\nSuite: stable\nCodename: fixture\nDate: Mon, 01 Jan 2024 00:00:00 UTC\nValid-Until: Fri, 01 Jan 2100 00:00:00 UTC\n/);
  assert.match(release, /^Acquire-By-Hash: yes$/m);
  assert.match(release, /^Architectures: all amd64$/m);
  assert.match(release, /^Components: main contrib$/m);
  assert.match(release, /^No-Support-for-Architecture-all: Packages$/m);
  // Every listed file that exists has the listed size and hash; the uncompressed ones are listed but not served.
  const sha = release.slice(release.indexOf('SHA256:\n') + 8).trim().split('\n').map((l) => l.trim().split(/\s+/));
  assert.ok(sha.length >= 12);
  for (const [hex, size, rel] of sha) {
    const p = join(dist, rel!);
    if (rel!.endsWith('/Packages')) {
      assert.equal(existsSync(p), false, `${rel} is not published by default`);
      assert.ok(existsSync(join(dist, rel!.replace(/Packages$/, 'by-hash/SHA256'), hex!)));
      continue;
    }
    const b = await readFile(p);
    assert.equal(String(b.length), size, rel);
    assert.equal(createHash('sha256').update(b).digest('hex'), hex, rel);
    assert.ok((await readFile(join(dist, rel!.replace(/Packages\.(gz|xz)$/, 'by-hash/SHA256'), hex!))).equals(b));
  }
  // arch:all packages are in binary-all and in binary-amd64, Description last in each paragraph.
  const amd64 = gunzipSync(await readFile(join(dist, 'main/binary-amd64/Packages.gz'))).toString();
  const all = gunzipSync(await readFile(join(dist, 'main/binary-all/Packages.gz'))).toString();
  assert.match(amd64, /^Package: hello-data$/m);
  assert.match(all, /^Package: hello-data$/m);
  assert.doesNotMatch(all, /^Package: hello$/m);
  const helloPara = amd64.split('\n\n').find((p) => p.startsWith('Package: hello\n'))!;
  assert.match(helloPara, /^Filename: pool\/main\/h\/hello\/hello_2\.10-3_amd64\.deb$/m);
  assert.match(helloPara, new RegExp(`^SHA256: ${repo.debs.get('hello_1:2.10-3_amd64')!.sha256}$`, 'm'));
  assert.match(helloPara, /^Pre-Depends: libfoo1 \(>= 1\.0\)$/m);
  assert.match(amd64.split('\n\n').find((p) => p.startsWith('Package: greeter-impl\n'))!, /^Provides: default-greeter$/m);
  assert.match(helloPara, /\nDescription: example package based on GNU hello\n( .*\n?)+$/);

  const home = await freshDir('gnupg');
  const good = await run('gpgv', ['--homedir', home, '--keyring', repo.keyringPath, join(dist, 'InRelease')]);
  assert.equal(good.status, 0, good.stderr);
  assert.match(good.stderr, /Good signature/);
  const detached = await run('gpgv', ['--homedir', home, '--keyring', repo.keyringPath, join(dist, 'Release.gpg'), join(dist, 'Release')]);
  assert.equal(detached.status, 0, detached.stderr);
  assert.ok(good.stderr.includes(key.fingerprint.slice(-16)) || good.stderr.includes(key.fingerprint), good.stderr);

  // Signed by a key that is not in the keyring.
  const badDir = await freshDir('badsig');
  const bad = await buildAptRepo(badDir, suites(), { key, signWith: otherKey });
  const rejected = await run('gpgv', ['--homedir', home, '--keyring', bad.keyringPath, join(badDir, 'dists/stable/InRelease')]);
  assert.notEqual(rejected.status, 0);
  assert.match(rejected.stderr, /No public key/);
  // A Release changed after signing.
  await tamperFile(repo, 'dists/stable/Release', (b) => Buffer.concat([b, Buffer.from(' \n')]));
  const stale = await run('gpgv', ['--homedir', home, '--keyring', repo.keyringPath, join(dist, 'Release.gpg'), join(dist, 'Release')]);
  assert.notEqual(stale.status, 0);
  assert.match(stale.stderr, /BAD signature/);
});

test('apt-get update, apt-cache policy and apt-get install -s accept the served repository', async () => {
  const dir = await freshDir('apt');
  const repo = await buildAptRepo(dir, suites({ acquireByHash: true }), { key });
  const server = await serveDirectory(dir);
  try {
    const apt = await isolatedApt(await freshDir('apt-state'), server, repo);
    const update = await apt.aptGet('update');
    assert.equal(update.status, 0, update.stdout + update.stderr);
    assert.doesNotMatch(update.stdout + update.stderr, /^(W|E):/m);
    assert.ok(server.requests.some((r) => r.path === '/dists/stable/InRelease' && r.status === 200));
    assert.ok(server.requests.some((r) => r.path.includes('/main/binary-amd64/by-hash/SHA256/') && r.status === 200), 'apt used by-hash');

    const policy = await apt.aptCache('policy', 'hello');
    assert.equal(policy.status, 0, policy.stderr);
    assert.match(policy.stdout, /Candidate: 1:2\.10-3/);
    assert.match(policy.stdout, new RegExp(`500 ${server.url}/? stable/main amd64 Packages`));
    const release = await apt.aptCache('policy');
    assert.match(release.stdout, /release o=ocibuild,a=stable,n=fixture,l=ocibuild,c=main,b=amd64/);

    const sim = await apt.aptGet('install', '-s', '-y', 'hello', 'extra-tool');
    assert.equal(sim.status, 0, sim.stdout + sim.stderr);
    const inst = [...sim.stdout.matchAll(/^Inst (\S+) \((\S+) ocibuild:stable \[(\S+)\]\)/gm)].map((m) => `${m[1]}=${m[2]}/${m[3]}`).sort();
    assert.deepEqual(inst, ['extra-tool=3.0/all', 'greeter-impl=0.9/amd64', 'hello-data=2.10-3/all', 'hello=1:2.10-3/amd64', 'libfoo1=1.0-1/amd64']);
    // Pre-Depends: libfoo1 is configured before hello is unpacked.
    assert.ok(sim.stdout.indexOf('Conf libfoo1') < sim.stdout.indexOf('Inst hello '), sim.stdout);

    // apt downloads and checks a .deb from the pool.
    const dl = await apt.aptGet('install', '-y', '--download-only', 'hello');
    assert.equal(dl.status, 0, dl.stdout + dl.stderr);
    assert.ok(server.requests.some((r) => r.path === '/pool/main/h/hello/hello_2.10-3_amd64.deb' && r.status === 200));
  } finally {
    await server.close();
  }
});

test('apt rejects a repository signed by another key and a tampered index', async () => {
  const badDir = await freshDir('apt-badsig');
  const bad = await buildAptRepo(badDir, suites(), { key, signWith: otherKey });
  const tamperedDir = await freshDir('apt-tamper');
  const tampered = await buildAptRepo(tamperedDir, suites({ compressions: ['gz'] }), { key });
  await tamperFile(tampered, 'dists/stable/main/binary-amd64/Packages.gz', (b) => {
    const text = gunzipSync(b).toString().replace('Version: 0.9', 'Version: 0.99');
    return gzipSync(text);
  });
  for (const [repo, dir, expect] of [[bad, badDir, /NO_PUBKEY|not signed|signatures couldn't be verified/], [tampered, tamperedDir, /Hash Sum mismatch|File has unexpected size/]] as const) {
    const server = await serveDirectory(dir);
    try {
      const apt = await isolatedApt(await freshDir('apt-state'), server, repo);
      const update = await apt.aptGet('update');
      assert.notEqual(update.status, 0, update.stdout + update.stderr);
      assert.match(update.stdout + update.stderr, expect);
    } finally {
      await server.close();
    }
  }
});

test('test server: GET, HEAD, ranges, 404 and faults', async () => {
  const dir = await freshDir('http');
  const body = Buffer.from('0123456789'.repeat(1000));
  await mkdir(join(dir, 'a/b'), { recursive: true });
  await writeFile(join(dir, 'a/b/file.bin'), body);
  const server = await serveDirectory(dir);
  try {
    const url = `${server.url}/a/b/file.bin`;
    const ok = await fetch(url);
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('content-length'), String(body.length));
    assert.ok(Buffer.from(await ok.arrayBuffer()).equals(body));

    const head = await fetch(url, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), String(body.length));

    const range = await fetch(url, { headers: { Range: 'bytes=9990-' } });
    assert.equal(range.status, 206);
    assert.equal(range.headers.get('content-range'), `bytes 9990-9999/${body.length}`);
    assert.equal(await range.text(), '0123456789');
    assert.equal((await fetch(url, { headers: { Range: 'bytes=10000-' } })).status, 416);

    assert.equal((await fetch(`${server.url}/a/missing`)).status, 404);
    assert.equal((await fetch(`${server.url}/a/b`)).status, 404);
    assert.equal((await fetch(`${server.url}/../etc/passwd`)).status, 404);

    // Truncation: the full length is promised, 100 bytes arrive, the connection drops.
    server.setFault('file.bin', { kind: 'truncate', bytes: 100, times: 1 });
    const cut = await fetch(url);
    assert.equal(cut.status, 200);
    assert.equal(cut.headers.get('content-length'), String(body.length));
    await assert.rejects(cut.arrayBuffer());
    const again = await fetch(url);
    assert.ok(Buffer.from(await again.arrayBuffer()).equals(body), 'fault cleared after `times`');

    server.setFault('/b/file.bin', { kind: 'status', status: 503, times: 2 });
    assert.equal((await fetch(url)).status, 503);
    assert.equal((await fetch(url)).status, 503);
    assert.equal((await fetch(url)).status, 200);

    server.setFault('.bin', { kind: 'reset' });
    await assert.rejects(fetch(url));
    await assert.rejects(fetch(url));
    server.setFault('.bin', null);
    assert.equal((await fetch(url)).status, 200);

    server.setFault('.bin', { kind: 'delay-headers-ms', ms: 1 });
    assert.equal((await fetch(url)).status, 200);
    server.setFault('.bin', null);

    const log = server.requests.filter((r) => r.path === '/a/b/file.bin').map((r) => `${r.method} ${r.status}`);
    assert.deepEqual(log, ['GET 200', 'HEAD 200', 'GET 206', 'GET 416', 'GET 200', 'GET 200', 'GET 503', 'GET 503', 'GET 200', 'GET 0', 'GET 0', 'GET 200', 'GET 200']);
  } finally {
    await server.close();
  }
});
