import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OcibuildError } from '../../src/errors.js';
import { parseSpec } from '../../src/spec/parse.js';
import { debianArch, formatPlatform, parsePlatform, samePlatform } from '../../src/spec/platform.js';
import { presetRelease, sourcesForPlatform, sourcesPreset } from '../../src/spec/presets.js';

test('ubuntu presets: archive for amd64/i386, ports for the rest', () => {
  const cases: [string, string, string, string][] = [
    ['18.04', 'amd64', 'http://archive.ubuntu.com/ubuntu', 'bionic'],
    ['20.04', 'i386', 'http://archive.ubuntu.com/ubuntu', 'focal'],
    ['22.04', 'arm64', 'http://ports.ubuntu.com/ubuntu-ports', 'jammy'],
    ['24.04', 'armhf', 'http://ports.ubuntu.com/ubuntu-ports', 'noble'],
    ['24.10', 'riscv64', 'http://ports.ubuntu.com/ubuntu-ports', 'oracular'],
    ['25.04', 's390x', 'http://ports.ubuntu.com/ubuntu-ports', 'plucky'],
    ['jammy', 'ppc64el', 'http://ports.ubuntu.com/ubuntu-ports', 'jammy'],
  ];
  for (const [version, arch, url, codename] of cases) {
    assert.deepEqual(sourcesPreset('ubuntu', version, arch), [{
      url,
      suites: [codename, `${codename}-updates`, `${codename}-security`],
      components: ['main', 'universe'],
    }], `${version} ${arch}`);
  }
});

test('debian presets: main archive plus the security archive, any arch', () => {
  const cases: [string, string][] = [['11', 'bullseye'], ['12', 'bookworm'], ['13', 'trixie'], ['bookworm', 'bookworm']];
  for (const [version, codename] of cases) {
    for (const arch of ['amd64', 'arm64']) {
      const sources = sourcesPreset('debian', version, arch);
      assert.deepEqual(sources, [
        { url: 'http://deb.debian.org/debian', suites: [codename, `${codename}-updates`], components: ['main'] },
        { url: 'http://deb.debian.org/debian-security', suites: [`${codename}-security`], components: ['main'] },
      ]);
      // The repository client picks the host keyring when none is set.
      assert.ok(sources.every((s) => s.keyring === undefined));
    }
  }
});

test('unknown preset versions are a usage error listing the known ones', () => {
  assert.throws(() => sourcesPreset('ubuntu', '23.04', 'amd64'), (err: unknown) => {
    assert.ok(err instanceof OcibuildError);
    assert.equal(err.exitCode, 2);
    assert.match(err.message, /unknown ubuntu version "23\.04"/);
    assert.match(err.hint ?? '', /18\.04 \(bionic\), 20\.04 \(focal\), 22\.04 \(jammy\), 24\.04 \(noble\), 24\.10 \(oracular\), 25\.04 \(plucky\)/);
    return true;
  });
  assert.throws(() => sourcesPreset('debian', '10', 'amd64'), /unknown debian version "10"/);
  assert.equal(presetRelease('debian', 'Trixie'), '13');
  assert.equal(presetRelease('ubuntu', 'noble'), '24.04');
  assert.equal(presetRelease('ubuntu', '12'), undefined);
});

test('platforms parse, normalize and format', () => {
  const cases: [string, { os: string; architecture: string; variant?: string }, string][] = [
    ['linux/amd64', { os: 'linux', architecture: 'amd64' }, 'linux/amd64'],
    ['linux/arm64/v8', { os: 'linux', architecture: 'arm64', variant: 'v8' }, 'linux/arm64/v8'],
    ['linux/arm/v7', { os: 'linux', architecture: 'arm', variant: 'v7' }, 'linux/arm/v7'],
    // containerd's normalization: a bare arm is arm/v7.
    ['linux/arm', { os: 'linux', architecture: 'arm', variant: 'v7' }, 'linux/arm/v7'],
    ['linux/386', { os: 'linux', architecture: '386' }, 'linux/386'],
  ];
  for (const [text, platform, formatted] of cases) {
    assert.deepEqual(parsePlatform(text), platform);
    assert.equal(formatPlatform(parsePlatform(text)), formatted);
  }
  assert.ok(samePlatform(parsePlatform('linux/arm64'), parsePlatform('linux/arm64/v8')));
  assert.ok(!samePlatform(parsePlatform('linux/arm/v6'), parsePlatform('linux/arm/v7')));
});

test('invalid platforms are usage errors at the given position', () => {
  const bad: [string, RegExp, RegExp][] = [
    ['amd64', /expected os\/arch\[\/variant\]/, /linux\/amd64/],
    ['linux/amd64/', /expected os\/arch\[\/variant\]/, /linux\/amd64/],
    ['linux/a/b/c', /expected os\/arch\[\/variant\]/, /linux\/amd64/],
    ['darwin/arm64', /unsupported platform os "darwin"/, /linux only/],
    ['linux/aarch64', /unknown platform architecture "aarch64"/, /linux\/arm64/],
    ['linux/sparc', /unknown platform architecture "sparc"/, /known architectures: amd64/],
    ['linux/arm/v9', /unknown variant "v9" for architecture arm/, /v5, v6, v7/],
    ['linux/s390x/v1', /unknown variant "v1" for architecture s390x/, /takes no variant/],
  ];
  for (const [text, message, hint] of bad) {
    assert.throws(() => parsePlatform(text, 'image.yaml:3:5'), (err: unknown) => {
      assert.ok(err instanceof OcibuildError, text);
      assert.match(err.message, message);
      assert.match(err.hint ?? '', hint);
      assert.equal(err.where, 'image.yaml:3:5');
      assert.equal(err.exitCode, 2);
      return true;
    });
  }
});

test('OCI architectures map to Debian architectures', () => {
  const table: [string, string][] = [
    ['linux/amd64', 'amd64'],
    ['linux/arm64', 'arm64'],
    ['linux/arm64/v8', 'arm64'],
    ['linux/arm/v7', 'armhf'],
    ['linux/arm/v6', 'armel'],
    ['linux/arm/v5', 'armel'],
    ['linux/386', 'i386'],
    ['linux/ppc64le', 'ppc64el'],
    ['linux/s390x', 's390x'],
    ['linux/riscv64', 'riscv64'],
    ['linux/mips64le', 'mips64el'],
  ];
  for (const [platform, arch] of table) assert.equal(debianArch(parsePlatform(platform)), arch, platform);
  assert.throws(() => debianArch({ os: 'linux', architecture: 'wasm' }), OcibuildError);
});

test('sourcesForPlatform recomputes presets per architecture', () => {
  const spec = parseSpec('ubuntu_version: "24.04"\napt_dependencies: [curl]\nplatforms: [linux/amd64, linux/arm64]\n', '/p/image.yaml');
  assert.equal(spec.apt?.sources[0]?.url, 'http://archive.ubuntu.com/ubuntu');
  assert.equal(sourcesForPlatform(spec, parsePlatform('linux/amd64'))[0]?.url, 'http://archive.ubuntu.com/ubuntu');
  assert.deepEqual(sourcesForPlatform(spec, parsePlatform('linux/arm64')), [{
    url: 'http://ports.ubuntu.com/ubuntu-ports',
    suites: ['noble', 'noble-updates', 'noble-security'],
    components: ['main', 'universe'],
  }]);
  // A preset derived from the base image tag behaves the same way.
  const derived = parseSpec('from: ubuntu:22.04\napt: {packages: [curl]}\nplatforms: [linux/arm64, linux/amd64]\n', '/p/image.yaml');
  assert.equal(derived.apt?.sources[0]?.url, 'http://ports.ubuntu.com/ubuntu-ports');
  assert.equal(sourcesForPlatform(derived, parsePlatform('linux/amd64'))[0]?.url, 'http://archive.ubuntu.com/ubuntu');
});

test('sourcesForPlatform keeps explicit sources for every platform, and none without apt', () => {
  const spec = parseSpec([
    'from: registry.local/ubuntu:22.04',
    'apt:',
    '  sources: [{url: http://mirror.local/ubuntu, suites: [jammy], components: [main]}]',
    '  packages: [curl]',
    'platforms: [linux/amd64, linux/arm64]',
    '',
  ].join('\n'), '/p/image.yaml');
  const expected = [{ url: 'http://mirror.local/ubuntu', suites: ['jammy'], components: ['main'] }];
  assert.deepEqual(sourcesForPlatform(spec, parsePlatform('linux/arm64')), expected);
  assert.deepEqual(sourcesForPlatform(spec, parsePlatform('linux/amd64')), expected);
  const noApt = parseSpec('from: docker.io/library/busybox:1\n', '/p/image.yaml');
  assert.deepEqual(sourcesForPlatform(noApt, parsePlatform('linux/amd64')), []);
});
