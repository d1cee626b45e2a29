// writePlainDeb: a .deb with its data.tar decompressed, judged by dpkg-deb itself (the
// tool that reads it in the sandbox): same control, same data tar, same files on
// `dpkg-deb --extract`; damaged input leaves no output.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { arHeader, writePlainDeb } from '../../src/deb/plain-deb.js';
import { OcibuildError } from '../../src/errors.js';
import { buildDeb, type FixturePackage } from '../support/deb.js';

const PKG: FixturePackage = {
  name: 'plain-fixture',
  version: '1:2.0-1',
  files: {
    '/usr/bin/tool': { content: '#!/bin/sh\necho tool\n', mode: 0o755 },
    // An odd-sized file and an odd-sized tar are padded by ar; sizes of every parity.
    '/usr/share/doc/plain-fixture/odd': 'x'.repeat(1001),
    '/usr/share/plain-fixture/big': Buffer.alloc(3 << 20, 7),
    '/usr/lib/link': { symlink: '../bin/tool' },
  },
  scripts: { postinst: '#!/bin/sh\nexit 0\n' },
  conffiles: [],
};

function dpkgDeb(args: string[]): Buffer {
  return execFileSync('dpkg-deb', args, { maxBuffer: 1 << 30 });
}

function arMembers(file: string): string[] {
  return execFileSync('ar', ['t', file], { encoding: 'utf8' }).trim().split('\n');
}

for (const dataCompression of ['xz', 'gz', 'zst', 'none'] as const) {
  test(`writePlainDeb: data.tar${dataCompression === 'none' ? '' : `.${dataCompression}`} → data.tar that dpkg-deb reads as the original`, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'plain-deb-'));
    try {
      const src = join(dir, 'in.deb');
      const dest = join(dir, 'out.deb');
      await writeFile(src, await buildDeb({ ...PKG, dataCompression }));
      await writePlainDeb(src, dest, 'plain-fixture');

      assert.deepEqual(arMembers(dest), ['debian-binary', arMembers(src)[1], 'data.tar']);
      // The tar dpkg unpacks and the control it reads are the original's, byte for byte.
      assert.ok(dpkgDeb(['--fsys-tarfile', dest]).equals(dpkgDeb(['--fsys-tarfile', src])));
      assert.ok(dpkgDeb(['--ctrl-tarfile', dest]).equals(dpkgDeb(['--ctrl-tarfile', src])));
      assert.equal(dpkgDeb(['--field', dest]).toString(), dpkgDeb(['--field', src]).toString());
      for (const [file, d] of [[src, 'a'], [dest, 'b']] as const) dpkgDeb(['--extract', file, join(dir, d)]);
      assert.ok((await readFile(join(dir, 'b/usr/share/plain-fixture/big'))).equals(Buffer.alloc(3 << 20, 7)));
      assert.equal(execFileSync('diff', ['-r', '--no-dereference', join(dir, 'a'), join(dir, 'b')], { encoding: 'utf8' }), '');
      // Only the finished file is left: no temporary sibling.
      assert.deepEqual((await readdir(dir)).sort(), ['a', 'b', 'in.deb', 'out.deb']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
}

test('writePlainDeb: a damaged .deb gives an error naming it and no output', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'plain-deb-'));
  try {
    const good = await buildDeb(PKG);
    const src = join(dir, 'bad.deb');
    // Truncated in the middle of data.tar.xz.
    await writeFile(src, good.subarray(0, good.length - 200));
    const dest = join(dir, 'out.deb');
    await assert.rejects(writePlainDeb(src, dest, 'plain-fixture 1:2.0-1'), (err: unknown) => {
      assert.ok(err instanceof OcibuildError, String(err));
      assert.equal(err.where, 'plain-fixture 1:2.0-1');
      assert.match(err.message, /data\.tar\.xz.*truncated/);
      return true;
    });
    assert.ok(!existsSync(dest));
    assert.deepEqual(await readdir(dir), ['bad.deb']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('writePlainDeb: stops when aborted and leaves nothing', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'plain-deb-'));
  try {
    const src = join(dir, 'in.deb');
    await writeFile(src, await buildDeb(PKG));
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(writePlainDeb(src, join(dir, 'out.deb'), 'plain-fixture', ac.signal), { name: 'AbortError' });
    assert.deepEqual(await readdir(dir), ['in.deb']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('arHeader: the 60-byte layout ar(5) and dpkg-deb use', () => {
  const h = arHeader('data.tar', 12345, 1700000000);
  assert.equal(h.length, 60);
  assert.equal(h.toString('latin1'), 'data.tar        1700000000  0     0     100644  12345     `\n');
  assert.throws(() => arHeader('x'.repeat(17), 1));
  // What binutils' ar lists from an archive made of such headers.
  const dir = spawnSync('mktemp', ['-d']).stdout.toString().trim();
  try {
    const body = Buffer.from('abc');
    const file = join(dir, 'x.a');
    execFileSync('sh', ['-c', 'cat > "$1"', 'sh', file], { input: Buffer.concat([Buffer.from('!<arch>\n'), arHeader('member', 3), body, Buffer.from('\n')]) });
    assert.equal(execFileSync('ar', ['p', file, 'member'], { encoding: 'utf8' }), 'abc');
  } finally {
    execFileSync('rm', ['-rf', dir]);
  }
});
