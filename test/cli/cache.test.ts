// Step cache management through the real CLI: --no-cache, `cache ls` (table and
// JSON), `cache prune` (dry run, --keep-storage 0) while another build runs a RUN step
// in the sandbox on the same store, and a rebuild after everything was pruned.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildAptRepo, generateTestKey, type FixtureRepo } from '../support/aptrepo.js';
import { CLI, ocibuild, scratchSpec, type CliRun } from '../support/cli.js';
import { serveDirectory, type TestServer } from '../support/http.js';
import { busyboxFiles, type FixturePackage } from '../support/deb.js';
import { ageStore } from '../support/age-store.js';

const packages: FixturePackage[] = [
  {
    name: 'base-tool',
    version: '1.0-1',
    depends: 'tool-data',
    files: {
      ...busyboxFiles(),
    },
  },
  { name: 'tool-data', version: '2.0-1', arch: 'all', files: { '/usr/share/tool/data.txt': 'data\n' } },
];

let tmp: string;
let repo: FixtureRepo;
let server: TestServer;

before(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'ocibuild-cache-'));
  repo = await buildAptRepo(path.join(tmp, 'repo'), [{ name: 'stable', components: { main: packages } }], { key: await generateTestKey() });
  server = await serveDirectory(repo.dir);
});

after(async () => {
  await server?.close();
  await rm(tmp, { recursive: true, force: true });
});

function yamlList(key: string, lines: string[], indent = ''): string[] {
  return [`${indent}${key}:`, ...lines.map((l) => `${indent}  - ${JSON.stringify(l)}`)];
}

async function specDir(name: string, run: string[]): Promise<string> {
  const dir = await mkdtemp(path.join(tmp, `${name}-`));
  await writeFile(path.join(dir, 'image.yaml'), scratchSpec(server.url, repo.keyringPath, ['base-tool'], run));
  return dir;
}

function buildArgs(dir: string, store: string, extra: string[] = []): string[] {
  return ['build', '-f', path.join(dir, 'image.yaml'), '-o', `oci:${path.join(dir, 'out')}:latest`, '--cache-dir', store, '--source-date-epoch', '1700000000', ...extra];
}

interface Entry { kind: string; id: string; path: string; size: number; lastUse: string; detail?: string; layer?: { digest: string; size: number; present: boolean; createdBy?: string }; package?: { name: string; version: string } }
interface Listing { store: string; total: number; entries: Entry[]; builds: Array<{ pid: number }> }

async function listing(store: string): Promise<Listing> {
  const r = await ocibuild(['cache', 'ls', '--cache-dir', store, '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Listing;
}

function manifestLayers(dir: string): Array<{ digest: string; size: number }> {
  const layout = path.join(dir, 'out');
  const index = JSON.parse(readFileSync(path.join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
  return (JSON.parse(readFileSync(path.join(layout, 'blobs/sha256', index.manifests[0]!.digest.slice(7)), 'utf8')) as { layers: Array<{ digest: string; size: number }> }).layers;
}

/** Every file and tree name the store's entries live under, for before/after comparisons. */
async function storeFiles(store: string): Promise<string[]> {
  const out: string[] = [];
  for (const sub of ['blobs/sha256', 'rootfs', 'cache-mounts', 'cache']) {
    for (const name of await readdir(path.join(store, sub)).catch(() => [] as string[])) {
      out.push(`${sub}/${name}`);
      if (sub === 'cache') for (const key of await readdir(path.join(store, sub, name))) out.push(`${sub}/${name}/${key}`);
    }
  }
  return out.sort();
}

test('--no-cache redoes every layer, records them, and gives the same digest', async () => {
  const store = path.join(tmp, 'store-nocache');
  const dir = await specDir('nocache', yamlList('run', ['echo hi > /hello']));
  const first = await ocibuild(buildArgs(dir, store));
  assert.equal(first.code, 0, first.stderr);
  const again = await ocibuild(buildArgs(dir, store, ['--no-cache']));
  assert.equal(again.code, 0, again.stderr);
  assert.doesNotMatch(again.stderr, /from the layer cache/);
  assert.match(again.stderr, /wrote apt layer/);
  assert.match(again.stderr, /wrote run layer/);
  assert.equal(again.stdout, first.stdout, 'same digest');
  // The rebuilt layers are recorded: a build without --no-cache takes them.
  const cached = await ocibuild(buildArgs(dir, store));
  assert.equal(cached.code, 0, cached.stderr);
  assert.match(cached.stderr, /apt layer: unchanged, from the layer cache/);
  assert.match(cached.stderr, /run layer: unchanged, from the layer cache/);
  assert.equal(cached.stdout, first.stdout);
});

test('cache ls lists layer records, layers and .debs with sizes and last use; --json parses', async () => {
  const store = path.join(tmp, 'store-ls');
  const dir = await specDir('ls', yamlList('run', ['echo ls > /ls']));
  const built = await ocibuild(buildArgs(dir, store));
  assert.equal(built.code, 0, built.stderr);
  const layers = manifestLayers(dir);

  const list = await listing(store);
  assert.equal(list.store, store);
  assert.equal(list.total, list.entries.reduce((n, e) => n + e.size, 0));
  assert.deepEqual(list.builds, []);
  const records = list.entries.filter((e) => e.kind === 'layer-record');
  assert.equal(records.length, 2, 'apt layer and run layer');
  for (const l of layers) {
    const record = records.find((r) => r.layer?.digest === l.digest);
    assert.ok(record, `a record for ${l.digest}`);
    assert.equal(record.layer!.size, l.size);
    assert.equal(record.layer!.present, true);
    assert.match(record.layer!.createdBy ?? '', /^(ocibuild apt install|RUN )/);
    const blob = list.entries.find((e) => e.id === l.digest);
    assert.equal(blob?.kind, 'layer');
    assert.equal(blob.size, l.size);
  }
  const debs = list.entries.filter((e) => e.kind === 'deb');
  assert.deepEqual(debs.map((d) => `${d.package?.name} ${d.package?.version}`).sort(), ['base-tool 1.0-1', 'tool-data 2.0-1']);
  for (const d of debs) assert.equal(d.size, (await stat(d.path)).size);
  assert.ok(list.entries.some((e) => e.kind === 'rootfs' && e.size > 0), 'the rootfs under the RUN step, with its disk size');
  for (const e of list.entries) assert.ok(Number.isFinite(Date.parse(e.lastUse)), e.lastUse);

  // The table: a row per entry (short ids), the .debs named, and the total.
  const table = await ocibuild(['cache', 'ls', '--cache-dir', store]);
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, /^KIND +ID +SIZE +LAST USE +DETAIL$/m);
  assert.match(table.stdout, /^deb +[0-9a-f]{12} +\S+ \S+ +\S.* +base-tool 1\.0-1 amd64$/m);
  assert.match(table.stdout, new RegExp(`^layer-record +[0-9a-f]{12} .* layer ${layers[1]!.digest.slice(7, 19)} `, 'm'));
  assert.match(table.stdout, new RegExp(`^total: .* in ${list.entries.length} entries`, 'm'));
});

test('prune --dry-run removes nothing; --keep-storage 0 spares a running build, which completes; a rebuild after a full prune works', async () => {
  const store = path.join(tmp, 'store-prune');
  const a = await specDir('prune-a', yamlList('run', ['echo a > /a']));
  const first = await ocibuild(buildArgs(a, store));
  assert.equal(first.code, 0, first.stderr);
  const runLayerA = manifestLayers(a)[1]!.digest;

  await ageStore(store);
  const before = await storeFiles(store);
  const dry = await ocibuild(['cache', 'prune', '--older-than', '0s', '--dry-run', '--cache-dir', store]);
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /^would remove layer /m);
  assert.match(dry.stdout, /^would free /m);
  assert.deepEqual(await storeFiles(store), before, 'a dry run removes nothing');

  // B shares A's packages (the same .debs, apt layer and rootfs) and waits in its RUN
  // step, behind a gate file in its cache mount, until the prune is over.
  const b = await specDir('prune-b', [
    'run:',
    ...yamlList('commands', ['i=0; while [ ! -e /gate/go ] && [ $i -lt 300 ]; do sleep 1; i=$((i+1)); done', 'echo b > /b'], '  '),
    '  cache: [{target: /gate, id: gate}]',
  ]);
  const building = startCli(buildArgs(b, store));
  await building.stderrMatches(/running 2 RUN lines/);

  const pruned = await ocibuild(['cache', 'prune', '--keep-storage', '0', '--cache-dir', store]);
  assert.equal(pruned.code, 0, pruned.stderr);
  assert.match(pruned.stdout, new RegExp(`^removed layer ${runLayerA.slice(7, 19)} `, 'm'), pruned.stdout);
  assert.match(pruned.stdout, /^freed .*; the store holds /m);
  assert.match(pruned.stdout, /^kept \d+ entries \(.*\) in use: used since .*, when the oldest of 1 running build \(pid \d+\) started$/m);
  const held = await listing(store);
  assert.equal(held.builds.length, 1);
  assert.ok(!held.entries.some((e) => e.id === runLayerA || e.layer?.digest === runLayerA), 'A\'s run layer and its record are gone');
  assert.deepEqual(held.entries.filter((e) => e.kind === 'deb').map((e) => e.package?.name).sort(), ['base-tool', 'tool-data'], 'B\'s .debs are kept');
  const aptLayer = manifestLayers(a)[0]!.digest;
  assert.ok(held.entries.some((e) => e.id === aptLayer), 'B\'s apt layer (from the cache) is kept');
  assert.ok(held.entries.some((e) => e.layer?.digest === aptLayer), 'and its record');
  assert.ok(held.entries.some((e) => e.kind === 'rootfs' && !e.path.includes('.tmp-')), 'the rootfs under B\'s RUN step is kept');
  assert.ok(existsSync(path.join(store, 'cache-mounts', 'gate')), 'B\'s cache mount is kept');

  await writeFile(path.join(store, 'cache-mounts', 'gate', 'go'), '');
  const done = await building.done;
  assert.equal(done.code, 0, done.stderr);
  assert.equal(manifestLayers(b).length, 2);

  // No build running: everything goes.
  await ageStore(store);
  const all = await ocibuild(['cache', 'prune', '--keep-storage', '0', '--cache-dir', store]);
  assert.equal(all.code, 0, all.stderr);
  assert.match(all.stdout, /^freed .*; the store holds 0 B$/m);
  assert.deepEqual((await listing(store)).entries, []);

  // A rebuild downloads the .debs again and gives the first digest.
  const rebuilt = await ocibuild(buildArgs(a, store));
  assert.equal(rebuilt.code, 0, rebuilt.stderr);
  assert.match(rebuilt.stderr, /fetched base-tool/);
  assert.match(rebuilt.stderr, /wrote run layer/);
  assert.equal(rebuilt.stdout, first.stdout);
});

test('prune needs a criterion; sizes and durations are checked', async () => {
  const store = path.join(tmp, 'store-usage');
  for (const [args, message] of [
    [[], /say what to remove/],
    [['--keep-storage', '10 parsecs'], /"10 parsecs" is not a size/],
    [['--older-than', '7'], /"7" is not a duration/],
    [['--all', '--older-than', '1d'], /give it without --keep-storage and --older-than/],
  ] as const) {
    const r = await ocibuild(['cache', 'prune', ...args, '--cache-dir', store]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, message);
  }
});

interface Running { stderrMatches(re: RegExp): Promise<void>; done: Promise<CliRun> }

/** The CLI in the background, its stderr watched as it comes. */
function startCli(args: string[]): Running {
  const child = spawn(CLI, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const waiters: Array<{ re: RegExp; ok: () => void }> = [];
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => {
    stderr += d;
    for (const w of waiters.filter((w) => w.re.test(stderr))) w.ok();
  });
  const done = new Promise<CliRun>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
  return {
    done,
    stderrMatches: (re) =>
      re.test(stderr)
        ? Promise.resolve()
        : Promise.race([
            new Promise<void>((ok) => waiters.push({ re, ok })),
            done.then((r) => {
              throw new Error(`the build ended (${r.code}) before its output matched ${re}:\n${r.stderr}`);
            }),
          ]),
  };
}
