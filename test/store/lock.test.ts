import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readlinkSync } from 'node:fs';
import { mkdir, readdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { withBlobLock } from '../../src/store/lock.js';
import { Store } from '../../src/store/store.js';
import { scratchDirs } from '../support/scratch.js';

const scratch = await scratchDirs('lock');
const CHILD = join(dirname(fileURLToPath(import.meta.url)), 'lock.child.ts');
const DIGEST = `sha256:${'ab'.repeat(32)}`;
const lockPath = (root: string): string => join(root, 'locks', `${'ab'.repeat(32)}.lock`);

async function listDir(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch {
    return [];
  }
}

interface Child {
  proc: ChildProcess;
  /** Resolves with the first stdout line equal to `text`. */
  line(text: string): Promise<void>;
  exit: Promise<[number | null, NodeJS.Signals | null]>;
}

function startChild(root: string): Child {
  const proc = spawn(process.execPath, ['--import', 'tsx', CHILD, root, DIGEST], { stdio: ['pipe', 'pipe', 'inherit'] });
  const seen: string[] = [];
  const waiters: Array<{ text: string; ok: () => void }> = [];
  createInterface({ input: proc.stdout! }).on('line', (l) => {
    seen.push(l);
    for (const w of waiters.filter((w) => w.text === l)) w.ok();
  });
  const exit = once(proc, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  return {
    proc,
    exit,
    line: (text) =>
      seen.includes(text)
        ? Promise.resolve()
        : Promise.race([
            new Promise<void>((ok) => waiters.push({ text, ok })),
            exit.then(([code, sig]) => {
              throw new Error(`child exited (${code ?? sig}) before printing ${text}`);
            }),
          ]),
  };
}

test('runs fn under a lock file naming this process, removed on success and on failure', async () => {
  const store = new Store(await scratch('basic'));
  const value = await withBlobLock(store, DIGEST, async () => {
    const rec = JSON.parse(await readFile(lockPath(store.root), 'utf8')) as { pid: number; token: string };
    assert.equal(rec.pid, process.pid);
    assert.match(rec.token, /^[0-9a-f]{24}$/);
    return 42;
  });
  assert.equal(value, 42);
  assert.deepEqual(await listDir(join(store.root, 'locks')), []);

  await assert.rejects(
    withBlobLock(store, DIGEST, async () => {
      throw new Error('boom');
    }),
    /boom/,
  );
  assert.deepEqual(await listDir(join(store.root, 'locks')), []);
});

test('released when fn stops on abort', async () => {
  const store = new Store(await scratch('abort-in-fn'));
  const ac = new AbortController();
  await assert.rejects(
    withBlobLock(
      store,
      DIGEST,
      async () => {
        ac.abort();
        ac.signal.throwIfAborted();
      },
      { signal: ac.signal },
    ),
    { name: 'AbortError' },
  );
  assert.deepEqual(await listDir(join(store.root, 'locks')), []);
});

test('callers in one process take turns', async () => {
  const store = new Store(await scratch('in-process'));
  const order: string[] = [];
  const run = (name: string): Promise<void> =>
    withBlobLock(store, DIGEST, async () => {
      order.push(`${name} in`);
      // Give the others every chance to run now if exclusion were broken.
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
      order.push(`${name} out`);
    });
  await Promise.all([run('a'), run('b'), run('c')]);
  assert.deepEqual(order, ['a in', 'a out', 'b in', 'b out', 'c in', 'c out']);
  assert.deepEqual(await listDir(join(store.root, 'locks')), []);
});

test('waits for another process holding the lock, runs after its release', async () => {
  const root = await scratch('other-process');
  const child = startChild(root);
  await child.line('locked');
  const holder = JSON.parse(await readFile(lockPath(root), 'utf8')) as { pid: number };
  assert.equal(holder.pid, child.proc.pid);

  const waiting = withBlobLock(new Store(root), DIGEST, async () => {
    // The child writes this file just before it releases.
    await stat(join(root, 'released'));
    const rec = JSON.parse(await readFile(lockPath(root), 'utf8')) as { pid: number };
    assert.equal(rec.pid, process.pid);
    return 'ran';
  });
  child.proc.stdin!.write('release\n');
  assert.equal(await waiting, 'ran');
  assert.deepEqual(await child.exit, [0, null]);
  assert.deepEqual(await listDir(join(root, 'locks')), []);
});

test('a holder killed with SIGKILL leaves a stale lock the next caller takes over', async () => {
  const root = await scratch('killed');
  const child = startChild(root);
  await child.line('locked');
  child.proc.kill('SIGKILL');
  assert.deepEqual(await child.exit, [null, 'SIGKILL']);
  assert.deepEqual(await listDir(join(root, 'locks')), [`${'ab'.repeat(32)}.lock`], 'the dead holder left its lock');

  assert.equal(await withBlobLock(new Store(root), DIGEST, async () => 'ok'), 'ok');
  assert.deepEqual(await listDir(join(root, 'locks')), []);
});

test('abort while waiting for a live holder: rejects, the holder keeps its lock, nothing left behind', async () => {
  const root = await scratch('abort-waiting');
  const child = startChild(root);
  await child.line('locked');
  const ac = new AbortController();
  let ran = false;
  const waiting = withBlobLock(
    new Store(root),
    DIGEST,
    async () => {
      ran = true;
    },
    { signal: ac.signal },
  );
  setImmediate(() => ac.abort());
  await assert.rejects(waiting, { name: 'AbortError' });
  assert.equal(ran, false);
  assert.deepEqual(await listDir(join(root, 'locks')), [`${'ab'.repeat(32)}.lock`]);
  const rec = JSON.parse(await readFile(lockPath(root), 'utf8')) as { pid: number };
  assert.equal(rec.pid, child.proc.pid);
  child.proc.stdin!.write('release\n');
  assert.deepEqual(await child.exit, [0, null]);
  assert.deepEqual(await listDir(join(root, 'locks')), []);
});

// Lock records written by hand: the situations a real run leaves behind but that are
// hard to provoke (a recycled pid, a container that reused our pid, another host).
async function plantLock(root: string, record: object, mtime?: Date): Promise<void> {
  await mkdir(join(root, 'locks'), { recursive: true });
  await writeFile(lockPath(root), JSON.stringify(record));
  if (mtime) await utimes(lockPath(root), mtime, mtime);
}

/** The holder identity lock.ts records: hostname and pid namespace (Linux). */
async function hostKey(): Promise<string> {
  return `${hostname()}/${readlinkSync('/proc/self/ns/pid')}`;
}

test('stale: our own pid with a token we do not hold (a previous run in a container reusing pids)', async () => {
  const root = await scratch('own-pid');
  await plantLock(root, { pid: process.pid, token: 'f'.repeat(24), host: await hostKey(), start: null });
  assert.equal(await withBlobLock(new Store(root), DIGEST, async () => 'ok'), 'ok');
  assert.deepEqual(await listDir(join(root, 'locks')), []);
});

test('stale: a live pid with another start time (a recycled pid)', async () => {
  const root = await scratch('recycled');
  await plantLock(root, { pid: process.ppid, token: 'e'.repeat(24), host: await hostKey(), start: '1' });
  assert.equal(await withBlobLock(new Store(root), DIGEST, async () => 'ok'), 'ok');
});

test('another host: stale once its heartbeat is older than staleMs, respected while fresh', async () => {
  const root = await scratch('other-host');
  const record = { pid: 1, token: 'd'.repeat(24), host: 'elsewhere/pid:[1]', start: null };
  await plantLock(root, record, new Date());
  const ac = new AbortController();
  const waiting = withBlobLock(new Store(root), DIGEST, async () => 'ran', { signal: ac.signal, staleMs: 3_600_000 });
  setImmediate(() => ac.abort());
  await assert.rejects(waiting, { name: 'AbortError' });

  await plantLock(root, record, new Date(Date.now() - 2 * 3_600_000));
  assert.equal(await withBlobLock(new Store(root), DIGEST, async () => 'ran', { staleMs: 3_600_000 }), 'ran');
  assert.deepEqual(await listDir(join(root, 'locks')), []);
});
