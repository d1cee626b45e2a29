import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { matchesArch } from '../../src/apt/arch.js';

// [wildcard or name, architecture, matches]
const CASES: Array<[string, string, boolean]> = [
  ['amd64', 'amd64', true],
  ['amd64', 'arm64', false],
  ['any', 'amd64', true],
  ['any', 'armhf', true],
  ['any', 'all', true],
  ['all', 'all', true],
  ['all', 'amd64', false],
  ['linux-any', 'amd64', true],
  ['linux-any', 'armhf', true],
  ['linux-any', 'musl-linux-amd64', true],
  ['linux-any', 'hurd-i386', false],
  ['linux-any', 'kfreebsd-amd64', false],
  ['linux-any', 'all', false],
  ['any-amd64', 'amd64', true],
  ['any-amd64', 'x32', true],
  ['any-amd64', 'kfreebsd-amd64', true],
  ['any-amd64', 'i386', false],
  ['any-arm', 'armhf', true],
  ['any-arm', 'armel', true],
  ['any-arm', 'arm64', false],
  ['any-armhf', 'armhf', false],
  ['any-i386', 'hurd-i386', true],
  ['any-mips64el', 'mipsn32el', true],
  ['gnu-any-any', 'hurd-i386', true],
  ['gnu-linux-any', 'amd64', true],
  ['gnu-linux-any', 'musl-linux-amd64', false],
  ['musl-any-any', 'musl-linux-arm64', true],
  ['eabihf-any-any-any', 'armhf', true],
  ['eabihf-any-any-any', 'armel', false],
  ['eabihf-any-any', 'armhf', false],
  ['any-any-linux-any', 'ppc64el', true],
  ['linux-any-any', 'amd64', false],
  ['kfreebsd-any', 'amd64', false],
  ['linux-amd64', 'amd64', true],
  ['amd64', 'linux-amd64', true],
  ['AMD64', 'amd64', false],
  ['linux-any', 'mycpu', false],
  ['any-', 'amd64', false],
  ['any-amd64-x', 'amd64', false],
  ['any-any-any-any-any', 'amd64', false],
];

test('matchesArch follows dpkg architecture wildcards', () => {
  for (const [wildcard, arch, expected] of CASES) {
    assert.equal(matchesArch(wildcard, arch), expected, `${arch} matches ${wildcard}`);
  }
});

test('the native qualifier matches the native architecture only', () => {
  assert.equal(matchesArch('native', 'amd64', 'amd64'), true);
  assert.equal(matchesArch('native', 'i386', 'amd64'), false);
  assert.equal(matchesArch('native', 'amd64'), false);
});

test('matchesArch agrees with dpkg Dpkg::Arch::debarch_is', (t) => {
  const arches = ['amd64', 'i386', 'arm64', 'armhf', 'armel', 'x32', 'mips64el', 'mipsn32', 'ppc64el',
    's390x', 'riscv64', 'loong64', 'hurd-i386', 'hurd-amd64', 'kfreebsd-amd64', 'musl-linux-amd64',
    'musl-linux-armhf', 'uclibc-linux-armel', 'darwin-arm64', 'solaris-amd64', 'powerpcspe', 'arm64ilp32', 'all'];
  const wildcards = ['any', 'all', 'linux-any', 'any-amd64', 'any-arm', 'any-i386', 'any-arm64',
    'hurd-any', 'kfreebsd-any', 'gnu-any-any', 'musl-any-any', 'gnu-linux-any', 'bsd-any-any',
    'eabihf-any-any-any', 'abi64-any-any-any', 'any-any-linux-any', 'linux-amd64', 'any-mips64el',
    'any-powerpc', 'uclibc-any-any', 'sysv-any-any', ...arches];
  const pairs: Array<[string, string]> = [
    ...CASES.map(([w, a]): [string, string] => [w, a]),
    ...wildcards.flatMap((w) => arches.map((a): [string, string] => [w, a])),
  ];
  const perl = spawnSync(
    'perl',
    ['-MDpkg::Arch=debarch_is', '-ne', 'chomp; my ($w, $a) = split / /; print debarch_is($a, $w) ? "1\\n" : "0\\n"'],
    { input: pairs.map(([w, a]) => `${w} ${a}\n`).join(''), encoding: 'utf8' },
  );
  // dpkg's own Perl module is the judge; .ci/run installs libdpkg-perl, so its absence is a failure.
  assert.ok(perl.error === undefined && perl.status === 0, `perl -MDpkg::Arch failed (install libdpkg-perl): ${perl.stderr}`);
  const answers = perl.stdout.trim().split('\n');
  assert.equal(answers.length, pairs.length);
  const mismatches = pairs.flatMap(([w, a], k) =>
    matchesArch(w, a) === (answers[k] === '1') ? [] : [`${a} vs ${w}: dpkg says ${String(answers[k])}`],
  );
  assert.deepEqual(mismatches, []);
});
