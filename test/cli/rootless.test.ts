// A whole build without root: an unprivileged user with subordinate ids runs
// `ocibuild build` of a spec whose RUN step chowns, makes setuid and capability files,
// hard links, FIFOs, deletes and recreates directories, and whose second spec runs a
// step as another user. The CLI re-runs itself as root of a user namespace
// (src/cli/rootless.ts). Judged against the same builds run as root (test/cli/run.test.ts
// judges those against a chroot oracle): the same manifest digests, byte for byte.
// Also: the store's trees really carry the subordinate ids on the host, `cache prune`
// run by the user removes them, and without the namespace the error says what to set up.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, lstatSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { isInitialUserNamespace } from '../../src/sandbox/privilege.js';
import { detectSandbox } from '../../src/sandbox/detect.js';
import { subordinateRange } from '../../src/cli/rootless.js';
import { rootlessUser, SUB_START, type RootlessUser } from '../support/rootless-user.js';
import { buildAptRepo, generateTestKey, type FixtureRepo } from '../support/aptrepo.js';
import { ocibuild, scratchSpec, signalWhen } from '../support/cli.js';
import { serveDirectory, type TestServer } from '../support/http.js';
import { busyboxFiles, captools, type FixturePackage } from '../support/deb.js';
import { ageStore } from '../support/age-store.js';

const packages: FixturePackage[] = [
  {
    name: 'base-tool',
    version: '1.0-1',
    files: {
      ...busyboxFiles({ nobody: true }),
      '/var/lib/nobody': { dir: true, mode: 0o755 },
      '/var/lib/nobody/owned': { content: 'nobody\n', uid: 65534, gid: 65534 },
      '/data/old/a': 'a\n',
      '/data/gone': 'gone\n',
    },
  },
  captools(),
];

const SCRIPT = [
  'mkdir -p /srv/new && echo new > /srv/new/file && ln /srv/new/file /srv/new/hardlink',
  'rm /data/gone && rm -r /data/old && mkdir /data/old && echo fresh > /data/old/c',
  'cp /bin/busybox /srv/suid && chmod 4755 /srv/suid',
  'echo capped > /srv/capped && LD_LIBRARY_PATH=/opt/caplib setcap cap_net_bind_service+ep /srv/capped',
  'mkfifo /srv/fifo && chown 65534:65534 /srv/new/file && chown 123:456 /srv/capped',
];

let tmp: string;
let repo: FixtureRepo;
let server: TestServer;
let user: RootlessUser;

before(async () => {
  assert.equal(process.getuid?.(), 0, 'this test sets up a user with subordinate ids: it runs as root');
  tmp = await mkdtemp(path.join(tmpdir(), 'ocibuild-rootless-'));
  chmodSync(tmp, 0o755);
  user = await rootlessUser(tmp);
  repo = await buildAptRepo(path.join(tmp, 'repo'), [{ name: 'stable', components: { main: packages } }], { key: await generateTestKey() });
  execFileSync('chmod', ['-R', 'a+rX', repo.dir]);
  server = await serveDirectory(repo.dir);
});

after(async () => {
  await server?.close();
  // The user's store holds files of its subordinate ids: root removes them.
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

function userDir(name: string): Promise<string> {
  return user.dir(path.join(tmp, name));
}

function spec(run: string[]): string {
  return scratchSpec(server.url, repo.keyringPath, ['base-tool', 'captools'], run);
}

function manifestDigest(layout: string): string {
  return (JSON.parse(readFileSync(path.join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> }).manifests[0]!.digest;
}

/** Every (uid, gid) owning something under `dir`, as the host sees it. */
function owners(dir: string): Set<string> {
  const out = new Set<string>();
  const walk = (p: string): void => {
    const st = lstatSync(p);
    out.add(`${st.uid}:${st.gid}`);
    if (st.isDirectory()) for (const n of readdirSync(p)) walk(path.join(p, n));
  };
  walk(dir);
  return out;
}

const SPECS: Array<[string, string[]]> = [
  ['root-script', ['run:', ...SCRIPT.map((l) => `  - ${JSON.stringify(l)}`)]],
  ['as-nobody', ['run:', '  user: nobody', '  commands:', '    - "id -u >> /var/lib/nobody/owned && touch /tmp/scratch"']],
];

for (const [name, run] of SPECS) {
  test(`rootless build (${name}): the same image as root builds`, async () => {
    const dir = await userDir(`spec-${name}`);
    await writeFile(path.join(dir, 'image.yaml'), spec(run));
    // Locked by root first, so that both builds read the same lockfile.
    const common = ['-f', path.join(dir, 'image.yaml'), '--source-date-epoch', '1700000000'];
    const lock = await ocibuild(['lock', '-f', path.join(dir, 'image.yaml'), '--cache-dir', path.join(tmp, 'store-root')]);
    assert.equal(lock.code, 0, lock.stderr);
    execFileSync('chmod', ['-R', 'a+rX', dir]);

    const asRoot = await ocibuild(['build', ...common, '--locked', '-o', `oci:${path.join(tmp, `out-root-${name}`)}:latest`, '--cache-dir', path.join(tmp, 'store-root')]);
    assert.equal(asRoot.code, 0, asRoot.stderr);

    const store = await userDir('store-user');
    const out = path.join(await userDir(`out-user-${name}`), 'layout');
    const asUser1 = await user.ocibuild(['build', ...common, '--locked', '-o', `oci:${out}:latest`, '--cache-dir', store]);
    assert.equal(asUser1.code, 0, asUser1.stderr);
    assert.doesNotMatch(asUser1.stderr, /warning/);
    assert.equal(manifestDigest(out), manifestDigest(path.join(tmp, `out-root-${name}`)));
    // What the user wrote belongs to the user on the host.
    const st = lstatSync(path.join(out, 'index.json'));
    assert.deepEqual([st.uid, st.gid], [user.uid, user.gid]);
  });
}

test('rootless: SIGINT to the CLI\'s own pid (not its process group) stops the build; nothing runs on, nothing is left', async () => {
  const dir = await userDir('spec-sigint');
  await writeFile(path.join(dir, 'image.yaml'), spec(['run:', '  - echo started', '  - sleep 61', '  - echo never']));
  execFileSync('chmod', ['-R', 'a+rX', dir]);
  const store = await userDir('store-sigint');
  const child = user.spawn(['build', '-f', path.join(dir, 'image.yaml'), '-o', `oci:${path.join(await userDir('out-sigint'), 'layout')}:latest`, '--cache-dir', store]);
  const { code, stderr } = await signalWhen(child, '| started', 'SIGINT');
  assert.equal(code, 130, stderr);
  assert.match(stderr, /ocibuild: interrupted/);
  assert.doesNotMatch(stderr, /never/);
  const sleeping = spawnSync('pgrep', ['-f', 'sleep 61']);
  assert.notEqual(sleeping.status, 0, `a sandboxed process survived: ${sleeping.stdout.toString()}`);
  assert.deepEqual(readdirSync(path.join(store, 'tmp')).filter((n) => !n.startsWith('.')), []);
});

test('rootless store: the trees carry subordinate ids on the host; ocibuild cache prune run by the user removes them', async () => {
  const store = path.join(tmp, 'store-user');
  const trees = readdirSync(path.join(store, 'rootfs')).filter((n) => !n.startsWith('.'));
  assert.ok(trees.length > 0, 'the builds above left rootfs trees');
  const seen = new Set<string>();
  for (const t of trees) for (const o of owners(path.join(store, 'rootfs', t))) seen.add(o);
  // root (0) in the namespace is the user; nobody (65534) is subordinate id 65533.
  assert.ok(seen.has(`${user.uid}:${user.gid}`), [...seen].join(' '));
  const nobody = SUB_START + 65534 - 1;
  assert.ok(seen.has(`${nobody}:${nobody}`), [...seen].join(' '));
  // ocibuild cache prune runs in the same namespace, as their owner's root.
  await ageStore(store);
  const prune = await user.ocibuild(['cache', 'prune', '--all', '--cache-dir', store]);
  assert.equal(prune.code, 0, prune.stderr);
  assert.deepEqual(readdirSync(path.join(store, 'rootfs')).filter((n) => !n.startsWith('.')), [], prune.stdout + prune.stderr);
});

test('without the user namespace (OCIBUILD_ROOTLESS=0) a RUN build fails saying what to set up', async () => {
  const dir = await userDir('spec-norootless');
  await writeFile(path.join(dir, 'image.yaml'), spec(['run:', '  - "true"']));
  const store = await userDir('store-norootless');
  const r = await user.ocibuild(['build', '-f', path.join(dir, 'image.yaml'), '-o', `oci:${path.join(dir, 'out')}:latest`, '--cache-dir', store], { OCIBUILD_ROOTLESS: '0' });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /needs root: run ocibuild as root, or give your user subordinate ids/);
  assert.match(r.stderr, /usermod --add-subuids/);
  assert.ok(!readdirSync(dir).includes('out'), 'no output left behind');
});

test('subordinateRange reads subuid(5) lines by name or id', () => {
  const text = 'alice:100000:65536\n# comment\nbad line\n1001:200000:1000\nbob:300000:0\n';
  assert.deepEqual(subordinateRange(text, { name: 'alice', id: 5 }), { start: 100000, count: 65536 });
  assert.deepEqual(subordinateRange(text, { name: 'carol', id: 1001 }), { start: 200000, count: 1000 });
  assert.equal(subordinateRange(text, { name: 'bob', id: 7 }), undefined, 'an empty range is none');
  assert.equal(subordinateRange('', { name: 'alice', id: 5 }), undefined);
});

test('the initial user namespace is told from a rootless one by uid_map', async () => {
  assert.ok(isInitialUserNamespace('         0          0 4294967295\n'));
  assert.ok(!isInitialUserNamespace('         0       1001          1\n         1     100000      65535\n'));
  assert.ok(!isInitialUserNamespace('         0          0          1\n'));
  // Root of a user namespace: bwrap with userxattr overlays; nspawn is refused with a reason.
  const deps = {
    uid: 0,
    namespaced: true,
    which: async (n: string) => (['bwrap', 'unshare', 'nsenter', 'mount', 'systemd-nspawn', 'setpriv', 'true'].includes(n) ? `/usr/bin/${n}` : undefined),
    readSysctl: async () => undefined,
    trial: async () => ({ code: 0, output: '' }),
  };
  assert.deepEqual(await detectSandbox('auto', deps), { kind: 'bwrap', root: true, namespaced: true });
  await assert.rejects(detectSandbox('nspawn', deps), /systemd-nspawn needs the machine's root/);
});
