// Last use and running builds: what `cache prune` orders and holds by.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, watch } from 'node:fs';
import { mkdir, readdir, readFile, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { holdStore, runningBuilds } from '../../src/store/builds.js';
import { Store } from '../../src/store/store.js';
import { scratchDirs } from '../support/scratch.js';

const scratch = await scratchDirs('last-use');
const LOCK_CHILD = join(dirname(fileURLToPath(import.meta.url)), 'lock.child.ts');
const OLD = new Date('2020-01-01T00:00:00Z');

test('has() and readCacheFile() mark what they find used; a miss stays a miss', async () => {
  const store = new Store(await scratch('mark'));
  const { digest } = await store.putBytes(Buffer.from('blob'));
  await utimes(store.blobPath(digest), OLD, OLD);
  await store.writeCacheFile('layers-v1', 'k', Buffer.from('{}'));
  await utimes(store.cachePath('layers-v1', 'k'), OLD, OLD);
  const before = Date.now() - 1000;

  assert.equal(await store.has(digest), true);
  assert.ok((await stat(store.blobPath(digest))).mtimeMs >= before);
  assert.deepEqual(await store.readCacheFile('layers-v1', 'k'), Buffer.from('{}'));
  assert.ok((await stat(store.cachePath('layers-v1', 'k'))).mtimeMs >= before);

  assert.equal(await store.has(`sha256:${'0'.repeat(64)}`), false);
  assert.equal(await store.readCacheFile('layers-v1', 'missing'), undefined);
  assert.ok(!existsSync(store.blobPath(`sha256:${'0'.repeat(64)}`)));
});

test('has() waits for another process removing the blob under its lock, and then reports it gone', async () => {
  const root = await scratch('race');
  const store = new Store(root);
  const { digest } = await store.putBytes(Buffer.from('pruned meanwhile'));
  // The child stands for a prune: it holds the blob's lock while the blob is removed.
  const child = spawn(process.execPath, ['--import', 'tsx', LOCK_CHILD, root, digest], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = once(child, 'exit');
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  assert.equal((await lines.next()).value, 'locked');

  // The blob is removed once has() has marked it (inotify sees the utimes), as a prune
  // that listed it before the mark would: has() must not answer true now.
  const watcher = watch(store.blobPath(digest));
  const marked = once(watcher, 'change');
  const asked = store.has(digest);
  await marked;
  watcher.close();
  await unlink(store.blobPath(digest));
  child.stdin!.write('go\n');
  assert.equal(await asked, false);
  // The child writes this just before it releases: has() answered only after the release.
  assert.ok(existsSync(join(root, 'released')));
  await exited;
});

test('a build registration is listed while held, and gone once released', async () => {
  const store = new Store(await scratch('hold'));
  assert.deepEqual(await runningBuilds(store), []);
  const before = Date.now();
  const hold = await holdStore(store);
  const running = await runningBuilds(store);
  assert.equal(running.length, 1);
  assert.equal(running[0]!.pid, process.pid);
  assert.equal(running[0]!.startedAt, hold.startedAt);
  assert.ok(hold.startedAt >= before && hold.startedAt <= Date.now());
  await hold.release();
  await hold.release();
  assert.deepEqual(await runningBuilds(store), []);
  assert.deepEqual(await readdir(join(store.root, 'locks', 'builds')), []);
});

test('the registration of a build that died is removed by the next listing', async () => {
  const store = new Store(await scratch('dead'));
  const dead = spawn(process.execPath, ['-e', '0']);
  await once(dead, 'exit');
  const dir = join(store.root, 'locks', 'builds');
  await mkdir(dir, { recursive: true });
  const file = join(dir, `${dead.pid}-feed.json`);
  // This host's key, as lock.ts writes it: the dead pid is judged by liveness, not age.
  const hold = await holdStore(store);
  const [own] = await readdir(dir);
  const { host } = JSON.parse(await readFile(join(dir, own!), 'utf8')) as { host: string };
  await hold.release();
  await writeFile(file, JSON.stringify({ pid: dead.pid, token: 'feed', host, start: null, startedAt: 1 }));
  assert.deepEqual(await runningBuilds(store), []);
  assert.ok(!existsSync(file));
});
