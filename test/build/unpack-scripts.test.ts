// install: unpack from scratch: the files base-passwd's preinst and ca-certificates'
// postinst (update-ca-certificates) would make. Byte-for-byte agreement with a real
// dpkg install is checked live (test/live/dpkg-bootstrap.live.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { bytesContent } from '../../src/layer/content.js';
import type { LayerEntry } from '../../src/layer/entry.js';
import { unpackScriptFiles } from '../../src/build/unpack-scripts.js';

function file(path: string, text: string): LayerEntry {
  const data = Buffer.from(text);
  return { type: 'file', path, mode: 0o644, uid: 0, gid: 0, mtime: 0, size: data.length, content: bytesContent(data) };
}

function treeOf(entries: LayerEntry[]): Map<string, LayerEntry> {
  return new Map(entries.map((e) => [e.path, e]));
}

const PEM_A = '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n';
const PEM_B = '-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----'; // no final newline
const PEM_C = '-----BEGIN CERTIFICATE-----\nCCCC\n-----END CERTIFICATE-----\n';

async function text(e: LayerEntry | undefined): Promise<string> {
  assert.ok(e && e.type === 'file', `a file: ${e?.path}`);
  return (e.content.bytes ?? Buffer.alloc(0)).toString();
}

test('ca-certificates: configuration sorted by bytes, bundle in that order with newlines added, NAME.pem links named as update-ca-certificates names them', async () => {
  const tree = treeOf([
    file('usr/share/ca-certificates/mozilla/b_Root (2020), Ltd.crt', PEM_B),
    file('usr/share/ca-certificates/mozilla/a_Root.crt', PEM_A),
    file('usr/share/ca-certificates/mozilla/B_Upper.crt', PEM_C),
    file('usr/share/ca-certificates/mozilla/README', 'not a certificate'),
    { type: 'directory', path: 'usr/local', mode: 0o2775, uid: 0, gid: 50, mtime: 0 },
  ]);
  const out = treeOf(await unpackScriptFiles(tree, new Set(['ca-certificates'])));
  const conf = await text(out.get('etc/ca-certificates.conf'));
  assert.ok(conf.startsWith('# This file lists certificates that you wish to use or to ignore to be\n'));
  // C-locale sort: upper case before lower case.
  assert.ok(conf.endsWith('#\nmozilla/B_Upper.crt\nmozilla/a_Root.crt\nmozilla/b_Root (2020), Ltd.crt\n'), conf);
  assert.equal(await text(out.get('etc/ssl/certs/ca-certificates.crt')), `${PEM_C}${PEM_A}${PEM_B}\n`);
  const link = out.get('etc/ssl/certs/b_Root_=2020=__Ltd.pem');
  assert.ok(link?.type === 'symlink' && link.target === '/usr/share/ca-certificates/mozilla/b_Root (2020), Ltd.crt', JSON.stringify(link));
  assert.ok(out.has('etc/ssl/certs/a_Root.pem') && out.has('etc/ssl/certs/B_Upper.pem'));
  assert.equal(out.has('etc/ssl/certs/README.pem'), false);
  const local = out.get('usr/local/share/ca-certificates');
  assert.ok(local?.type === 'directory' && local.mode === 0o2775 && local.gid === 50, "the postinst's local directory, with /usr/local's mode and group");
});

test('base-passwd: /etc/passwd and /etc/group are its masters; nothing when a package already ships them or is not locked', async () => {
  const masters = [file('usr/share/base-passwd/passwd.master', 'root:x:0:0:root:/root:/bin/bash\n'), file('usr/share/base-passwd/group.master', 'root:x:0:\n')];
  const out = treeOf(await unpackScriptFiles(treeOf(masters), new Set(['base-passwd'])));
  assert.equal(await text(out.get('etc/passwd')), 'root:x:0:0:root:/root:/bin/bash\n');
  assert.equal(await text(out.get('etc/group')), 'root:x:0:\n');
  assert.equal(out.get('etc/passwd')?.mode, 0o644);

  const shipped = treeOf([...masters, file('etc/passwd', 'mine\n')]);
  assert.deepEqual((await unpackScriptFiles(shipped, new Set(['base-passwd']))).map((e) => e.path), ['etc/group']);
  assert.deepEqual(await unpackScriptFiles(treeOf(masters), new Set(['other'])), []);
  assert.deepEqual(await unpackScriptFiles(treeOf([file('usr/share/ca-certificates/x/a.crt', PEM_A)]), new Set(['base-passwd'])), [], 'ca-certificates not locked');
});

test("ca-certificates: HASH.N links as openssl rehash makes them: same subject numbered in name order, a duplicate skipped", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'ocibuild-rehash-'));
  try {
    const make = (name: string, subject: string): string => {
      const file = path.join(dir, name);
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', path.join(dir, 'k.pem'), '-out', file, '-days', '1', '-subj', subject], { stdio: 'pipe' });
      return readFileSync(file, 'utf8');
    };
    const first = make('a.pem', '/CN=Same Root/O=Example');
    const second = make('b.pem', '/CN=Same Root/O=Example');
    const other = make('c.pem', '/CN=Other Root');
    const hash = (f: string): string => execFileSync('openssl', ['x509', '-noout', '-subject_hash', '-in', path.join(dir, f)]).toString().trim();
    const tree = treeOf([
      file('usr/share/ca-certificates/x/Same_2.crt', second),
      file('usr/share/ca-certificates/x/Same.crt', first),
      file('usr/share/ca-certificates/x/Same_copy.crt', first),
      file('usr/share/ca-certificates/x/Other.crt', other),
    ]);
    const links = (await unpackScriptFiles(tree, new Set(['ca-certificates'])))
      .filter((e) => e.type === 'symlink' && /^etc\/ssl\/certs\/[0-9a-f]{8}\.\d$/.test(e.path))
      .map((e) => `${e.path.slice('etc/ssl/certs/'.length)} -> ${e.type === 'symlink' ? e.target : ''}`)
      .sort();
    assert.deepEqual(links, [`${hash('a.pem')}.0 -> Same.pem`, `${hash('a.pem')}.1 -> Same_2.pem`, `${hash('c.pem')}.0 -> Other.pem`].sort());
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
