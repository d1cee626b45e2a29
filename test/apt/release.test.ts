import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OcibuildError } from '../../src/errors.js';
import { parseRelease } from '../../src/apt/release.js';

const H1 = 'bc442eb8e8251796e139748da1872c050e2d1e93f55655100357f2e68364caf5';
const H2 = '9E0B5AABB2465B3D2E7A7FE27F9913846277833F7A2826E7767ACCCFF5B588C5';

// Shaped like Debian's bookworm Release (trimmed).
const DEBIAN = `Origin: Debian
Label: Debian
Suite: oldstable
Version: 12.15
Codename: bookworm
Date: Sat, 11 Jul 2026 10:16:37 UTC
Valid-Until: Sat, 18 Jul 2026 10:16:37 UTC
Acquire-By-Hash: yes
No-Support-for-Architecture-all: Packages
Architectures: all amd64 arm64
Components: main contrib non-free-firmware
Description: Debian 12.15 Released 11 July 2026
MD5Sum:
 0ed6d4c8891eb86358b94bb35d9e4da4  1484322 contrib/Contents-all
SHA256:
 ${H1} 22526615 main/binary-all/Packages
 ${H2}  8790396 main/binary-amd64/Packages.xz
`;

test('parses a Debian Release', () => {
  const r = parseRelease(DEBIAN, 'http://m/dists/bookworm/InRelease');
  assert.equal(r.origin, 'Debian');
  assert.equal(r.label, 'Debian');
  assert.equal(r.suite, 'oldstable');
  assert.equal(r.codename, 'bookworm');
  assert.equal(r.date?.toISOString(), '2026-07-11T10:16:37.000Z');
  assert.equal(r.validUntil?.toISOString(), '2026-07-18T10:16:37.000Z');
  assert.deepEqual(r.architectures, ['all', 'amd64', 'arm64']);
  assert.deepEqual(r.components, ['main', 'contrib', 'non-free-firmware']);
  assert.equal(r.acquireByHash, true);
  assert.equal(r.noSupportForArchitectureAll, 'Packages');
  assert.deepEqual([...r.sha256], [
    ['main/binary-all/Packages', { size: 22526615, sha256: H1 }],
    ['main/binary-amd64/Packages.xz', { size: 8790396, sha256: H2.toLowerCase() }],
  ]);
});

test('field names are case-insensitive; CRLF and optional fields', () => {
  const r = parseRelease(`origin: X\r\nACQUIRE-BY-HASH: no\r\nsha256:\r\n ${H1} 1 a/Packages\r\n`, 'w');
  assert.equal(r.origin, 'X');
  assert.equal(r.acquireByHash, false);
  assert.equal(r.validUntil, undefined);
  assert.equal(r.date, undefined);
  assert.equal(r.noSupportForArchitectureAll, undefined);
  assert.deepEqual(r.architectures, []);
  assert.equal(r.sha256.get('a/Packages')?.size, 1);
});

const errors: Array<[string, string, RegExp]> = [
  ['MD5-only repository', 'Origin: X\nMD5Sum:\n d41d8cd98f00b204e9800998ecf8427e 0 main/binary-amd64/Packages\n', /no SHA256 section/],
  ['bad hash', 'SHA256:\n abc 12 main/Packages\n', /malformed SHA256 entry/],
  ['bad size', `SHA256:\n ${H1} twelve main/Packages\n`, /malformed SHA256 entry/],
  ['bad date', `Date: yesterday\nSHA256:\n ${H1} 1 p\n`, /malformed Date/],
  ['bad Valid-Until', `Valid-Until: soon\nSHA256:\n ${H1} 1 p\n`, /malformed Valid-Until/],
  ['continuation first', ` SHA256:\n`, /continuation line 1/],
  ['not a field', `Origin X\n`, /line 1 is not "Field: value"/],
];
for (const [name, text, re] of errors) {
  test(`error: ${name}`, () => {
    assert.throws(
      () => parseRelease(text, 'http://m/dists/s/Release'),
      (err: unknown) => {
        assert.ok(err instanceof OcibuildError);
        assert.match(err.message, re);
        assert.equal(err.where, 'http://m/dists/s/Release');
        assert.equal(err.exitCode, 1);
        return true;
      },
    );
  });
}

test('MD5-only error hints why', () => {
  assert.throws(() => parseRelease('MD5Sum:\n', 'w'), (err: OcibuildError) => /not trusted/.test(err.hint ?? ''));
});

test('NotAutomatic / ButAutomaticUpgrades set the suite\'s default pin priority (apt_preferences(5))', () => {
  const base = 'Suite: x\nSHA256:\n ' + 'a'.repeat(64) + ' 1 main/binary-amd64/Packages\n';
  assert.equal(parseRelease(base, 'R').pin, 500);
  assert.equal(parseRelease('NotAutomatic: yes\n' + base, 'R').pin, 1);
  assert.equal(parseRelease('NotAutomatic: yes\nButAutomaticUpgrades: yes\n' + base, 'R').pin, 100);
});
