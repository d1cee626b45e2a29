import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir, homedir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { OcibuildError } from '../../src/errors.js';
import { Store } from '../../src/store/store.js';

const sha = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function withStore(fn: (store: Store, root: string) => Promise<void>): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'ocibuild-store-'));
  try {
    await fn(new Store(root), root);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

test('defaultRoot: OCIBUILD_CACHE, then XDG_CACHE_HOME, then ~/.cache', () => {
  assert.equal(Store.defaultRoot({ OCIBUILD_CACHE: '/c', XDG_CACHE_HOME: '/x', HOME: '/h' }), '/c');
  assert.equal(Store.defaultRoot({ XDG_CACHE_HOME: '/x', HOME: '/h' }), '/x/ocibuild');
  assert.equal(Store.defaultRoot({ HOME: '/h' }), '/h/.cache/ocibuild');
  assert.equal(Store.defaultRoot({}), join(homedir(), '.cache', 'ocibuild'));
});

test('putStream stores by sha256, readable back; blobPath layout', async () => {
  await withStore(async (store, root) => {
    const data = Buffer.from('hello store\n');
    const digest = sha(data);
    assert.equal(await store.has(digest), false);
    const info = await store.putStream(Readable.from([data.subarray(0, 5), data.subarray(5)]));
    assert.deepEqual(info, { digest, size: data.length });
    assert.equal(store.blobPath(digest), join(root, 'blobs', 'sha256', digest.slice(7)));
    assert.equal(await store.has(digest), true);
    assert.deepEqual(await store.readBlob(digest), data);
    const chunks: Buffer[] = [];
    for await (const c of store.openBlob(digest)) chunks.push(c as Buffer);
    assert.deepEqual(Buffer.concat(chunks), data);
    assert.deepEqual(await readdir(join(root, 'tmp')), [], 'no temp file left');
  });
});

test('putStream accepts an async iterable and a matching expectation', async () => {
  await withStore(async (store) => {
    const data = Buffer.alloc(300_000, 7);
    async function* gen(): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < data.length; i += 65536) yield data.subarray(i, i + 65536);
    }
    const info = await store.putStream(gen(), { digest: sha(data), size: data.length }, 'gen');
    assert.equal(info.size, data.length);
    // Storing the same content again is harmless.
    assert.deepEqual(await store.putBytes(data), info);
  });
});

test('digest mismatch: OcibuildError naming where, nothing stored, temp removed', async () => {
  await withStore(async (store, root) => {
    const data = Buffer.from('real');
    const wrong = sha(Buffer.from('other'));
    await assert.rejects(store.putBytes(data, { digest: wrong }, 'http://mirror/x'), (err: unknown) => {
      assert.ok(err instanceof OcibuildError);
      assert.match(err.message, /sha256 mismatch/);
      assert.equal(err.where, 'http://mirror/x');
      assert.equal(err.exitCode, 1);
      return true;
    });
    assert.equal(await store.has(sha(data)), false);
    assert.equal(await store.has(wrong), false);
    assert.deepEqual(await readdir(join(root, 'tmp')), []);
  });
});

test('size mismatch: OcibuildError, nothing stored', async () => {
  await withStore(async (store, root) => {
    const data = Buffer.from('12345');
    await assert.rejects(store.putBytes(data, { size: 4 }, 'f.deb'), /size mismatch: expected 4 bytes, got 5/);
    assert.equal(await store.has(sha(data)), false);
    assert.deepEqual(await readdir(join(root, 'tmp')), []);
  });
});

test('a failing source leaves no temp file and no blob', async () => {
  await withStore(async (store, root) => {
    async function* broken(): AsyncGenerator<Uint8Array> {
      yield Buffer.from('partial');
      throw new Error('connection lost');
    }
    await assert.rejects(store.putStream(broken()), /connection lost/);
    assert.deepEqual(await readdir(join(root, 'tmp')), []);
    assert.equal(await store.has(sha(Buffer.from('partial'))), false);
  });
});

test('a leftover temp file from a killed process is harmless', async () => {
  await withStore(async (store, root) => {
    await mkdir(join(root, 'tmp'), { recursive: true });
    await writeFile(join(root, 'tmp', '999999-deadbeef.tmp'), 'half a blob');
    const info = await store.putBytes(Buffer.from('whole'));
    assert.equal(await store.has(info.digest), true);
  });
});

test('concurrent puts of the same content both succeed with one blob', async () => {
  await withStore(async (store) => {
    const data = Buffer.alloc(1 << 20, 1);
    const [a, b] = await Promise.all([store.putBytes(data), store.putBytes(data)]);
    assert.deepEqual(a, b);
    assert.deepEqual(await store.readBlob(a.digest), data);
  });
});

test('invalid digests are programming errors', async () => {
  await withStore(async (store) => {
    assert.throws(() => store.blobPath('md5:abc'), /not a sha256 digest/);
    assert.throws(() => store.blobPath('sha256:../../etc'), /not a sha256 digest/);
  });
});

test('cache files: atomic write, read back, undefined when missing, safe names', async () => {
  await withStore(async (store, root) => {
    assert.equal(await store.readCacheFile('packages-v1', 'abc'), undefined);
    await store.writeCacheFile('packages-v1', 'abc', Buffer.from('one'));
    await store.writeCacheFile('packages-v1', 'abc', Buffer.from('two'));
    assert.deepEqual(await store.readCacheFile('packages-v1', 'abc'), Buffer.from('two'));
    assert.equal(store.cachePath('packages-v1', 'abc'), join(root, 'cache', 'packages-v1', 'abc'));
    assert.deepEqual(await readdir(join(root, 'tmp')), []);
    assert.throws(() => store.cachePath('..', 'x'), /invalid cache/);
    assert.throws(() => store.cachePath('k', 'a/b'), /invalid cache/);
  });
});
