// `install: dpkg` end to end, hermetic: a base image whose dpkg is this host's own
// (binaries and libraries packaged as fixture .debs, busybox as the shell), pushed to a
// real docker-registry; then packages with maintainer scripts, a conffile, an
// alternative and a Pre-Depends installed on it by dpkg in the sandbox. Judged with the
// host's dpkg (--audit, -V) on the umoci-unpacked result. And the same packages
// bootstrapped from scratch (essential set unpacked, then installed by dpkg).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, readFileSync, readlinkSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { buildAptRepo, generateTestKey, type FixtureRepo } from '../support/aptrepo.js';
import { ocibuild } from '../support/cli.js';
import { serveDirectory, type TestServer } from '../support/http.js';
import { hostFile, type FixturePackage } from '../support/deb.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';

const APPLETS = ['sh', 'rm', 'diff', 'cat', 'mkdir', 'ln', 'echo', 'test', '[', 'printf', 'chmod', 'chown', 'cp', 'mv', 'touch', 'ls', 'grep', 'sed', 'readlink', 'dirname', 'basename', 'find', 'id', 'true', 'false'];
// GNU tar: dpkg-deb's extraction needs it.
const DPKG_TOOLS = ['tar', 'dpkg', 'dpkg-deb', 'dpkg-query', 'dpkg-divert', 'dpkg-trigger', 'dpkg-split', 'update-alternatives', 'dpkg-maintscript-helper'];
const LIBS = ['libacl.so.1', 'libbz2.so.1.0', 'libc.so.6', 'liblzma.so.5', 'libmd.so.0', 'libpcre2-8.so.0', 'libselinux.so.1', 'libz.so.1', 'libzstd.so.1'];

function baseSystem(essential: boolean): FixturePackage[] {
  const shell: FixturePackage = {
    name: 'busybox-shell',
    version: essential ? '1.0-2' : '1.0-1',
    essential,
    files: { '/usr/bin/busybox': hostFile('/bin/busybox'), ...Object.fromEntries(APPLETS.map((a) => [`/usr/bin/${a}`, { symlink: 'busybox' }])) },
  };
  const dpkg: FixturePackage = {
    name: 'host-dpkg',
    version: essential ? '1.0-2' : '1.0-1',
    essential,
    depends: 'busybox-shell',
    files: {
      ...Object.fromEntries(DPKG_TOOLS.map((t) => [`/usr/bin/${t}`, hostFile(`/usr/bin/${t}`)])),
      ...Object.fromEntries(LIBS.map((l) => [`/usr/lib/x86_64-linux-gnu/${l}`, hostFile(`/lib/x86_64-linux-gnu/${l}`)])),
      '/usr/lib64/ld-linux-x86-64.so.2': hostFile('/lib64/ld-linux-x86-64.so.2'),
      '/usr/sbin/ldconfig': hostFile('/sbin/ldconfig'),
      '/usr/sbin/start-stop-daemon': hostFile('/sbin/start-stop-daemon'),
      '/etc/passwd': 'root:x:0:0:root:/root:/bin/sh\n',
      '/etc/group': 'root:x:0:\n',
      '/etc/shadow': 'root:*:19000:0:99999:7:::\n',
    },
  };
  return [shell, dpkg];
}

const APP_PACKAGES: FixturePackage[] = [
  // A stand-in for apt: its presence makes ocibuild keep apt's auto/manual marks.
  { name: 'apt', version: '2.6.1-fixture', files: { '/usr/bin/apt-get': { content: '#!/bin/sh\necho apt stand-in\n', mode: 0o755 } } },
  { name: 'early', version: '1.0-1', files: { '/usr/share/early/ready': 'yes\n' }, scripts: { postinst: '#!/bin/sh\nset -e\necho early-configured > /usr/share/early/state\n' } },
  {
    name: 'svc',
    version: '2.0-1',
    preDepends: 'early',
    depends: 'tiny-editor',
    files: { '/etc/svc.conf': 'setting=1\n', '/usr/lib/svc/daemon': { content: '#!/bin/sh\necho daemon\n', mode: 0o755 } },
    conffiles: ['/etc/svc.conf'],
    scripts: {
      preinst: '#!/bin/sh\nset -e\ntest -e /usr/share/early/state || { echo "early is not configured" >&2; exit 1; }\n',
      postinst: '#!/bin/sh\nset -e\nif [ "$1" = configure ]; then mkdir -p /var/lib/svc; echo "configured by postinst" > /var/lib/svc/generated; [ -x /usr/sbin/policy-rc.d ] && /usr/sbin/policy-rc.d svc start || echo "policy-rc.d said $?" > /var/lib/svc/policy; fi\n',
    },
  },
  {
    name: 'tiny-editor',
    version: '1.0-1',
    files: { '/usr/bin/tiny': { content: '#!/bin/sh\necho tiny\n', mode: 0o755 } },
    scripts: {
      postinst: '#!/bin/sh\nset -e\nif [ "$1" = configure ]; then update-alternatives --install /usr/bin/editor editor /usr/bin/tiny 10; fi\n',
      prerm: '#!/bin/sh\nset -e\nif [ "$1" = remove ]; then update-alternatives --remove editor /usr/bin/tiny; fi\n',
    },
  },
];

let tmp: string;
let repo: FixtureRepo;
let server: TestServer;
let reg: TestRegistry;
let env: NodeJS.ProcessEnv;

before(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'ocibuild-dpkg-'));
  repo = await buildAptRepo(path.join(tmp, 'repo'), [
    { name: 'stable', components: { main: [...baseSystem(false), ...APP_PACKAGES] } },
    { name: 'boot', components: { main: [...baseSystem(true), ...APP_PACKAGES] } },
  ], { key: await generateTestKey() });
  server = await serveDirectory(repo.dir);
  reg = await startRegistry();
  env = { HOME: tmp, DOCKER_CONFIG: path.join(tmp, 'docker'), XDG_RUNTIME_DIR: path.join(tmp, 'run') };
});

after(async () => {
  await reg?.stop();
  await server?.close();
  await rm(tmp, { recursive: true, force: true });
});

function spec(from: string, suite: string, pkgs: string[], install: 'dpkg' | 'unpack', extra: string[] = []): string {
  return [
    `from: ${from}`,
    'apt:',
    '  sources:',
    `    - url: ${server.url}`,
    `      suites: [${suite}]`,
    '      components: [main]',
    `      keyring: ${repo.keyringPath}`,
    `  packages: [${pkgs.join(', ')}]`,
    `  install: ${install}`,
    ...extra,
    '',
  ].join('\n');
}

async function build(name: string, body: string, args: string[] = []): Promise<{ code: number; stdout: string; stderr: string; dir: string; layout: string }> {
  const dir = await mkdtemp(path.join(tmp, `${name}-`));
  await writeFile(path.join(dir, 'image.yaml'), body);
  const layout = path.join(dir, 'out');
  const r = await ocibuild(['build', '-f', path.join(dir, 'image.yaml'), '-o', `oci:${layout}:latest`, '--cache-dir', path.join(tmp, 'store'), '--source-date-epoch', '1700000000', ...args], env);
  return { ...r, dir, layout };
}

function layerNames(layout: string): string[][] {
  const index = JSON.parse(readFileSync(path.join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
  const manifest = JSON.parse(readFileSync(path.join(layout, 'blobs/sha256', index.manifests[0]!.digest.slice(7)), 'utf8')) as { layers: Array<{ digest: string }> };
  return manifest.layers.map((l) => {
    const tar = execFileSync('tar', ['-t'], { input: gunzipSync(readFileSync(path.join(layout, 'blobs/sha256', l.digest.slice(7)))), maxBuffer: 1 << 28 }).toString();
    return tar.split('\n').filter((n) => n !== '').map((n) => n.replace(/^\.\//, '').replace(/\/$/, ''));
  });
}

function unpack(layout: string, into: string): string {
  execFileSync('umoci', ['raw', 'unpack', '--image', `${layout}:latest`, into], { stdio: 'pipe' });
  return into;
}

/** The host's dpkg judging the image's database and files. */
function judge(rootfs: string): void {
  const audit = execFileSync('dpkg', [`--root=${rootfs}`, '--audit']).toString();
  assert.equal(audit, '', 'dpkg --audit: nothing half-installed');
  const verify = execFileSync('dpkg', [`--root=${rootfs}`, '-V']).toString();
  assert.equal(verify, '', 'dpkg -V: no file differs from its package');
}

function checkInstalled(rootfs: string): void {
  const status = readFileSync(path.join(rootfs, 'var/lib/dpkg/status'), 'utf8');
  for (const p of ['early', 'svc', 'tiny-editor']) assert.match(status, new RegExp(`^Package: ${p}\\nStatus: install ok installed$`, 'm'), p);
  assert.equal(readFileSync(path.join(rootfs, 'usr/share/early/state'), 'utf8'), 'early-configured\n', 'postinst ran');
  assert.equal(readFileSync(path.join(rootfs, 'var/lib/svc/generated'), 'utf8'), 'configured by postinst\n');
  assert.equal(readFileSync(path.join(rootfs, 'var/lib/svc/policy'), 'utf8'), 'policy-rc.d said 101\n', 'services were kept from starting');
  assert.equal(readlinkSync(path.join(rootfs, 'usr/bin/editor')), '/etc/alternatives/editor');
  assert.equal(readlinkSync(path.join(rootfs, 'etc/alternatives/editor')), '/usr/bin/tiny');
  assert.ok(existsSync(path.join(rootfs, 'var/lib/dpkg/alternatives/editor')));
  assert.ok(!existsSync(path.join(rootfs, 'usr/sbin/policy-rc.d')), 'policy-rc.d is gone');
  assert.ok(!existsSync(path.join(rootfs, 'var/log/dpkg.log')), 'no dpkg log');
  assert.ok(lstatSync(path.join(rootfs, 'etc/svc.conf')).isFile());
  assert.match(status, /^Conffiles:\n \/etc\/svc.conf [0-9a-f]{32}$/m);
}

test('install: dpkg on a base image with dpkg: maintainer scripts, alternatives, Pre-Depends, policy-rc.d; dpkg --audit and -V pass', async () => {
  const baseRef = `${reg.host}/test/dpkg-base:1`;
  const baseDir = await mkdtemp(path.join(tmp, 'base-'));
  await writeFile(path.join(baseDir, 'image.yaml'), spec('scratch', 'stable', ['host-dpkg'], 'unpack'));
  const b = await ocibuild(['build', '-f', path.join(baseDir, 'image.yaml'), '--push', baseRef, '--cache-dir', path.join(tmp, 'store'), '-q'], env);
  assert.equal(b.code, 0, b.stderr);

  for (const sandbox of ['bwrap', 'nspawn']) {
    const r = await build(`app-${sandbox}`, spec(baseRef, 'stable', ['svc', 'apt'], 'dpkg', [`sandbox: ${sandbox}`]), ['--no-merged-usr']);
    assert.equal(r.code, 0, r.stderr);
    const layers = layerNames(r.layout);
    assert.equal(layers.length, 2, 'base layer + dpkg layer');
    const dpkgLayer = layers[1]!;
    assert.ok(dpkgLayer.includes('usr/lib/svc/daemon'));
    assert.ok(!dpkgLayer.some((n) => n.startsWith('run/') || n === 'usr/sbin/policy-rc.d' || n === 'var/log/dpkg.log'), dpkgLayer.join('\n'));
    assert.ok(!dpkgLayer.some((n) => n.includes('.deb')), 'no .deb in the layer');
    const rootfs = unpack(r.layout, path.join(r.dir, 'rootfs'));
    checkInstalled(rootfs);
    judge(rootfs);
    assert.equal(readFileSync(path.join(rootfs, 'var/lib/apt/extended_states'), 'utf8'), [
      'Package: early\nArchitecture: amd64\nAuto-Installed: 1\n',
      'Package: tiny-editor\nArchitecture: amd64\nAuto-Installed: 1\n',
    ].join('\n'), 'dependencies marked automatic, requested packages manual');
  }
});

test('install: dpkg from scratch bootstraps the essential set, then installs the rest; twice gives the same digest', async () => {
  const body = spec('scratch', 'boot', ['svc'], 'dpkg');
  const r = await build('boot', body);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /bootstrapping: unpacking the 2 essential packages/);
  assert.equal(layerNames(r.layout).length, 1, 'one layer: the bootstrap tree and dpkg\'s changes together');
  const rootfs = unpack(r.layout, path.join(r.dir, 'rootfs'));
  const status = readFileSync(path.join(rootfs, 'var/lib/dpkg/status'), 'utf8');
  for (const p of ['busybox-shell', 'host-dpkg']) assert.match(status, new RegExp(`^Package: ${p}\\nEssential: yes\\nStatus: install ok installed$`, 'm'), p);
  checkInstalled(rootfs);
  judge(rootfs);
  const again = await build('boot-again', body, ['--cache-dir', path.join(tmp, 'store-again')]);
  assert.equal(again.code, 0, again.stderr);
  assert.equal(again.stdout, r.stdout, 'same digest from an empty store');

  // The spec's runtime env (a PATH without sbin) is not dpkg's: the install works and is the cached one.
  const withEnv = await build('boot-env', spec('scratch', 'boot', ['svc'], 'dpkg', ['config:', '  env: {PATH: /opt/app/bin, APP_MODE: production}']));
  assert.equal(withEnv.code, 0, withEnv.stderr);
  assert.match(withEnv.stderr, /apt layer: unchanged, from the layer cache/);
});

test('install: dpkg on a base without dpkg is refused up front', async () => {
  const baseRef = `${reg.host}/test/no-dpkg:1`;
  const baseDir = await mkdtemp(path.join(tmp, 'nodpkg-'));
  await writeFile(path.join(baseDir, 'image.yaml'), ['from: scratch', 'files: [{src: image.yaml, dest: /etc/spec.yaml}]', ''].join('\n'));
  const b = await ocibuild(['build', '-f', path.join(baseDir, 'image.yaml'), '--push', baseRef, '--cache-dir', path.join(tmp, 'store'), '-q'], env);
  assert.equal(b.code, 0, b.stderr);
  const r = await build('on-nodpkg', spec(baseRef, 'stable', ['early'], 'dpkg'));
  assert.equal(r.code, 1);
  assert.match(r.stderr, /install: dpkg needs dpkg and a shell in the base image, and .* has no \/var\/lib\/dpkg\/status, \/usr\/bin\/dpkg, \/bin\/sh/);
  assert.match(r.stderr, /install: unpack/);
  assert.doesNotMatch(r.stderr, /wrote .*\.lock|fetched|packages:/, 'refused before locking and fetching');
  assert.equal(existsSync(path.join(r.dir, 'Packages-stable-amd64.lock')), false);

  // A base with a dpkg database but no dpkg program (install: unpack of files only): refused the same way.
  const dbRef = `${reg.host}/test/db-only:1`;
  const dbDir = await mkdtemp(path.join(tmp, 'dbonly-'));
  await writeFile(path.join(dbDir, 'image.yaml'), spec('scratch', 'stable', ['early'], 'unpack'));
  const db = await ocibuild(['build', '-f', path.join(dbDir, 'image.yaml'), '--push', dbRef, '--cache-dir', path.join(tmp, 'store'), '-q'], env);
  assert.equal(db.code, 0, db.stderr);
  const onDb = await build('on-dbonly', spec(dbRef, 'stable', ['early'], 'dpkg'));
  assert.equal(onDb.code, 1, onDb.stderr);
  assert.match(onDb.stderr, /has no \/usr\/bin\/dpkg/);
});
