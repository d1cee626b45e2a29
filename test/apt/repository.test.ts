// loadUniverse against a generated, signed apt repository served on 127.0.0.1.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { OcibuildError } from '../../src/errors.js';
import { loadUniverse, UBUNTU_KEYRING, type LoadedUniverse, type RepositoryOptions } from '../../src/apt/repository.js';
import { plainRecord } from '../../src/apt/index-cache.js';
import type { AptSource } from '../../src/spec/types.js';
import { Store } from '../../src/store/store.js';
import { buildAptRepo, generateTestKey, tamperFile, type FixtureRepo, type FixtureSuite } from '../support/aptrepo.js';
import type { FixturePackage } from '../support/deb.js';
import { serveDirectory, type TestServer } from '../support/http.js';
import { scratchDirs } from '../support/scratch.js';

const freshDir = await scratchDirs('repository');

const key = await generateTestKey();
const otherKey = await generateTestKey('someone else');

const hello: FixturePackage = { name: 'hello', version: '2.10-3', depends: 'hello-data (>= 2.10), libc6', priority: 'optional' };
const helloData: FixturePackage = { name: 'hello-data', version: '2.10-3', arch: 'all', multiArch: 'foreign' };
const libc: FixturePackage = { name: 'libc6', version: '2.36-9', multiArch: 'same', priority: 'required' };
const extra: FixturePackage = { name: 'extra-tool', version: '1.0-1', depends: 'libc6 (>= 2.36)' };
const helloNew: FixturePackage = { name: 'hello', version: '2.10-3+deb12u1', depends: 'hello-data (>= 2.10), libc6' };

const suites = (over: Partial<FixtureSuite> = {}): FixtureSuite[] => [
  { name: 'stable', components: { main: [hello, helloData, libc], contrib: [extra] }, ...over },
  { name: 'stable-updates', components: { main: [helloNew, helloData], contrib: [] }, ...over },
];

interface Served {
  repo: FixtureRepo;
  server: TestServer;
  source: AptSource;
}

/** A repository in a fresh directory, served until the test file ends. */
async function serve(label: string, s: FixtureSuite[], options: Parameters<typeof buildAptRepo>[2] = { key }): Promise<Served> {
  const repo = await buildAptRepo(await freshDir(label), s, options);
  const server = await serveDirectory(repo.dir);
  after(() => server.close());
  const source: AptSource = { url: server.url, suites: s.map((x) => x.name), components: Object.keys(s[0]!.components), keyring: repo.keyringPath };
  return { repo, server, source };
}

async function freshStore(): Promise<Store> {
  return new Store(await freshDir('store'));
}

function options(store: Store, over: Partial<RepositoryOptions> = {}): RepositoryOptions & { lines: string[] } {
  const lines: string[] = [];
  return { store, log: (l) => lines.push(l), http: { backoffMs: 1 }, lines, ...over };
}

/** Records from the parsed-index cache are lazy objects: compare their fields. */
const plain = (u: LoadedUniverse): LoadedUniverse => ({ ...u, records: u.records.map(plainRecord) });

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const gets = (server: TestServer, re: RegExp): string[] => server.requests.filter((r) => r.method === 'GET' && re.test(r.path)).map((r) => r.path);

async function storeIsEmpty(store: Store): Promise<void> {
  const blobs = await readdir(join(store.root, 'blobs', 'sha256')).catch(() => [] as string[]);
  assert.deepEqual(blobs, [], 'no blob in the store');
  const tmp = await readdir(join(store.root, 'tmp')).catch(() => []);
  assert.deepEqual(tmp, [], 'no temp file left');
}

function rejectsWith(re: RegExp, where: string | RegExp, hint?: RegExp): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof OcibuildError, `expected OcibuildError, got ${String(err)}`);
    assert.match(err.message, re);
    if (typeof where === 'string') assert.equal(err.where, where);
    else assert.match(err.where ?? '', where);
    if (hint) assert.match(err.hint ?? '', hint);
    assert.equal(err.exitCode, 1);
    return true;
  };
}

test('happy path (InRelease): origins, records, order, dedup of arch:all, verified index digests', async () => {
  const { repo, server, source } = await serve('happy', suites());
  const store = await freshStore();
  const opts = options(store);
  const u = await loadUniverse([source], 'amd64', opts);

  assert.equal(u.arch, 'amd64');
  assert.deepEqual(
    u.origins.map((o) => `${o.suite}/${o.component}/${o.arch}`),
    // No-Support-for-Architecture-all: Packages: arch:all packages are in binary-amd64, binary-all is skipped as apt does.
    ['stable/main/amd64', 'stable/contrib/amd64', 'stable-updates/main/amd64', 'stable-updates/contrib/amd64'],
  );
  assert.ok(u.origins.every((o) => o.url === server.url));
  // hello-data (arch: all) is in binary-amd64 of both suites: kept once (first seen).
  assert.deepEqual(
    u.records.map((r) => `${r.package}=${r.version}@${u.origins[r.origin]!.suite}/${u.origins[r.origin]!.component}/${u.origins[r.origin]!.arch}`),
    ['hello=2.10-3@stable/main/amd64', 'hello-data=2.10-3@stable/main/amd64', 'libc6=2.36-9@stable/main/amd64', 'extra-tool=1.0-1@stable/contrib/amd64', 'hello=2.10-3+deb12u1@stable-updates/main/amd64'],
  );
  const rec = u.records[0]!;
  const deb = repo.debs.get('hello_2.10-3_amd64')!;
  assert.equal(rec.filename, deb.filename);
  assert.equal(rec.size, deb.size);
  assert.equal(rec.sha256, deb.sha256);
  assert.equal(rec.depends, 'hello-data (>= 2.10), libc6');
  assert.equal(u.records[2]!.multiArch, 'same');

  // Every index is the .xz (preferred), verified and stored under its digest.
  assert.equal(u.indices.length, 4);
  const distinct = new Set(u.indices.map((i) => i.sha256)).size;
  assert.equal(distinct, 4);
  for (const { origin, sha256: hex } of u.indices) {
    const rel = `dists/${origin.suite}/${origin.component}/binary-${origin.arch}/Packages.xz`;
    assert.equal(hex, sha256(await readFile(join(repo.dir, rel))));
    assert.equal(await store.has(`sha256:${hex}`), true);
  }
  assert.equal(gets(server, /\/Packages\.xz$/).length, distinct);
  assert.equal(gets(server, /\/Packages\.gz$/).length, 0);
  assert.equal(gets(server, /Release\.gpg$/).length, 0, 'InRelease is enough');
});

test('second run: nothing downloaded again and nothing re-parsed', async () => {
  const { server, source } = await serve('cache', suites());
  const store = await freshStore();
  const first = options(store);
  const u1 = await loadUniverse([source], 'amd64', first);
  const distinct = new Set(u1.indices.map((i) => i.sha256)).size;
  assert.equal(first.lines.filter((l) => / parsed \d+ packages/.test(l)).length, distinct);
  const before = gets(server, /Packages/).length;

  const second = options(store);
  const u2 = await loadUniverse([source], 'amd64', second);
  assert.deepEqual(plain(u2), plain(u1));
  assert.equal(gets(server, /Packages/).length, before, 'no Packages file downloaded again');
  assert.equal(second.lines.filter((l) => / parsed /.test(l)).length, 0, 'no index parsed again');
  assert.equal(second.lines.filter((l) => /: cached \(\d+ packages\)/.test(l)).length, distinct);

  // Parsed cache gone but blobs kept: parse again from the store, still no download.
  await rm(join(store.root, 'cache'), { recursive: true });
  const third = options(store);
  assert.deepEqual(plain(await loadUniverse([source], 'amd64', third)), plain(u1));
  assert.equal(gets(server, /Packages/).length, before);
  assert.equal(third.lines.filter((l) => /: in store$/.test(l)).length, distinct);
});

test('Release + Release.gpg when InRelease is missing', async () => {
  const { server, source } = await serve('detached', suites({ inRelease: false }));
  const u = await loadUniverse([source], 'amd64', options(await freshStore()));
  assert.equal(u.records.length, 5);
  assert.deepEqual(
    server.requests.filter((r) => r.path.startsWith('/dists/stable/') && !r.path.includes('Packages')).map((r) => `${r.path} ${r.status}`),
    ['/dists/stable/InRelease 404', '/dists/stable/Release 200', '/dists/stable/Release.gpg 200'],
  );
});

test('Release without any signature: error, unless --insecure-no-verify', async () => {
  const { server, source } = await serve('unsigned', suites({ inRelease: false, releaseGpg: false }));
  const store = await freshStore();
  await assert.rejects(
    loadUniverse([source], 'amd64', options(store)),
    rejectsWith(/not signed/, /\/dists\/stable(-updates)?\/Release$/, /--insecure-no-verify/),
  );
  await storeIsEmpty(store);
  const opts = options(store, { insecureNoVerify: true });
  const u = await loadUniverse([source], 'amd64', opts);
  assert.equal(u.records.length, 5);
  assert.ok(opts.lines.some((l) => l.startsWith('WARNING') && l.includes(`${server.url}/dists/stable/Release`)));
});

test('bad signature (signed by another key): error naming the URL; nothing downloaded or stored', async () => {
  const { server, source } = await serve('badsig', [suites()[0]!], { key, signWith: otherKey });
  const store = await freshStore();
  await assert.rejects(
    loadUniverse([source], 'amd64', options(store)),
    rejectsWith(/no valid signature/, `${server.url}/dists/stable/InRelease`, /--insecure-no-verify/),
  );
  assert.deepEqual(gets(server, /Packages/), []);
  await storeIsEmpty(store);
});

test('--insecure-no-verify: loud warning, then success', async () => {
  const { server, source } = await serve('insecure', [suites()[0]!], { key, signWith: otherKey });
  const opts = options(await freshStore(), { insecureNoVerify: true });
  const u = await loadUniverse([source], 'amd64', opts);
  assert.equal(u.records.length, 4);
  const warning = opts.lines.find((l) => l.startsWith('WARNING'));
  assert.ok(warning, opts.lines.join('\n'));
  assert.match(warning, new RegExp(`${server.url}/dists/stable/InRelease.*--insecure-no-verify`));
});

test('expired Valid-Until: error naming the suite and date; --ignore-valid-until accepts it', async () => {
  const validUntil = new Date('2024-01-08T00:00:00Z');
  const { server, source } = await serve('expired', [suites({ validUntil })[0]!]);
  const store = await freshStore();
  await assert.rejects(
    loadUniverse([source], 'amd64', options(store, { now: new Date('2024-02-01T00:00:00Z') })),
    rejectsWith(/suite stable expired on 2024-01-08T00:00:00.000Z/, `${server.url}/dists/stable/InRelease`, /--ignore-valid-until/),
  );
  await storeIsEmpty(store);
  const ignoring = options(store, { now: new Date('2024-02-01T00:00:00Z'), ignoreValidUntil: true });
  assert.equal((await loadUniverse([source], 'amd64', ignoring)).records.length, 4);
  assert.ok(ignoring.lines.some((l) => /expired.*--ignore-valid-until/.test(l)));
  // Still valid at `now`: no error.
  assert.equal((await loadUniverse([source], 'amd64', options(await freshStore(), { now: new Date('2024-01-05T00:00:00Z') }))).records.length, 4);
});

const flipByte = (b: Buffer): Buffer => {
  const c = Buffer.from(b);
  c[c.length - 20] = c[c.length - 20]! ^ 0xff;
  return c;
};

test('tampered Packages.xz and .gz: sha256 mismatch naming the URL, nothing left in the store', async () => {
  const { repo, server, source } = await serve('tampered', [suites()[0]!]);
  await tamperFile(repo, 'dists/stable/main/binary-amd64/Packages.xz', flipByte);
  await tamperFile(repo, 'dists/stable/main/binary-amd64/Packages.gz', flipByte);
  const store = await freshStore();
  await assert.rejects(
    loadUniverse([source], 'amd64', options(store, { concurrency: 1 })),
    rejectsWith(/sha256 mismatch/, `${server.url}/dists/stable/main/binary-amd64/Packages.xz`, /mirror in the middle of a sync/),
  );
  const blobs = await readdir(join(store.root, 'blobs', 'sha256')).catch(() => [] as string[]);
  const tampered = sha256(await readFile(join(repo.dir, 'dists/stable/main/binary-amd64/Packages.xz')));
  assert.ok(!blobs.includes(tampered), 'the tampered file is not in the store');
  assert.deepEqual(await readdir(join(store.root, 'tmp')), []);
  assert.equal(gets(server, /binary-amd64\/Packages\.xz$/).length, 1, 'a digest mismatch is not retried');
});

test('a truncated response is retried and succeeds', async () => {
  const { server, source } = await serve('truncate', [suites()[0]!]);
  server.setFault('/dists/stable/main/binary-amd64/Packages.xz', { kind: 'truncate', bytes: 10, times: 1 });
  const opts = options(await freshStore());
  const u = await loadUniverse([source], 'amd64', opts);
  assert.equal(u.records.length, 4);
  assert.equal(gets(server, /main\/binary-amd64\/Packages\.xz$/).length, 2);
  assert.ok(opts.lines.some((l) => /^retrying .*binary-amd64\/Packages\.xz/.test(l)));
});

test('503 twice, then OK: succeeds', async () => {
  const { server, source } = await serve('503', [suites()[0]!]);
  server.setFault('/dists/stable/InRelease', { kind: 'status', status: 503, times: 2 });
  const u = await loadUniverse([source], 'amd64', options(await freshStore()));
  assert.equal(u.records.length, 4);
  assert.deepEqual(server.requests.filter((r) => r.path === '/dists/stable/InRelease').map((r) => r.status), [503, 503, 200]);
});

test('a connection reset is retried', async () => {
  const { server, source } = await serve('reset', [suites()[0]!]);
  server.setFault('/dists/stable/contrib/binary-amd64/Packages.xz', { kind: 'reset', times: 1 });
  assert.equal((await loadUniverse([source], 'amd64', options(await freshStore()))).records.length, 4);
});

test('a mirror failing every time: error after the retries, naming the URL', async () => {
  const { server, source } = await serve('500', [suites()[0]!]);
  server.setFault('/dists/stable/InRelease', { kind: 'status', status: 500 });
  await assert.rejects(
    loadUniverse([source], 'amd64', options(await freshStore())),
    rejectsWith(/HTTP 500 .*5 attempts/, `${server.url}/dists/stable/InRelease`, /mirror/),
  );
  assert.equal(server.requests.filter((r) => r.path === '/dists/stable/InRelease').length, 5);
});

test('unreachable mirror (closed port): error with the URL and ECONNREFUSED', async () => {
  const closed = await serveDirectory(await freshDir('closed'));
  const url = closed.url;
  await closed.close();
  const source: AptSource = { url, suites: ['stable'], components: ['main'], keyring: '/nonexistent' };
  await assert.rejects(
    loadUniverse([source], 'amd64', options(await freshStore())),
    rejectsWith(/ECONNREFUSED/, `${url}/dists/stable/InRelease`, /network/),
  );
});

test('a damaged Packages.xz (a mirror mid-sync) falls back to the Packages.gz the Release lists', async () => {
  const { repo, server, source } = await serve('tampered-xz', [suites()[0]!]);
  await tamperFile(repo, 'dists/stable/main/binary-amd64/Packages.xz', flipByte);
  const store = await freshStore();
  const opts = options(store, { concurrency: 1 });
  const u = await loadUniverse([source], 'amd64', opts);
  assert.deepEqual(u.records.map((r) => r.package).sort(), ['extra-tool', 'hello', 'hello-data', 'libc6'].filter((n) => u.records.some((r) => r.package === n)));
  assert.ok(u.records.some((r) => r.package === 'hello'));
  assert.equal(u.indices[0]!.sha256, sha256(await readFile(join(repo.dir, 'dists/stable/main/binary-amd64/Packages.gz'))));
  assert.ok(opts.lines.some((l) => /binary-amd64\/Packages\.xz: .*sha256 mismatch.*trying another compression/.test(l)), opts.lines.join('\n'));
  assert.equal(gets(server, /binary-amd64\/Packages\.gz$/).length, 1);
});

test('binary-all is read when the Release does not say arch:all packages are in binary-<arch>', async () => {
  const { server, source } = await serve('arch-all', [{ ...suites()[0]!, archAllSeparate: true }]);
  const u = await loadUniverse([source], 'amd64', options(await freshStore()));
  assert.deepEqual(u.origins.map((o) => `${o.component}/${o.arch}`), ['main/amd64', 'main/all', 'contrib/amd64', 'contrib/all']);
  const data = u.records.find((r) => r.package === 'hello-data')!;
  assert.equal(u.origins[data.origin]!.arch, 'all');
  assert.equal(gets(server, /binary-all\/Packages\.xz$/).length, 2);
});

test('Acquire-By-Hash: indices fetched from by-hash/SHA256/<hex>', async () => {
  const { server, source } = await serve('byhash', [suites({ acquireByHash: true })[0]!]);
  const u = await loadUniverse([source], 'amd64', options(await freshStore()));
  const fetched = gets(server, /by-hash/);
  assert.equal(fetched.length, 2);
  for (const { origin, sha256: hex } of u.indices) {
    assert.ok(fetched.includes(`/dists/stable/${origin.component}/binary-${origin.arch}/by-hash/SHA256/${hex}`));
  }
  assert.deepEqual(gets(server, /\/Packages\.xz$/), []);
});

test('Acquire-By-Hash with a by-hash copy missing: falls back to the plain path', async () => {
  const { server, source } = await serve('byhash-missing', [suites({ acquireByHash: true })[0]!]);
  const u0 = await loadUniverse([source], 'amd64', options(await freshStore()));
  const hex = u0.indices[0]!.sha256;
  server.setFault(`/by-hash/SHA256/${hex}`, { kind: 'status', status: 404 });
  const u = await loadUniverse([source], 'amd64', options(await freshStore()));
  assert.deepEqual(u, u0);
  assert.ok(gets(server, /\/dists\/stable\/main\/binary-amd64\/Packages\.xz$/).length === 1);
});

test('gz-only and uncompressed-only repositories', async () => {
  for (const compression of ['gz', 'none'] as const) {
    const { server, source } = await serve(`only-${compression}`, [suites({ compressions: [compression] })[0]!]);
    const u = await loadUniverse([source], 'amd64', options(await freshStore()));
    assert.equal(u.records.length, 4);
    const want = compression === 'gz' ? /\/Packages\.gz$/ : /\/Packages$/;
    assert.equal(gets(server, want).length, 2);
  }
});

test('an architecture or component the Release does not list: clear errors', async () => {
  const { server, source } = await serve('missing', [suites()[0]!]);
  await assert.rejects(
    loadUniverse([source], 'arm64', options(await freshStore())),
    rejectsWith(/suite stable does not support architecture arm64/, `${server.url}/dists/stable/Release`, /all amd64/),
  );
  await assert.rejects(
    loadUniverse([{ ...source, components: ['main', 'non-free'] }], 'amd64', options(await freshStore())),
    rejectsWith(/suite stable has no Packages index for component non-free, architecture amd64/, `${server.url}/dists/stable/Release`, /^the suite's components are: main, contrib$/),
  );
});

test('an unknown suite: error naming the suite', async () => {
  const { server, source } = await serve('nosuite', [suites()[0]!]);
  await assert.rejects(
    loadUniverse([{ ...source, suites: ['nosuch'] }], 'amd64', options(await freshStore())),
    rejectsWith(/suite nosuch has neither InRelease nor Release/, `${server.url}/dists/nosuch`, /suite name/),
  );
});

test('default keyring for an Ubuntu URL missing: hint to install ubuntu-keyring', { skip: existsSync(UBUNTU_KEYRING) }, async () => {
  const dir = await freshDir('ubuntu');
  await buildAptRepo(join(dir, 'ubuntu'), [suites()[0]!], { key });
  const server = await serveDirectory(dir);
  after(() => server.close());
  const source: AptSource = { url: `${server.url}/ubuntu`, suites: ['stable'], components: ['main'] };
  await assert.rejects(
    loadUniverse([source], 'amd64', options(await freshStore())),
    rejectsWith(/default keyring .* is missing/, UBUNTU_KEYRING, /ubuntu-keyring.*keyring:/),
  );
});

test('several sources: records follow the sources order', async () => {
  const a = await serve('multi-a', [{ name: 'a', components: { main: [libc] } }]);
  const b = await serve('multi-b', [{ name: 'b', components: { main: [extra] } }]);
  const u = await loadUniverse([b.source, a.source], 'amd64', options(await freshStore()));
  assert.deepEqual(u.records.map((r) => r.package), ['extra-tool', 'libc6']);
  assert.deepEqual(u.origins.map((o) => `${o.url === b.server.url ? 'b' : 'a'}:${o.suite}/${o.arch}`), ['b:b/amd64', 'a:a/amd64']);
});
