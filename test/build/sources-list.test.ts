import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sourcesList } from '../../src/build/sources-list.js';

test('sources.list: a deb line per suite for sources the image trusts; sources signed by a host keyring are left out', () => {
  const debian = { url: 'http://deb.debian.org/debian', suites: ['bookworm', 'bookworm-updates'], components: ['main', 'contrib'] };
  const security = { url: 'http://deb.debian.org/debian-security', suites: ['bookworm-security'], components: ['main'], keyring: '/usr/share/keyrings/debian-archive-keyring.gpg' };
  const ubuntu = { url: 'http://archive.ubuntu.com/ubuntu', suites: ['noble'], components: ['main', 'universe'], keyring: '/usr/share/keyrings/ubuntu-archive-keyring.gpg' };
  const mine = { url: 'http://repo.example.com/debian', suites: ['stable'], components: ['main'], keyring: '/etc/ocibuild/example.gpg' };
  const r = sourcesList([debian, security, ubuntu, mine]);
  assert.equal(
    r.text,
    'deb http://deb.debian.org/debian bookworm main contrib\n' +
      'deb http://deb.debian.org/debian bookworm-updates main contrib\n' +
      'deb http://deb.debian.org/debian-security bookworm-security main\n' +
      'deb http://archive.ubuntu.com/ubuntu noble main universe\n',
  );
  assert.deepEqual(r.leftOut, [mine]);
  assert.deepEqual(sourcesList([mine]), { text: undefined, leftOut: [mine] });
});
