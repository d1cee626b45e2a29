// `ocibuild verify` end to end through the CLI, with the real sandbox (as root): two
// fresh builds of a reproducible spec agree and print the table; a RUN line writing the
// time is caught with its file and field; a layout built earlier verifies, the same
// layout recompressed by `gzip -1` is reported as a compression difference; an image
// pushed to a real docker-registry verifies. Nothing of the main store's layer cache
// is reused and nothing is left in its scratch area.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cp, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildAptRepo, generateTestKey, type FixtureRepo } from '../support/aptrepo.js';
import { ocibuild, scratchSpec } from '../support/cli.js';
import { serveDirectory, type TestServer } from '../support/http.js';
import { busyboxFiles, hostFile, type FixturePackage } from '../support/deb.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';

const packages: FixturePackage[] = [
  {
    name: 'base-tool',
    version: '1.0-1',
    files: {
      ...busyboxFiles(),
    },
  },
  {
    // GNU date (busybox's has no %N): nanoseconds make two runs differ for sure.
    name: 'clock',
    version: '1.0-1',
    files: {
      '/usr/local/bin/date': hostFile('/usr/bin/date'),
      '/opt/libc/libc.so.6': hostFile('/lib/x86_64-linux-gnu/libc.so.6'),
      '/usr/lib64/ld-linux-x86-64.so.2': hostFile('/lib64/ld-linux-x86-64.so.2'),
    },
  },
];

let tmp: string;
let repo: FixtureRepo;
let server: TestServer;
let reg: TestRegistry | undefined;
let store: string;
let env: NodeJS.ProcessEnv;

before(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'ocibuild-verify-'));
  repo = await buildAptRepo(path.join(tmp, 'repo'), [{ name: 'stable', components: { main: packages } }], { key: await generateTestKey() });
  server = await serveDirectory(repo.dir);
  store = path.join(tmp, 'store');
  // No docker/podman credentials of this machine.
  env = { HOME: tmp, DOCKER_CONFIG: path.join(tmp, 'docker'), XDG_RUNTIME_DIR: path.join(tmp, 'run') };
});

after(async () => {
  await reg?.stop();
  await server?.close();
  await rm(tmp, { recursive: true, force: true });
});

const REPRODUCIBLE = ['mkdir -p /app && echo hi > /app/hello', 'ln -s hello /app/link', 'chmod 0600 /app/hello'];
const CLOCK = ['LD_LIBRARY_PATH=/opt/libc /usr/local/bin/date +%s%N > /stamp', 'echo same > /same'];

/** A locked spec dir: base-tool and clock from the fixture, the RUN lines, a files layer. */
async function specDir(name: string, run: string[]): Promise<string> {
  const dir = await mkdtemp(path.join(tmp, `${name}-`));
  await writeFile(path.join(dir, 'note.txt'), 'a file of the files layer\n');
  const body = scratchSpec(server.url, repo.keyringPath, ['base-tool', 'clock'], [
    'run:',
    ...run.map((l) => `  - ${JSON.stringify(l)}`),
    'files:',
    '  - {src: note.txt, dest: /app/note.txt}',
  ]);
  await writeFile(path.join(dir, 'image.yaml'), body);
  const lock = await ocibuild(['lock', '-f', path.join(dir, 'image.yaml'), '--cache-dir', store, '-q'], env);
  assert.equal(lock.code, 0, lock.stderr);
  return dir;
}

const verify = (dir: string, args: string[] = []): ReturnType<typeof ocibuild> => ocibuild(['verify', '-f', path.join(dir, 'image.yaml'), '--cache-dir', store, ...args], env);
const build = (dir: string, args: string[]): ReturnType<typeof ocibuild> => ocibuild(['build', '-f', path.join(dir, 'image.yaml'), '--cache-dir', store, '-q', ...args], env);

/** Files left in the store's scratch area, and layer cache records. */
async function leftovers(): Promise<string[]> {
  return (await readdir(path.join(store, 'tmp')).catch(() => [] as string[])).filter((n) => !n.startsWith('.') && !n.endsWith('.lock'));
}
async function cacheRecords(): Promise<string[]> {
  return (await readdir(path.join(store, 'cache', 'layers-v1')).catch(() => [] as string[])).sort();
}

test('a reproducible spec verifies: two fresh builds agree, the table lists every layer; nothing cached is reused', async () => {
  const dir = await specDir('repro', REPRODUCIBLE);
  // A build first: its layers are in the store's layer cache, which verify must not use.
  const built = await build(dir, ['-o', `oci:${path.join(dir, 'out')}:latest`]);
  assert.equal(built.code, 0, built.stderr);
  const records = await cacheRecords();
  assert.ok(records.length >= 3, 'the build cached its layers');

  const r = await verify(dir);
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /from the layer cache/);
  assert.doesNotMatch(r.stderr, /out:verify/, 'the scratch output is not the user\'s business');
  assert.equal(r.stderr.match(/running 3 RUN lines/g)?.length, 2, r.stderr);
  const lines = r.stdout.split('\n');
  assert.equal(lines[0], 'linux/amd64 (build 1 vs build 2):');
  assert.match(lines[1]!, /^ {2}LAYER\s+CREATED BY\s+DIFFID\s+DIGEST$/);
  assert.match(lines[2]!, /^ {2}0\s+ocibuild apt install \(unpack\): base-tool clock.*\s+match\s+match$/);
  assert.match(lines[3]!, /^ {2}1\s+RUN \/bin\/sh -c mkdir -p \/app.*\s+match\s+match$/);
  assert.match(lines[4]!, /^ {2}2\s+ocibuild files: \/app\/note\.txt\s+match\s+match$/);
  assert.match(lines[5]!, /^ {2}config\s+-\s+match$/);
  assert.match(lines[6]!, /^ {2}manifest\s+-\s+match$/);
  assert.equal(lines[7], `reproducible: ${built.stdout.trim()}`, 'the rebuilds are the build');
  assert.deepEqual(await cacheRecords(), records, 'no layer cache record added to the main store');
  assert.deepEqual(await leftovers(), []);

  const quiet = await verify(dir, ['-q']);
  assert.equal(quiet.code, 0, quiet.stderr);
  assert.equal(quiet.stdout, '');
  assert.equal(quiet.stderr, '');
});

test('a RUN line writing the time is not reproducible: verify names the layer, the file and the field', async () => {
  const dir = await specDir('clock', CLOCK);
  const r = await verify(dir);
  assert.equal(r.code, 1, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /^ {2}0\s+ocibuild apt install.*\s+match\s+match$/m);
  assert.match(r.stdout, /^ {2}1\s+RUN \/bin\/sh -c LD_LIBRARY_PATH.*\s+DIFFERS\s+DIFFERS$/m);
  assert.match(r.stdout, /^differences \(build 1 vs build 2\):$/m);
  assert.match(r.stdout, /^layer 1 \(RUN \/bin\/sh -c LD_LIBRARY_PATH=\/opt\/libc \/usr\/local.*\): 1 path differs$/m);
  assert.match(r.stdout, /^ {2}\/stamp: (content \(sha256 [0-9a-f]{16}… vs sha256 [0-9a-f]{16}…\)|.*size)/m);
  assert.doesNotMatch(r.stdout, /\/same:/, 'the file written the same way is not listed');
  assert.match(r.stdout, /^config: sha256:\S+ vs sha256:\S+\n {2}rootfs\.diff_ids\[1\]: /m);
  assert.match(r.stdout, /^manifest: /m);
  assert.match(r.stderr, /not reproducible: build 1 is sha256:[0-9a-f]{64}, build 2 is sha256:[0-9a-f]{64}/);
  assert.match(r.stderr, /hint: .*RUN step/);
  assert.deepEqual(await leftovers(), []);
});

test('an archive as reference is a usage error; without a lockfile verify fails as build --locked does', async () => {
  const dir = await mkdtemp(path.join(tmp, 'unlocked-'));
  await writeFile(path.join(dir, 'image.yaml'), scratchSpec(server.url, repo.keyringPath, ['base-tool']));
  const archive = await verify(dir, ['--against', 'docker-archive:image.tar']);
  assert.equal(archive.code, 2, archive.stderr);
  assert.match(archive.stderr, /--against: verify cannot read docker-archive: references/);
  const r = await verify(dir);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no lockfile/);
  assert.match(r.stderr, /hint: run ocibuild lock/);
  assert.deepEqual(await leftovers(), []);
});

test('--against a layout built earlier passes; the same layout recompressed with gzip -1 differs in compression only', async () => {
  const dir = await specDir('layout', REPRODUCIBLE);
  const layout = path.join(dir, 'image');
  const built = await build(dir, ['-o', `oci:${layout}:v1`]);
  assert.equal(built.code, 0, built.stderr);

  const ok = await verify(dir, ['--against', `oci:${layout}:v1`]);
  assert.equal(ok.code, 0, `${ok.stdout}\n${ok.stderr}`);
  assert.match(ok.stdout, new RegExp(`^linux/amd64 \\(rebuild vs oci:${layout}:v1\\):$`, 'm'));
  assert.match(ok.stdout, new RegExp(`^reproducible: ${built.stdout.trim()}$`, 'm'));
  assert.equal(ok.stderr.match(/running 3 RUN lines/g)?.length, 1, 'one build against a reference');

  const gz1 = path.join(dir, 'gzip1');
  await recompressLayout(layout, gz1, 'v1');
  const r = await verify(dir, ['--against', `oci:${gz1}:v1`]);
  assert.equal(r.code, 1, `${r.stdout}\n${r.stderr}`);
  for (const i of [0, 1, 2]) assert.match(r.stdout, new RegExp(`^ {2}${i}\\s+.*\\s+match\\s+DIFFERS$`, 'm'));
  assert.match(r.stdout, /^ {2}config\s+-\s+match$/m);
  assert.match(r.stdout, /^ {2}manifest\s+-\s+DIFFERS$/m);
  assert.match(r.stdout, /^layer 0 \(ocibuild apt install.*\): same files \(same diffId\), different gzip bytes \(\d+ vs \d+\): the compressor differs \(compression level or implementation\)$/m);
  assert.doesNotMatch(r.stdout, /path(s)? differ/);
  assert.match(r.stdout, /^ {2}layers\[0\]\.digest: /m);
  assert.match(r.stderr, /hint: the layers hold the same files: only their compression differs/);

  // Same layers and config, one more annotation on the reference: the manifest alone differs.
  const annotated = path.join(dir, 'annotated');
  assert.equal((await build(dir, ['-o', `oci:${annotated}:v1`, '--annotation', 'org.example.note=1'])).code, 0);
  const a = await verify(dir, ['--against', `oci:${annotated}:v1`]);
  assert.equal(a.code, 1, `${a.stdout}\n${a.stderr}`);
  assert.match(a.stdout, /^ {2}annotations\["org\.example\.note"\]: \(absent\) vs "1"$/m);
  assert.match(a.stderr, /hint: the layers and configs are identical: only the manifest \(or index\) differs/);
  assert.deepEqual(await leftovers(), []);
});

test('--against a registry image pushed by build --push; a spec on that image as its base verifies', async () => {
  reg = await startRegistry();
  const dir = await specDir('registry', REPRODUCIBLE);
  const ref = `${reg.host}/verify/app:1`;
  const pushed = await build(dir, ['--push', ref]);
  assert.equal(pushed.code, 0, pushed.stderr);

  const r = await verify(dir, ['--against', ref]);
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, new RegExp(`^linux/amd64 \\(rebuild vs ${ref.replace(/[.]/g, '\\.')}\\):$`, 'm'));
  assert.match(r.stdout, new RegExp(`^reproducible: ${pushed.stdout.trim()}$`, 'm'));

  // An image on that one as its base: the base's blobs are linked into the scratch stores.
  const onBase = await mkdtemp(path.join(tmp, 'on-base-'));
  await writeFile(path.join(onBase, 'image.yaml'), [`from: ${ref}`, 'run:', '  - "echo on top > /app/top"', ''].join('\n'));
  const v = await verify(onBase);
  assert.equal(v.code, 0, `${v.stdout}\n${v.stderr}`);
  assert.match(v.stdout, /^ {2}2\s+ocibuild files: \/app\/note\.txt\s+match\s+match$/m, 'the base layers are compared too');
  assert.match(v.stdout, /^ {2}3\s+RUN \/bin\/sh -c echo on top > \/app\/top\s+match\s+match$/m);

  const missing = await verify(dir, ['--against', `${reg.host}/verify/app:nope`]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /manifest not found/);
  assert.deepEqual(await leftovers(), []);
});

/**
 * A copy of the layout at `src` whose gzip layers were decompressed and recompressed
 * by `gzip -1`, with the manifest and index.json rewritten to the new blobs.
 */
async function recompressLayout(src: string, dest: string, tag: string): Promise<void> {
  await cp(src, dest, { recursive: true });
  const blob = (digest: string): string => path.join(dest, 'blobs', 'sha256', digest.slice('sha256:'.length));
  const put = async (bytes: Buffer): Promise<{ digest: string; size: number }> => {
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    await writeFile(blob(digest), bytes);
    return { digest, size: bytes.length };
  };
  const index = JSON.parse(await readFile(path.join(dest, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; size: number; annotations?: Record<string, string> }> };
  const entry = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag)!;
  const manifest = JSON.parse(await readFile(blob(entry.digest), 'utf8')) as { layers: Array<{ mediaType: string; digest: string; size: number }> };
  for (const l of manifest.layers) {
    assert.match(l.mediaType, /gzip/);
    const again = execFileSync('sh', ['-c', 'gunzip -c "$1" | gzip -1 -n', 'recompress', blob(l.digest)], { maxBuffer: 1 << 30 });
    Object.assign(l, await put(again));
  }
  Object.assign(entry, await put(Buffer.from(JSON.stringify(manifest))));
  await writeFile(path.join(dest, 'index.json'), JSON.stringify(index));
}
