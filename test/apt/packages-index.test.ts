import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OcibuildError } from '../../src/errors.js';
import { parsePackages } from '../../src/apt/packages-index.js';

const SHA = 'a'.repeat(64);

const TEXT = `Package: libc6
Source: glibc (2.36-9)
Version: 2.36-9+deb12u4
Installed-Size: 12991
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: amd64
Multi-Arch: same
Replaces: libc6-amd64
Depends: libgcc-s1
Recommends: libidn2-0 (>= 2.0.5~)
Suggests: glibc-doc, debconf | debconf-2.0, libc-l10n, locales, libnss-nis, libnss-nisplus
Breaks: aide (<< 0.17.3-4+b3), busybox (<< 1.30.1-6),
 chrony (<< 4.2-3~), fakechroot (<< 2.19-3.5),
 hurd (<< 1:0.9.git20220301-2)
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system. Ünïcödé.
 .
 This package includes shared versions of the standard C library.
Homepage: https://www.gnu.org/software/libc/libc.html
Description-md5: fc3001b0b90a1c8e6690b283a619d57f
Tag: role::shared-lib
Section: libs
Priority: optional
Filename: pool/main/g/glibc/libc6_2.36-9+deb12u4_amd64.deb
Size: 2757936
MD5sum: 2a4e5e4f4e0ef2a1b6dd4c7c0e1a2b3c
SHA256: ${SHA.toUpperCase()}

package: base-files
ESSENTIAL: yes
version: 12.4+deb12u5
architecture: amd64
PRIORITY: required
pre-depends:
 awk
provides: base
multi-arch: foreign
filename: pool/main/b/base-files/base-files_12.4+deb12u5_amd64.deb
size: 70000
sha256: ${'b'.repeat(64)}
`;

test('parses fields we keep, skips the rest, folds relationship fields', () => {
  const [libc, base, ...rest] = parsePackages(TEXT, 3, 'Packages');
  assert.equal(rest.length, 0);
  assert.deepEqual(libc, {
    package: 'libc6',
    version: '2.36-9+deb12u4',
    architecture: 'amd64',
    multiArch: 'same',
    essential: false,
    priority: 'optional',
    preDepends: '',
    depends: 'libgcc-s1',
    recommends: 'libidn2-0 (>= 2.0.5~)',
    conflicts: '',
    breaks: 'aide (<< 0.17.3-4+b3), busybox (<< 1.30.1-6), chrony (<< 4.2-3~), fakechroot (<< 2.19-3.5), hurd (<< 1:0.9.git20220301-2)',
    provides: '',
    filename: 'pool/main/g/glibc/libc6_2.36-9+deb12u4_amd64.deb',
    size: 2757936,
    sha256: SHA,
    source: 'glibc (2.36-9)',
    suggests: 'glibc-doc, debconf | debconf-2.0, libc-l10n, locales, libnss-nis, libnss-nisplus',
    replaces: 'libc6-amd64',
    enhances: '',
    important: false,
    origin: 3,
  });
  // Lower-case field names, value starting on a continuation line.
  assert.equal(base?.package, 'base-files');
  assert.equal(base?.essential, true);
  assert.equal(base?.priority, 'required');
  assert.equal(base?.preDepends, 'awk');
  assert.equal(base?.provides, 'base');
  assert.equal(base?.multiArch, 'foreign');
});

test('Buffer input, CRLF, several blank lines, no trailing newline', () => {
  const text = TEXT.replace(/\n/g, '\r\n').replace('\r\n\r\npackage', '\r\n\r\n\r\n  \r\npackage').trimEnd();
  const records = parsePackages(Buffer.from(text, 'utf8'), 0, 'P');
  assert.equal(records.length, 2);
  assert.equal(records[1]?.sha256, 'b'.repeat(64));
  assert.equal(records[0]?.breaks.startsWith('aide (<< 0.17.3-4+b3), busybox'), true);
});

test('a non-ASCII Filename survives Buffer decoding', () => {
  const text = `Package: p\nVersion: 1\nArchitecture: all\nFilename: pool/ü/p_1_all.deb\nSize: 1\nSHA256: ${SHA}\n`;
  assert.equal(parsePackages(Buffer.from(text), 0, 'P')[0]?.filename, 'pool/ü/p_1_all.deb');
});

test('empty input gives no records', () => {
  assert.deepEqual(parsePackages('', 0, 'P'), []);
  assert.deepEqual(parsePackages('\n\n', 0, 'P'), []);
});

for (const field of ['Package', 'Version', 'Architecture', 'Filename', 'Size', 'SHA256']) {
  test(`missing ${field}: error names the paragraph's line`, () => {
    const para = TEXT.split('\n\n')[1]!.split('\n').filter((l) => l.toLowerCase().split(':')[0] !== field.toLowerCase()).join('\n');
    const text = `${TEXT.split('\n\n')[0]}\n\n${para}`;
    const line = TEXT.split('\n\n')[0]!.split('\n').length + 2;
    assert.throws(
      () => parsePackages(text, 0, 'http://m/Packages.xz'),
      (err: unknown) => {
        assert.ok(err instanceof OcibuildError);
        assert.match(err.message, new RegExp(`line ${line}.* has no ${field} field`));
        assert.equal(err.where, `http://m/Packages.xz:${line}`);
        return true;
      },
    );
  });
}

const malformed: Array<[string, string, RegExp, number]> = [
  ['bad size', `Package: p\nVersion: 1\nArchitecture: all\nFilename: f\nSize: 1k\nSHA256: ${SHA}\n`, /invalid Size/, 1],
  ['bad sha256', `Package: p\nVersion: 1\nArchitecture: all\nFilename: f\nSize: 1\nSHA256: 1234\n`, /invalid SHA256/, 1],
  ['no colon', `Package: p\nVersion 1\n`, /expected "Field: value"/, 2],
  ['duplicate', `Package: p\npackage: q\n`, /duplicate field package/, 2],
  ['folded Version', `Package: p\nVersion: 1\n 2\n`, /single-line field/, 3],
];
for (const [name, text, re, line] of malformed) {
  test(`malformed: ${name}`, () => {
    assert.throws(
      () => parsePackages(text, 0, 'P'),
      (err: unknown) => err instanceof OcibuildError && re.test(err.message) && err.where === `P:${line}`,
    );
  });
}

test('Important: yes and Protected: yes both set the important flag, as apt does', () => {
  const para = (extra: string, name: string): string =>
    `Package: ${name}\nVersion: 1\nArchitecture: amd64\n${extra}Filename: pool/${name}.deb\nSize: 1\nSHA256: ${SHA}\n`;
  const recs = parsePackages([para('Protected: yes\n', 'a'), para('Important: yes\n', 'b'), para('', 'c')].join('\n'), 0, 'Packages');
  assert.deepEqual(recs.map((r) => r.important), [true, true, false]);
});
