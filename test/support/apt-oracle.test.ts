// Smoke test of the apt-get oracle against a generated, signed repository served on
// 127.0.0.1: the oracle must report exactly what apt-get decides.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AptOracleError,
  createAptSandbox,
  diffPackageSets,
  parseInstLines,
  parseLockPackages,
  parseSimulation,
  type AptSandbox,
} from './apt-oracle.js';
import { buildAptRepo, type FixtureRepo } from './aptrepo.js';
import { serveDirectory, type TestServer } from './http.js';
import type { FixturePackage } from './deb.js';

test('parseInstLines reads new installs, upgrades, :arch names and trailing brackets', () => {
  const out = [
    'Reading package lists...',
    'Inst gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])',
    'Conf gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])',
    'Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64]) []',
    'Inst tzdata [2024a-0+deb12u1] (2025b-0+deb12u2 Debian:12.15/oldstable [all])',
    'Inst libc6:i386 (2.36-9+deb12u14 Debian:12.15/oldstable [i386])',
    'Inst libfoo:amd64 (1:2.0~rc1 localhost [amd64]) [libbar:amd64 ]',
    'Remv oldpkg [1.0]',
  ].join('\n');
  assert.deepEqual(parseInstLines(out), [
    { name: 'gcc-12-base', version: '12.2.0-14+deb12u1', arch: 'amd64' },
    { name: 'libc6', version: '2.36-9+deb12u14', arch: 'amd64' },
    { name: 'tzdata', oldVersion: '2024a-0+deb12u1', version: '2025b-0+deb12u2', arch: 'all' },
    { name: 'libc6:i386', version: '2.36-9+deb12u14', arch: 'i386' },
    { name: 'libfoo:amd64', version: '1:2.0~rc1', arch: 'amd64' },
  ]);
  assert.deepEqual(
    parseSimulation(out, 'amd64'),
    new Map([
      ['gcc-12-base', '12.2.0-14+deb12u1'],
      ['libc6', '2.36-9+deb12u14'],
      ['tzdata', '2025b-0+deb12u2'],
      ['libc6:i386', '2.36-9+deb12u14'],
      ['libfoo', '1:2.0~rc1'],
    ]),
  );
  assert.throws(() => parseInstLines('Inst garbage'), /cannot parse apt line/);
});

test('parseLockPackages skips the header paragraph and reads Package/Version', () => {
  const lock = [
    'Lock-Format: 1',
    'Inputs-Digest: sha256:00',
    '',
    'Package: a',
    'Version: 1:1.0~rc1',
    'Description: multi',
    ' line',
    '',
    'Package: b',
    'Architecture: all',
    'Version: 2',
    '',
  ].join('\n');
  assert.deepEqual(parseLockPackages(lock), new Map([['a', '1:1.0~rc1'], ['b', '2']]));
  assert.throws(() => parseLockPackages('Package: a\n\nPackage: a\nVersion: 1\n'), /no Version/);
});

test('diffPackageSets names each kind of difference', () => {
  const apt = new Map([['a', '1'], ['b', '2'], ['c', '3']]);
  assert.equal(diffPackageSets(apt, new Map(apt)), '');
  const diff = diffPackageSets(apt, new Map([['a', '1'], ['b', '2.1'], ['d', '4']]));
  assert.match(diff, /only in apt-get \(1\):\n  - c 3/);
  assert.match(diff, /only in ocibuild \(1\):\n  \+ d 4/);
  assert.match(diff, /version differs \(1\):\n  ~ b: apt 2, ocibuild 2.1/);
});

// The repository: alternatives, versioned constraints, several versions of one
// package, epochs and tildes, a virtual package, an arch:all package, Recommends.
const PACKAGES: FixturePackage[] = [
  { name: 'a', version: '1.0', depends: 'b | c, d (>= 2)' },
  { name: 'b', version: '1.0' },
  { name: 'b', version: '2.0' },
  { name: 'c', version: '1.0' },
  { name: 'd', version: '1.5' },
  { name: 'd', version: '2.1', depends: 'z' },
  { name: 'e', version: '1.0', depends: 'b (>= 3) | c' },
  { name: 't', version: '2.0' },
  { name: 't', version: '1:0.9' },
  { name: 'tilde', version: '1.0~rc1' },
  { name: 'tilde', version: '0.9' },
  { name: 'p', version: '1.0', provides: 'virt' },
  { name: 'needs-virt', version: '1.0', depends: 'virt' },
  { name: 'r', version: '1.0', recommends: 'c' },
  { name: 'u', version: '1.0', depends: 'd (>= 5)' },
  { name: 'z', version: '3', arch: 'all', multiArch: 'foreign' },
];

let work: string;
let repo: FixtureRepo;
let server: TestServer;
let apt: AptSandbox;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'ocibuild-oracle-test-'));
  repo = await buildAptRepo(join(work, 'repo'), [{ name: 'stable', components: { main: PACKAGES } }]);
  server = await serveDirectory(repo.dir);
  apt = await createAptSandbox({
    sources: [{ url: server.url, suites: ['stable'], components: ['main'], keyring: repo.keyringPath }],
    arch: 'amd64',
  });
  await apt.update();
});

after(async () => {
  await apt?.close();
  await server?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

test('first alternative, highest version, versioned constraint, arch:all', async () => {
  assert.deepEqual(
    await apt.installSimulate(['a']),
    new Map([['a', '1.0'], ['b', '2.0'], ['d', '2.1'], ['z', '3']]),
  );
});

test('an alternative whose version constraint cannot hold falls through to the next', async () => {
  assert.deepEqual(await apt.installSimulate(['e']), new Map([['e', '1.0'], ['c', '1.0']]));
});

test('epochs and tildes order versions as dpkg does', async () => {
  assert.deepEqual(await apt.installSimulate(['t', 'tilde']), new Map([['t', '1:0.9'], ['tilde', '1.0~rc1']]));
});

test('a virtual package with one provider, directly and through a dependency', async () => {
  assert.deepEqual(await apt.installSimulate(['virt']), new Map([['p', '1.0']]));
  assert.deepEqual(await apt.installSimulate(['needs-virt']), new Map([['needs-virt', '1.0'], ['p', '1.0']]));
});

test('Recommends follow the option, per call or for the sandbox', async () => {
  assert.deepEqual(await apt.installSimulate(['r']), new Map([['r', '1.0']]));
  assert.deepEqual(await apt.installSimulate(['r'], { recommends: true }), new Map([['r', '1.0'], ['c', '1.0']]));
});

test('an unsatisfiable request throws with apt\'s explanation', async () => {
  await assert.rejects(apt.installSimulate(['u']), (err: unknown) => {
    assert.ok(err instanceof AptOracleError);
    assert.equal(err.exitCode, 100);
    assert.match(err.message, /unmet dependencies/i);
    assert.match(err.stdout + err.stderr, /u : Depends: d \(>= 5\)/);
    return true;
  });
  await assert.rejects(apt.installSimulate(['no-such-package']), /Unable to locate package no-such-package/);
});

test('an installed set (status file) turns needed newer versions into upgrades', async () => {
  const status = join(work, 'status');
  const installed = (name: string, version: string, arch = 'amd64'): string =>
    `Package: ${name}\nStatus: install ok installed\nPriority: optional\nMaintainer: t <t@t.invalid>\n` +
    `Architecture: ${arch}\nVersion: ${version}\nDescription: installed\n`;
  await writeFile(status, [installed('b', '1.0'), installed('d', '1.5'), installed('z', '3', 'all')].join('\n'));
  const withBase = await createAptSandbox({
    sources: [{ url: server.url, suites: ['stable'], components: ['main'], keyring: repo.keyringPath }],
    arch: 'amd64',
    statusFile: status,
    // A given workDir is kept by close(); `work` is removed after the tests.
    workDir: join(work, 'with-base'),
  });
  try {
    await withBase.update();
    // b 1.0 satisfies `b | c` and stays; d 1.5 does not satisfy `d (>= 2)`: upgrade.
    assert.deepEqual(await withBase.installSimulate(['a']), new Map([['a', '1.0'], ['d', '2.1']]));
  } finally {
    await withBase.close();
  }
});
