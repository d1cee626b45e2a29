// The rootfs cache: keyed by chain id, extracted once (also by concurrent callers),
// published atomically, a killed extraction's leftovers cleaned, a failure leaving
// nothing. As root.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { OcibuildError } from '../../src/errors.js';
import { chainId, rootfsFor, rootfsPath } from '../../src/sandbox/rootfs.js';
import { Store } from '../../src/store/store.js';
import { scratchDirs } from '../support/scratch.js';
import { memoryLayer, rawTar, requireRoot } from './support.js';

const scratch = await scratchDirs('rootfs');
const D1 = `sha256:${'1'.repeat(64)}`;
const D2 = `sha256:${'2'.repeat(64)}`;
const D3 = `sha256:${'3'.repeat(64)}`;
const sha = (s: string): string => `sha256:${createHash('sha256').update(s).digest('hex')}`;

test('chain id as image-spec config.md defines it', () => {
  assert.equal(chainId([D1]), D1);
  assert.equal(chainId([D1, D2]), sha(`${D1} ${D2}`));
  assert.equal(chainId([D1, D2, D3]), sha(`${sha(`${D1} ${D2}`)} ${D3}`));
  assert.notEqual(chainId([D2, D1]), chainId([D1, D2]));
  assert.throws(() => chainId([]));
  assert.throws(() => chainId([D1, 'sha256:nothex']));
});

async function layers() {
  return [
    memoryLayer(await rawTar([{ header: { name: 'etc/', type: 'directory' } }, { header: { name: 'etc/os-release' }, body: 'one' }])),
    memoryLayer(await rawTar([{ header: { name: 'etc/os-release' }, body: 'two' }]), 'zstd'),
  ];
}

test('extracted once into <store>/rootfs/<chain id>, by concurrent callers too', async () => {
  requireRoot();
  const store = new Store(await scratch('store'));
  const ls = await layers();
  const expected = join(store.root, 'rootfs', chainId(ls.map((l) => l.diffId)).slice(7));
  assert.equal(rootfsPath(store, ls), expected);

  const [a, b] = await Promise.all([rootfsFor(store, ls), rootfsFor(store, ls)]);
  assert.equal(a.path, expected);
  assert.equal(b.path, expected);
  assert.deepEqual([a.extracted, b.extracted].sort(), [false, true]);
  assert.deepEqual(ls.map((l) => l.opens), [1, 1], 'each layer read once');
  assert.equal(readFileSync(join(expected, 'etc/os-release'), 'utf8'), 'two');
  assert.equal(statSync(join(store.root, 'rootfs')).mode & 0o777, 0o700);

  const again = await rootfsFor(store, ls);
  assert.deepEqual(again, { path: expected, extracted: false });
  assert.deepEqual(ls.map((l) => l.opens), [1, 1]);

  // The lower layer alone is another chain, another tree.
  const lower = await rootfsFor(store, ls.slice(0, 1));
  assert.equal(lower.path, join(store.root, 'rootfs', ls[0]!.diffId.slice(7)));
  assert.equal(readFileSync(join(lower.path, 'etc/os-release'), 'utf8'), 'one');

  const empty = await rootfsFor(store, []);
  assert.equal(empty.path, join(store.root, 'rootfs', 'empty'));
  assert.deepEqual(readdirSync(empty.path), []);
});

test('a killed extraction’s temp tree is removed; a failed one leaves nothing', async () => {
  requireRoot();
  const store = new Store(await scratch('store'));
  const ls = await layers();
  const path = rootfsPath(store, ls);
  const stale = `${path}.tmp-99999-deadbeef`;
  await mkdir(join(stale, 'etc'), { recursive: true });
  await writeFile(join(stale, 'etc/half'), 'x');
  await rootfsFor(store, ls);
  assert.deepEqual(readdirSync(join(store.root, 'rootfs')), [path.slice(path.lastIndexOf('/') + 1)]);

  const bad = memoryLayer(await rawTar([{ header: { name: '../escape' }, body: 'x' }]));
  await assert.rejects(rootfsFor(store, [ls[0]!, bad]), (err: unknown) => {
    assert.ok(err instanceof OcibuildError);
    assert.equal(err.where, `layer ${bad.digest}`);
    assert.match(err.message, /entry "\.\.\/escape"/);
    return true;
  });
  assert.deepEqual(readdirSync(join(store.root, 'rootfs')), [path.slice(path.lastIndexOf('/') + 1)]);
});
