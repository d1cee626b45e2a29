// `run:` end to end through the CLI, in the real sandboxes (bwrap and systemd-nspawn,
// as root): the RUN layer is judged against an independent oracle — the same script
// run by chroot on a copy of the image below it — after `umoci unpack` applied the
// layers, and its tar entries (whiteouts, opaque marker, hard link, capability) are
// checked one by one. Then containment, failures, secrets, cache mounts, step cache.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { buildAptRepo, generateTestKey, type FixtureRepo } from '../support/aptrepo.js';
import { CLI, ocibuild, scratchSpec, signalWhen } from '../support/cli.js';
import { serveDirectory, type TestServer } from '../support/http.js';
import { busyboxFiles, captools, type FixturePackage } from '../support/deb.js';

const packages: FixturePackage[] = [
  {
    name: 'base-tool',
    version: '1.0-1',
    files: {
      ...busyboxFiles({ nobody: true }),
      '/etc/shadow': 'root:*:19000:0:99999:7:::\n',
      '/etc/base.conf': 'base\n',
      '/data/old/a': 'a\n',
      '/data/old/b': 'b\n',
      '/data/keep': 'keep\n',
      '/data/gone': 'gone\n',
      '/data/dir-gone/x': 'x\n',
    },
  },
  captools(),
];

// Creates, modifies, deletes files and directories, deletes and recreates one, makes a
// hard link, a setuid file, a file capability, a symlink, and a FIFO.
const SCRIPT = [
  'mkdir -p /srv/new/deep && echo new > /srv/new/deep/file',
  'echo more >> /etc/base.conf',
  'rm /data/gone && rm -r /data/dir-gone',
  'rm -r /data/old && mkdir /data/old && echo fresh > /data/old/c',
  'ln /srv/new/deep/file /srv/new/hardlink',
  'cp /bin/busybox /srv/suid && chmod 4755 /srv/suid',
  'echo capped > /srv/capped && LD_LIBRARY_PATH=/opt/caplib setcap cap_net_bind_service+ep /srv/capped',
  'ln -s ../etc/base.conf /srv/link && mkfifo /srv/fifo',
  'chown 65534:65534 /srv/new/deep/file',
];

let tmp: string;
let repo: FixtureRepo;
let server: TestServer;

before(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'ocibuild-run-'));
  repo = await buildAptRepo(path.join(tmp, 'repo'), [{ name: 'stable', components: { main: packages } }], { key: await generateTestKey() });
  server = await serveDirectory(repo.dir);
});

after(async () => {
  await server?.close();
  await rm(tmp, { recursive: true, force: true });
});

function runSpec(run: string[], extra: string[] = []): string {
  return scratchSpec(server.url, repo.keyringPath, ['base-tool', 'captools'], [...run, ...extra]);
}

function yamlList(key: string, lines: string[], indent = ''): string[] {
  return [`${indent}${key}:`, ...lines.map((l) => `${indent}  - ${JSON.stringify(l)}`)];
}

async function specDir(name: string, body: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmp, `${name}-`));
  await writeFile(path.join(dir, 'image.yaml'), body);
  return dir;
}

interface Built { code: number; stdout: string; stderr: string; layout: string; store: string }

async function build(dir: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<Built> {
  const layout = path.join(dir, 'out');
  const store = path.join(tmp, 'store');
  const r = await ocibuild(['build', '-f', path.join(dir, 'image.yaml'), '-o', `oci:${layout}:latest`, '--cache-dir', store, '--source-date-epoch', '1700000000', ...args], env);
  return { ...r, layout, store };
}

interface Manifest { layers: Array<{ digest: string; mediaType: string }>; config: { digest: string } }

function readManifest(layout: string): Manifest {
  const index = JSON.parse(readFileSync(path.join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
  return JSON.parse(readFileSync(path.join(layout, 'blobs/sha256', index.manifests[0]!.digest.slice(7)), 'utf8')) as Manifest;
}

/** The tar entries of a gzip layer blob: name, type flag, link name, mode, ids, pax records. */
function tarEntries(layout: string, digest: string): Array<{ name: string; type: string; linkname: string; mode: number; uid: number; pax: Record<string, string> }> {
  const data = gunzipSync(readFileSync(path.join(layout, 'blobs/sha256', digest.slice(7))));
  const out: ReturnType<typeof tarEntries> = [];
  let pax: Record<string, string> = {};
  for (let off = 0; off + 512 <= data.length; ) {
    const h = data.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    const str = (a: number, n: number): string => h.subarray(a, a + n).toString('utf8').replace(/\0.*$/s, '');
    const size = parseInt(str(124, 12).trim() || '0', 8);
    const type = String.fromCharCode(h[156]!);
    const body = data.subarray(off + 512, off + 512 + size);
    off += 512 + Math.ceil(size / 512) * 512;
    if (type === 'x') {
      pax = {};
      for (let s = body.toString('latin1'); s.length > 0; ) {
        const sp = s.indexOf(' ');
        const len = Number(s.slice(0, sp));
        const rec = s.slice(sp + 1, len - 1);
        const eq = rec.indexOf('=');
        pax[rec.slice(0, eq)] = rec.slice(eq + 1);
        s = s.slice(len);
      }
      continue;
    }
    const prefix = str(345, 155);
    const name = pax.path ?? (prefix ? `${prefix}/${str(0, 100)}` : str(0, 100));
    out.push({ name: name.replace(/\/$/, ''), type, linkname: pax.linkpath ?? str(157, 100), mode: parseInt(str(100, 8), 8), uid: parseInt(str(108, 8), 8), pax });
    pax = {};
  }
  return out;
}

/** A tree as comparable lines: type, mode, owner, content hash or link target, capability; hard links grouped. */
function describeTree(root: string): string[] {
  const out: string[] = [];
  const inodes = new Map<string, string>();
  const walk = (rel: string): void => {
    const abs = path.join(root, rel);
    const st = lstatSync(abs);
    const mode = (st.mode & 0o7777).toString(8);
    let what: string;
    if (st.isDirectory()) what = 'dir';
    else if (st.isSymbolicLink()) what = `link -> ${readlinkSync(abs)}`;
    else if (st.isFIFO()) what = 'fifo';
    else if (st.isFile()) {
      const first = st.nlink > 1 ? inodes.get(`${st.dev}:${st.ino}`) : undefined;
      if (st.nlink > 1 && !first) inodes.set(`${st.dev}:${st.ino}`, rel);
      const cap = spawnSync('getfattr', ['--absolute-names', '-n', 'security.capability', '-e', 'hex', '--only-values', abs], { encoding: 'buffer' });
      const capHex = cap.status === 0 ? cap.stdout.toString('hex') : '';
      what = `file ${createHash('sha256').update(readFileSync(abs)).digest('hex').slice(0, 16)}${first ? ` =hardlink ${first}` : ''}${capHex ? ` cap ${capHex}` : ''}`;
    } else what = 'other';
    out.push(`/${rel} ${what} ${mode} ${st.uid}:${st.gid}`);
    if (st.isDirectory()) for (const name of readdirSync(abs).sort()) walk(rel ? `${rel}/${name}` : name);
  };
  walk('');
  return out;
}

/** Applies the image's layers with umoci, as a runtime would; returns the rootfs. */
function umociUnpack(layout: string, into: string): string {
  execFileSync('umoci', ['raw', 'unpack', '--image', `${layout}:latest`, into], { stdio: 'pipe' });
  return into;
}

for (const sandbox of ['bwrap', 'nspawn'] as const) {
  test(`RUN layer in ${sandbox}: the entries a chroot running the same script gives`, async () => {
    const dir = await specDir(`tree-${sandbox}`, runSpec(yamlList('run', SCRIPT), [`sandbox: ${sandbox}`]));
    const r = await build(dir);
    assert.equal(r.code, 0, r.stderr);
    const manifest = readManifest(r.layout);
    assert.equal(manifest.layers.length, 2, 'apt layer + run layer');

    // The oracle: the image without its RUN layer, unpacked, and the script run by chroot.
    const below = await specDir(`below-${sandbox}`, runSpec([]));
    const b = await build(below);
    assert.equal(b.code, 0, b.stderr);
    const expected = umociUnpack(b.layout, path.join(below, 'rootfs'));
    execFileSync('unshare', ['--mount', '--fork', 'chroot', expected, '/bin/sh', '-c', ['set -e', 'umask 0022', ...SCRIPT].join('\n')], { stdio: 'pipe' });
    const got = umociUnpack(r.layout, path.join(dir, 'rootfs'));
    const strip = (lines: string[]): string[] => lines.filter((l) => !/^\/(proc|sys|dev|run|tmp)[ /]/.test(l));
    assert.deepEqual(strip(describeTree(got)), strip(describeTree(expected)));

    // The layer itself: exactly what changed, deletions as whiteouts, the recreated
    // directory opaque, the hard link as a link, setuid and the capability kept.
    const entries = tarEntries(r.layout, manifest.layers[1]!.digest);
    const names = entries.map((e) => e.name);
    assert.ok(names.includes('data/.wh.gone'), names.join('\n'));
    assert.ok(names.includes('data/.wh.dir-gone'), names.join('\n'));
    assert.ok(names.includes('data/old/.wh..wh..opq'), names.join('\n'));
    assert.ok(names.includes('data/old/c'));
    assert.ok(!names.includes('data/keep'), 'an unchanged file is not in the layer');
    assert.ok(!names.some((n) => /^(proc|sys|dev|run|tmp)(\/|$)/.test(n)), 'no sandbox mount point in the layer');
    const link = entries.find((e) => e.name === 'srv/new/hardlink' || e.name === 'srv/new/deep/file');
    assert.ok(link);
    assert.ok(entries.some((e) => e.type === '1'), 'a hard link entry');
    assert.equal(entries.find((e) => e.name === 'srv/suid')!.mode, 0o4755);
    assert.ok(entries.find((e) => e.name === 'srv/capped')!.pax['SCHILY.xattr.security.capability'] !== undefined, 'capability xattr');
    assert.ok(!Object.keys(entries.find((e) => e.name === 'data/old')!.pax).some((k) => k.includes('overlay')), 'no overlay xattrs');
  });
}

test('a failing RUN line fails the build with its exit code and output, and writes no output', async () => {
  const dir = await specDir('fail', runSpec(yamlList('run', ['echo before', 'echo to-stderr >&2', 'exit 7', 'echo never'])));
  const r = await build(dir);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /RUN failed with exit code 7/);
  assert.match(r.stderr, /to-stderr/);
  assert.doesNotMatch(r.stderr, /never/);
  assert.match(r.stderr, /image\.yaml:\d+:\d+/);
  await assert.rejects(readdir(r.layout), { code: 'ENOENT' });
  assert.deepEqual(await leftovers(r.store), []);
});

test('a platform whose programs cannot run here fails before anything is locked or built', async () => {
  const dir = await specDir('foreign', runSpec(yamlList('run', ['echo hi'])));
  // s390x: no binfmt_misc handler on the test machines (none is registered by the tests).
  const r = await build(dir, ['--platform', 'linux/amd64,linux/s390x']);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /cannot run linux\/s390x programs on this amd64 host: no binfmt_misc handler for s390x \(qemu-s390x\)/);
  assert.match(r.stderr, /hint: install qemu-user-static/);
  assert.doesNotMatch(r.stderr, /resolving|running \d+ RUN line/, 'the amd64 image is not built first');
});

test('containment: no host files, no network unless asked, nothing left on the host; /etc/hosts names the sandbox', async () => {
  const hostFile = path.join(tmp, 'host-only-file');
  await writeFile(hostFile, 'host\n');
  const probe = [
    `if [ -e ${hostFile} ]; then echo HOST-VISIBLE; exit 1; fi`,
    `if wget -q -O /dev/null ${server.url}/dists/stable/Release; then echo NET; else echo NO-NET; fi`,
    'echo "$(hostname) $(id -u) $SOURCE_DATE_EPOCH" > /probe',
    // The step's own /etc/hosts: the hostname resolves; writes to it are dropped.
    'grep -q "^127.0.1.1.ocibuild$" /etc/hosts && echo HOSTS-OK && echo "10.9.9.9 extra" >> /etc/hosts',
  ];
  const off = await build(await specDir('contain', runSpec(yamlList('run', probe))));
  assert.equal(off.code, 0, off.stderr);
  assert.match(off.stderr, /\| NO-NET/);
  assert.doesNotMatch(off.stderr, /HOST-VISIBLE/);
  const on = await build(await specDir('contain-net', runSpec(['run:', '  network: true', ...yamlList('commands', probe, '  ')])));
  assert.equal(on.code, 0, on.stderr);
  assert.match(on.stderr, /\| NET/);
  const rootfs = umociUnpack(off.layout, path.join(tmp, 'contain-rootfs'));
  assert.equal(readFileSync(path.join(rootfs, 'probe'), 'utf8'), 'ocibuild 0 1700000000\n');
  assert.match(off.stderr, /\| HOSTS-OK/);
  assert.ok(!existsSync(path.join(rootfs, 'etc/hosts')), 'the step\'s /etc/hosts is in no layer');
  assert.deepEqual(await leftovers(off.store), []);
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8');
  assert.ok(!mounts.includes(off.store), `mounts left under the store:\n${mounts}`);
});

test('secrets are readable at /run/secrets and in no layer, cache record or output', async () => {
  const fileSecret = path.join(tmp, 'netrc');
  await writeFile(fileSecret, 'FILE-SECRET-4711\n');
  const spec = runSpec([
    'run:',
    ...yamlList('commands', ['wc -c < /run/secrets/netrc > /netrc-size', 'wc -c < /run/secrets/token > /token-size'], '  '),
    '  secrets:',
    `    - {id: netrc, src: ${fileSecret}}`,
    '    - {id: token, env: OCIBUILD_TEST_TOKEN}',
  ]);
  const dir = await specDir('secret', spec);
  const missing = await build(dir);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /secret token: the environment variable OCIBUILD_TEST_TOKEN is not set/);
  const r = await build(dir, [], { OCIBUILD_TEST_TOKEN: 'ENV-SECRET-0815' });
  assert.equal(r.code, 0, r.stderr);
  for (const l of readManifest(r.layout).layers) {
    const tar = gunzipSync(readFileSync(path.join(r.layout, 'blobs/sha256', l.digest.slice(7))));
    assert.ok(!tar.includes('SECRET'), `a secret reached layer ${l.digest}`);
    assert.ok(!tarEntries(r.layout, l.digest).some((e) => e.name.startsWith('run')), 'no /run in a layer');
  }
  const rootfs = umociUnpack(r.layout, path.join(dir, 'rootfs'));
  assert.equal(readFileSync(path.join(rootfs, 'netrc-size'), 'utf8').trim(), '17');
  assert.equal(readFileSync(path.join(rootfs, 'token-size'), 'utf8').trim(), '15');
  const grep = spawnSync('grep', ['-r', '-l', 'SECRET-', r.store, r.layout]);
  assert.equal(grep.stdout.toString(), '', 'no file of the store or output holds a secret');
});

test('cache mounts persist between builds and stay out of the layer; an unchanged step comes from the cache', async () => {
  const lines = (n: number): string[] => ['echo run >> /var/cache/tool/count', `echo ${n} > /result`, 'wc -l < /var/cache/tool/count > /seen'];
  const spec = (n: number): string => runSpec(['run:', ...yamlList('commands', lines(n), '  '), '  cache: [/var/cache/tool]']);
  const dir = await specDir('cache', spec(1));
  const first = await build(dir);
  assert.equal(first.code, 0, first.stderr);
  const again = await build(dir);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, /run layer: unchanged, from the layer cache/);
  assert.equal(again.stdout, first.stdout, 'same digest');
  await writeFile(path.join(dir, 'image.yaml'), spec(2));
  const changed = await build(dir);
  assert.equal(changed.code, 0, changed.stderr);
  assert.match(changed.stderr, /apt layer: unchanged, from the layer cache/);
  const rootfs = umociUnpack(changed.layout, path.join(dir, 'rootfs'));
  assert.equal(readFileSync(path.join(rootfs, 'seen'), 'utf8').trim(), '2', 'the cache kept the first run\'s line');
  const m = readManifest(changed.layout);
  assert.ok(!tarEntries(changed.layout, m.layers[1]!.digest).some((e) => e.name.startsWith('var/cache/tool/')), 'cache contents are not in the layer');
});

test('the same spec built in two empty stores gives the same digest', async () => {
  const body = runSpec(yamlList('run', ['mkdir -p /app && echo hi > /app/hello', 'ln -s hello /app/link']));
  const a = await build(await specDir('repro-a', body), ['--cache-dir', path.join(tmp, 'store-a')]);
  const b = await build(await specDir('repro-b', body), ['--cache-dir', path.join(tmp, 'store-b')]);
  assert.equal(a.code, 0, a.stderr);
  assert.equal(b.code, 0, b.stderr);
  assert.equal(a.stdout, b.stdout);
});

/** Files left in the store's scratch area (everything a build makes there is removed). */
async function leftovers(store: string): Promise<string[]> {
  const dir = path.join(store, 'tmp');
  return (await readdir(dir).catch(() => [] as string[])).filter((n) => !n.startsWith('.'));
}


test('a workdir the image lacks is made for the step\'s user, so a non-root step can write there', async () => {
  const dir = await specDir('workdir-user', runSpec(['run:', '  user: "1234:1234"', '  workdir: /work/here', '  commands: ["touch made"]']));
  const r = await build(dir);
  assert.equal(r.code, 0, r.stderr);
  const manifest = readManifest(r.layout);
  const entries = tarEntries(r.layout, manifest.layers[1]!.digest);
  const made = entries.find((e) => e.name === 'work/here/made');
  const here = entries.find((e) => e.name.replace(/\/$/, '') === 'work/here');
  assert.equal(made?.uid, 1234, JSON.stringify(entries.map((e) => [e.name, e.uid])));
  assert.equal(here?.uid, 1234, 'the directory is the user\'s');
});

for (const [signal, code, word] of [['SIGTERM', 143, 'terminated'], ['SIGINT', 130, 'interrupted']] as const) {
  test(`${signal} during a RUN step: exit ${code}, the sandbox gone, no output, nothing left in the store's scratch area`, async () => {
    const dir = await specDir(`signal-${signal}`, runSpec(yamlList('run', ['echo started', 'sleep 60', 'echo never'])));
    const store = path.join(dir, 'store');
    const layout = path.join(dir, 'out');
    const child = spawn(CLI, ['build', '-f', path.join(dir, 'image.yaml'), '-o', `oci:${layout}:latest`, '--cache-dir', store], { stdio: ['ignore', 'pipe', 'pipe'] });
    const { code: exitCode, stderr } = await signalWhen(child, '| started', signal);
    assert.equal(exitCode, code, stderr);
    assert.match(stderr, new RegExp(`ocibuild: ${word}`));
    assert.doesNotMatch(stderr, /never/);
    assert.equal(existsSync(layout), false, 'no output');
    assert.deepEqual(await leftovers(store), []);
    const sleeping = spawnSync('pgrep', ['-f', 'sleep 60']);
    assert.notEqual(sleeping.status, 0, `a sandboxed process survived: ${sleeping.stdout.toString()}`);
  });
}

test('an image without /bin/sh: the RUN step says so before the sandbox starts', async () => {
  const dir = await specDir('no-shell', scratchSpec(server.url, repo.keyringPath, ['captools'], yamlList('run', ['true'])));
  const r = await build(dir);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /the image has no \/bin\/sh to run the RUN lines with/);
  assert.match(r.stderr, /image\.yaml:\d+:\d+/);
});

test('RUN output is shown line by line, a last line without a newline too', async () => {
  const dir = await specDir('output', runSpec(yamlList('run', ['echo first', 'printf "last without newline"'])));
  const r = await build(dir);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /^ {2}\| first\n {2}\| last without newline\n/m);
});
