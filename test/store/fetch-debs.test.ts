import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { LockEntry } from '../../src/apt/lockfile.js';
import { OcibuildError } from '../../src/errors.js';
import { fetchDebs, type ProgressEvent } from '../../src/store/fetch-debs.js';
import { Store } from '../../src/store/store.js';
import { buildAptRepo, tamperFile, type FixtureRepo } from '../support/aptrepo.js';
import type { FixturePackage } from '../support/deb.js';
import { serveDirectory, type TestServer } from '../support/http.js';
import { scratchDirs } from '../support/scratch.js';

const scratch = await scratchDirs('fetch-debs');
const CHILD = join(dirname(fileURLToPath(import.meta.url)), 'fetch-debs.child.ts');

// Random payloads keep the .debs tens of KiB after xz, so a transfer can be cut midway.
const pkg = (name: string, version: string): FixturePackage => ({
  name,
  version,
  files: { [`/usr/share/${name}/data`]: randomBytes(24_000) },
});
const PACKAGES = [pkg('alpha', '1.0-1'), pkg('bravo', '2:2.1-3'), pkg('curl', '7.88.1-10'), pkg('delta', '0.9~rc1-1'), pkg('echo', '5')];

let repo: FixtureRepo;
let server: TestServer;
let entries: LockEntry[];

before(async () => {
  repo = await buildAptRepo(await scratch('repo'), [{ name: 'stable', components: { main: PACKAGES } }]);
  server = await serveDirectory(repo.dir);
  entries = PACKAGES.map((p) => {
    const deb = repo.debs.get(`${p.name}_${p.version}_amd64`);
    assert.ok(deb, p.name);
    return {
      package: p.name,
      version: p.version,
      architecture: 'amd64',
      filename: deb.filename,
      size: deb.size,
      sha256: deb.sha256,
      url: server.url,
      suite: 'stable',
      component: 'main',
      requiredBy: ['requested'],
    };
  });
});
after(() => server.close());

const entry = (name: string): LockEntry => {
  const e = entries.find((x) => x.package === name);
  assert.ok(e, name);
  return e;
};
const debPath = (e: LockEntry): string => `/${e.filename}`;
/** Requests logged from now on. */
const mark = (): (() => TestServer['requests']) => {
  const start = server.requests.length;
  return () => server.requests.slice(start);
};

async function listDir(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch {
    return [];
  }
}

async function assertClean(store: Store, blobs: LockEntry[]): Promise<void> {
  assert.deepEqual(await listDir(join(store.root, 'blobs', 'sha256')), blobs.map((e) => e.sha256).sort());
  assert.deepEqual(await listDir(join(store.root, 'tmp')), [], 'no leftovers in tmp/');
  assert.deepEqual(await listDir(join(store.root, 'locks')), [], 'no leftovers in locks/');
}

test('downloads every entry, verified, keyed by package; a second run downloads nothing', async () => {
  const store = new Store(await scratch('store'));
  const log = mark();
  const events: ProgressEvent[] = [];
  const result = await fetchDebs(entries, { store, onProgress: (ev) => events.push(ev) });
  assert.deepEqual([...result.keys()].sort(), PACKAGES.map((p) => p.name).sort());
  for (const e of entries) {
    const got = result.get(e.package);
    assert.deepEqual(got, { digest: `sha256:${e.sha256}`, path: store.blobPath(`sha256:${e.sha256}`) });
    assert.deepEqual(await store.readBlob(got.digest), await readFile(join(repo.dir, e.filename)));
  }
  assert.deepEqual(log().map((r) => `${r.method} ${r.path} ${r.status}`).sort(), entries.map((e) => `GET ${debPath(e)} 200`).sort());
  for (const e of entries) {
    const mine = events.filter((ev) => ev.package === e.package);
    assert.deepEqual(mine[0], { kind: 'start', package: e.package, bytes: 0, total: e.size });
    assert.deepEqual(mine.at(-1), { kind: 'done', package: e.package, bytes: e.size, total: e.size });
    assert.equal(mine.filter((ev) => ev.kind === 'progress').at(-1)?.bytes, e.size);
  }
  await assertClean(store, entries);

  const again = mark();
  const skips: ProgressEvent[] = [];
  const second = await fetchDebs(entries, { store, onProgress: (ev) => skips.push(ev) });
  assert.deepEqual(second, result);
  assert.deepEqual(again(), [], 'no request when the store has every blob');
  assert.deepEqual(skips.map((ev) => ev.kind), entries.map(() => 'skip'));
});

test('sha256 mismatch: an error naming package, version and URL; the bad bytes never enter the store', async () => {
  const store = new Store(await scratch('store'));
  const e = entry('curl');
  const original = await readFile(join(repo.dir, e.filename));
  await tamperFile(repo, e.filename, (b) => {
    const c = Buffer.from(b);
    c[c.length - 1] = (c[c.length - 1] ?? 0) ^ 0xff;
    return c;
  });
  try {
    const url = `${server.url}/${e.filename}`;
    // With the others: the failure stops the batch, which settles with every lock released.
    await assert.rejects(fetchDebs(entries, { store, backoffMs: 1, concurrency: 2 }), (err: unknown) => {
      assert.ok(err instanceof OcibuildError);
      assert.equal(err.message, `sha256 mismatch for curl 7.88.1-10 from ${url}: the mirror serves a different file than the lock records`);
      assert.equal(err.where, url);
      assert.match(err.hint ?? '', /another mirror/);
      assert.equal(err.exitCode, 1);
      return true;
    });
    assert.equal(await store.has(`sha256:${e.sha256}`), false);
    assert.deepEqual(await listDir(join(store.root, 'locks')), []);
    assert.ok(!(await listDir(join(store.root, 'tmp'))).some((f) => f.startsWith(e.sha256)), 'the bad partial is deleted');
  } finally {
    await writeFile(join(repo.dir, e.filename), original);
  }
});

test('a size that differs from the lock fails before downloading the body', async () => {
  const store = new Store(await scratch('store'));
  const e = { ...entry('alpha'), size: entry('alpha').size + 1 };
  await assert.rejects(fetchDebs([e], { store, backoffMs: 1 }), (err: unknown) => {
    assert.ok(err instanceof OcibuildError);
    assert.match(err.message, /^size mismatch for alpha 1\.0-1 from http:\/\/127\.0\.0\.1:\d+\/pool\/.*: the mirror sends \d+ bytes, the lock records \d+$/);
    return true;
  });
  await assertClean(store, []);
});

test('a truncated transfer resumes with a Range request from the bytes received', async () => {
  const store = new Store(await scratch('store'));
  const e = entry('bravo');
  server.setFault(debPath(e), { kind: 'truncate', bytes: 5000, times: 1 });
  const log = mark();
  const result = await fetchDebs([e], { store, backoffMs: 1 });
  assert.equal(result.get('bravo')?.digest, `sha256:${e.sha256}`);
  const requests = log().map((r) => [r.path, r.status, r.range] as const);
  assert.equal(requests.length, 2, JSON.stringify(requests));
  assert.deepEqual(requests[0], [debPath(e), 200, undefined]);
  // The client resumes from what reached its file. Usually all 5000 bytes; but bytes
  // still buffered in the response stream when the connection drops are discarded
  // with it (Node stream semantics), so a resume may start earlier. It never starts
  // past what the server sent, and a resume is a ranged request.
  const [, status, range] = requests[1]!;
  const start = Number(/^bytes=(\d+)-$/.exec(range ?? '')?.[1] ?? 0);
  if (range === undefined) assert.equal(status, 200);
  else {
    assert.equal(status, 206);
    assert.ok(start > 0 && start <= 5000, `resumed at ${start}`);
  }
  await assertClean(store, [e]);
});

test('the first mirror answers 404: the next mirror is used', async () => {
  const store = new Store(await scratch('store'));
  const e = entry('delta');
  const log = mark();
  const result = await fetchDebs([e], { store, mirrors: (x) => [`${server.url}/gone/`, x.url] });
  assert.equal(result.get('delta')?.digest, `sha256:${e.sha256}`);
  assert.deepEqual(
    log().map((r) => `${r.path} ${r.status}`),
    [`/gone${debPath(e)} 404`, `${debPath(e)} 200`],
  );
  await assertClean(store, [e]);
});

test('no mirror has it: one error listing every URL tried', async () => {
  const store = new Store(await scratch('store'));
  const e = entry('echo');
  await assert.rejects(fetchDebs([e], { store, mirrors: () => [`${server.url}/a`, `${server.url}/b`] }), (err: unknown) => {
    assert.ok(err instanceof OcibuildError);
    assert.equal(err.message, `echo 5 not found on any mirror: ${server.url}/a/${e.filename}, ${server.url}/b/${e.filename}`);
    assert.match(err.hint ?? '', /ocibuild lock/);
    return true;
  });
  await assertClean(store, []);
});

// ---------------------------------------------------------------------------
// Other processes sharing the store

interface Child {
  proc: ChildProcess;
  line(pred: (l: string) => boolean): Promise<string>;
  /** The progress events printed so far. */
  events(): ProgressEvent[];
  exit: Promise<[number | null, NodeJS.Signals | null]>;
}

async function startChild(root: string, which: LockEntry[]): Promise<Child> {
  const file = join(await scratch('entries'), 'entries.json');
  await writeFile(file, JSON.stringify(which));
  const proc = spawn(process.execPath, ['--import', 'tsx', CHILD, root, file], { stdio: ['pipe', 'pipe', 'inherit'] });
  const seen: string[] = [];
  const waiters: Array<{ pred: (l: string) => boolean; ok: (l: string) => void }> = [];
  createInterface({ input: proc.stdout! }).on('line', (l) => {
    seen.push(l);
    for (const w of waiters.splice(0).filter((w) => (w.pred(l) ? (w.ok(l), false) : true))) waiters.push(w);
  });
  const exit = once(proc, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  return {
    proc,
    exit,
    events: () => seen.filter((l) => l.startsWith('event ')).map((l) => JSON.parse(l.slice('event '.length)) as ProgressEvent),
    line: (pred) => {
      const hit = seen.find(pred);
      if (hit !== undefined) return Promise.resolve(hit);
      return Promise.race([
        new Promise<string>((ok) => waiters.push({ pred, ok })),
        exit.then(([code, sig]): string => {
          throw new Error(`child exited (${code ?? sig}) before the expected line`);
        }),
      ]);
    },
  };
}

test('two processes fetch the same debs into one empty store at once: each blob downloaded once', async () => {
  const store = new Store(await scratch('shared'));
  // Slow answers keep each blob's lock held while the other process asks for it.
  server.setFault('.deb', { kind: 'delay-headers-ms', ms: 100 });
  try {
    const a = await startChild(store.root, entries);
    const b = await startChild(store.root, entries);
    await Promise.all([a.line((l) => l === 'ready'), b.line((l) => l === 'ready')]);
    const log = mark();
    a.proc.stdin!.end('go\n');
    b.proc.stdin!.end('go\n');
    const [ra, rb] = await Promise.all([a.line((l) => l.startsWith('result ')), b.line((l) => l.startsWith('result '))]);
    assert.deepEqual(await a.exit, [0, null]);
    assert.deepEqual(await b.exit, [0, null]);
    assert.equal(ra, rb);
    const result = new Map(JSON.parse(ra.slice('result '.length)) as Array<[string, { digest: string }]>);
    for (const e of entries) assert.equal(result.get(e.package)?.digest, `sha256:${e.sha256}`);
    assert.deepEqual(log().map((r) => `${r.method} ${r.path} ${r.status}`).sort(), entries.map((e) => `GET ${debPath(e)} 200`).sort());
    for (const e of entries) assert.deepEqual(await store.readBlob(`sha256:${e.sha256}`), await readFile(join(repo.dir, e.filename)));
    // Each package was fetched by one process and found in the store by the other.
    for (const e of entries) {
      const kinds = [...a.events(), ...b.events()].filter((ev) => ev.package === e.package && ev.kind !== 'progress').map((ev) => ev.kind);
      assert.deepEqual(kinds.sort(), ['done', 'skip', 'start'], e.package);
    }
    await assertClean(store, entries);
  } finally {
    server.setFault('.deb', null);
  }
});

test('a process killed (SIGKILL) mid-download while holding the lock: the next run resumes it without cleanup', async () => {
  const store = new Store(await scratch('killed'));
  const e = entry('echo');
  server.setFault(debPath(e), { kind: 'stall', bytes: 8000 });
  let child: Child;
  try {
    child = await startChild(store.root, [e]);
    await child.line((l) => l === 'ready');
    child.proc.stdin!.end('go\n');
    // Bytes are reported once they are in the partial file.
    await child.line((l) => l.startsWith('event ') && (JSON.parse(l.slice(6)) as ProgressEvent).bytes > 0);
    child.proc.kill('SIGKILL');
    assert.deepEqual(await child.exit, [null, 'SIGKILL']);
  } finally {
    server.setFault(debPath(e), null);
  }
  assert.equal((await listDir(join(store.root, 'locks'))).length, 1, 'the killed process left its lock');
  const partial = join(store.root, 'tmp', `${e.sha256}.partial`);
  const kept = (await stat(partial)).size;
  assert.ok(kept > 0 && kept <= 8000, `partial of ${kept} bytes`);

  const log = mark();
  const result = await fetchDebs([e], { store });
  assert.equal(result.get('echo')?.digest, `sha256:${e.sha256}`);
  assert.deepEqual(log().map((r) => [r.path, r.status, r.range]), [[debPath(e), 206, `bytes=${kept}-`]]);
  assert.deepEqual(await store.readBlob(`sha256:${e.sha256}`), await readFile(join(repo.dir, e.filename)));
  await assertClean(store, [e]);
});

test('a resumed prefix that is not of the file: one fresh download, then the right blob', async () => {
  const store = new Store(await scratch('bad-prefix'));
  const e = entry('alpha');
  await store.tmpDir();
  await writeFile(join(store.root, 'tmp', `${e.sha256}.partial`), Buffer.alloc(1000, 0x55));
  const log = mark();
  const result = await fetchDebs([e], { store });
  assert.equal(result.get('alpha')?.digest, `sha256:${e.sha256}`);
  assert.deepEqual(log().map((r) => [r.status, r.range]), [
    [206, 'bytes=1000-'],
    [200, undefined],
  ]);
  await assertClean(store, [e]);
});

test('abort mid-download: rejects, no blob, the lock released, the partial kept for the next run', async () => {
  const store = new Store(await scratch('abort'));
  const e = entry('delta');
  server.setFault(debPath(e), { kind: 'stall', bytes: 3000, times: 1 });
  const ac = new AbortController();
  await assert.rejects(
    fetchDebs([e], {
      store,
      signal: ac.signal,
      onProgress: (ev) => {
        if (ev.kind === 'progress') ac.abort();
      },
    }),
    { name: 'AbortError' },
  );
  assert.equal(await store.has(`sha256:${e.sha256}`), false);
  assert.deepEqual(await listDir(join(store.root, 'locks')), []);
  assert.deepEqual(await listDir(join(store.root, 'tmp')), [`${e.sha256}.partial`]);
  await fetchDebs([e], { store });
  await assertClean(store, [e]);
});
