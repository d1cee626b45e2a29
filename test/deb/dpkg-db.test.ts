import { test } from 'node:test';
import assert from 'node:assert/strict';
import { conffilesFile, infoName, listFile, statusFile, statusParagraph } from '../../src/deb/dpkg-db.js';

const fields = (entries: Array<[string, string]>): Map<string, string> => new Map(entries);

test('status paragraphs use dpkg\'s field order, drop archive fields and add Status and Conffiles', () => {
  const text = statusParagraph({
    fields: fields([
      ['Package', 'ca-certificates'], ['Version', '20230311'], ['Architecture', 'all'], ['Maintainer', 'Julien <j@example.org>'],
      ['Installed-Size', '382'], ['Depends', 'openssl (>= 1.1.1), debconf (>= 0.5) | debconf-2.0'], ['Multi-Arch', 'foreign'],
      ['Priority', 'optional'], ['Section', 'misc'], ['Filename', 'pool/x.deb'], ['Size', '1'], ['SHA256', 'ab'],
      ['X-Custom', 'kept'], ['Description', 'Common CA certificates\n Contains the certificate authorities\n .\n more'],
    ]),
    conffiles: [{ path: '/etc/ca-certificates.conf', md5: '0123456789abcdef0123456789abcdef' }],
  });
  assert.equal(text, [
    'Package: ca-certificates',
    'Status: install ok installed',
    'Priority: optional',
    'Section: misc',
    'Installed-Size: 382',
    'Maintainer: Julien <j@example.org>',
    'Architecture: all',
    'Multi-Arch: foreign',
    'Version: 20230311',
    'Depends: openssl (>= 1.1.1), debconf (>= 0.5) | debconf-2.0',
    'Conffiles:',
    ' /etc/ca-certificates.conf 0123456789abcdef0123456789abcdef',
    'Description: Common CA certificates',
    ' Contains the certificate authorities',
    ' .',
    ' more',
    'X-Custom: kept',
    '',
  ].join('\n'));
});

test('the status file is sorted by package name; info names carry the arch for Multi-Arch: same', () => {
  const a = { fields: fields([['Package', 'zlib1g'], ['Version', '1'], ['Architecture', 'amd64'], ['Multi-Arch', 'same']]), conffiles: [] };
  const b = { fields: fields([['Package', 'bash'], ['Version', '5'], ['Architecture', 'amd64']]), conffiles: [] };
  const text = statusFile([a, b]);
  assert.ok(text.indexOf('Package: bash') < text.indexOf('Package: zlib1g'));
  assert.match(text, /Architecture: amd64\nVersion: 5\n\nPackage: zlib1g/);
  assert.equal(infoName(a.fields), 'zlib1g:amd64');
  assert.equal(infoName(b.fields), 'bash');
});

test('.list starts with /. and lists shipped paths as dpkg does; .conffiles one a line', () => {
  assert.equal(listFile(['./', './bin/', './bin/bash', 'usr/share/doc/bash/']), '/.\n/bin\n/bin/bash\n/usr/share/doc/bash\n');
  assert.equal(conffilesFile([{ path: '/etc/a' }, { path: '/etc/b' }]), '/etc/a\n/etc/b\n');
});
