// `from: REF` end to end: a base image built by ocibuild and pushed to a real
// docker-registry, then an image on top of it — locked against the base's dpkg status,
// its layers reused as they are, its config inherited — pushed with --push.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildAptRepo, generateTestKey, type FixtureRepo } from '../support/aptrepo.js';
import { ocibuild } from '../support/cli.js';
import { serveDirectory, type TestServer } from '../support/http.js';
import type { FixturePackage } from '../support/deb.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';
import { run } from '../oci/support.js';

const busybox = readFileSync('/bin/busybox');
const packages: FixturePackage[] = [
  { name: 'base-tool', version: '1.0-1', files: { '/bin/busybox': { content: busybox, mode: 0o755 }, '/bin/sh': { symlink: 'busybox' }, '/etc/base.conf': 'base\n' } },
  { name: 'app', version: '2.0-1', depends: 'base-tool (>= 1.0), app-data', files: { '/usr/bin/app': { content: '#!/bin/sh\necho app\n', mode: 0o755 } } },
  { name: 'app-data', version: '2.0-1', arch: 'all', files: { '/usr/share/app/data': 'data\n' } },
];

let tmp: string;
let repo: FixtureRepo;
let server: TestServer;
let reg: TestRegistry;
let env: NodeJS.ProcessEnv;

before(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'ocibuild-base-'));
  const key = await generateTestKey();
  repo = await buildAptRepo(path.join(tmp, 'repo'), [{ name: 'stable', components: { main: packages } }], { key });
  server = await serveDirectory(repo.dir);
  reg = await startRegistry();
  // No docker/podman credentials of this machine.
  env = { HOME: tmp, DOCKER_CONFIG: path.join(tmp, 'docker'), XDG_RUNTIME_DIR: path.join(tmp, 'run') };
});

after(async () => {
  await reg?.stop();
  await server?.close();
  await rm(tmp, { recursive: true, force: true });
});

function specText(from: string, pkgs: string[], config: string[]): string {
  return [
    `from: ${from}`,
    'apt:',
    '  sources:',
    `    - url: ${server.url}`,
    '      suites: [stable]',
    '      components: [main]',
    `      keyring: ${repo.keyringPath}`,
    `  packages: [${pkgs.join(', ')}]`,
    '  install: unpack',
    'config:',
    ...config,
    '',
  ].join('\n');
}

async function specDir(name: string, body: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmp, `${name}-`));
  await writeFile(path.join(dir, 'image.yaml'), body);
  return dir;
}

interface Manifest { layers: Array<{ digest: string; mediaType: string }>; annotations?: Record<string, string> }
interface Config { config: { Env?: string[]; Entrypoint?: string[]; Cmd?: string[]; Labels?: Record<string, string>; WorkingDir?: string }; history: Array<{ created_by?: string }>; rootfs: { diff_ids: string[] } }

async function readLayout(dir: string): Promise<{ manifest: Manifest; config: Config; digest: string }> {
  const index = JSON.parse(await readFile(path.join(dir, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
  const digest = index.manifests[0]!.digest;
  const blob = (d: string): Promise<string> => readFile(path.join(dir, 'blobs', 'sha256', d.slice(7)), 'utf8');
  const manifest = JSON.parse(await blob(digest)) as Manifest & { config: { digest: string } };
  const config = JSON.parse(await blob(manifest.config.digest)) as Config;
  return { manifest, config, digest };
}

test('from: a registry image: base layers reused, only new packages locked, status merged, config inherited, pushed with mounts', async () => {
  // 1. The base: from scratch, pushed by ocibuild build --push.
  const baseDir = await specDir('base', specText('scratch', ['base-tool'], [
    '  env: {BASE_VAR: "1", LANG: C.UTF-8}',
    '  cmd: [/bin/sh]',
    '  labels: {org.example.base: "yes"}',
    '  workdir: /srv',
  ]));
  const cache = path.join(tmp, 'cache');
  const baseRef = `${reg.host}/library/base:1`;
  const b = await ocibuild(['build', '-f', path.join(baseDir, 'image.yaml'), '--push', baseRef, '--cache-dir', cache, '-q'], env);
  assert.equal(b.code, 0, b.stderr);
  const baseDigest = b.stdout.trim();

  // 2. An image on top of it.
  const appDir = await specDir('app', specText(baseRef, ['app'], ['  env: {APP: "2", LANG: en_US.UTF-8}', '  entrypoint: [/usr/bin/app]', '  labels: {org.example.app: "yes"}']));
  const lock = await ocibuild(['lock', '-f', path.join(appDir, 'image.yaml'), '--cache-dir', cache, '-q'], env);
  assert.equal(lock.code, 0, lock.stderr);
  const lockText = await readFile(path.join(appDir, 'Packages-stable-amd64.lock'), 'utf8');
  assert.match(lockText, /^Package: app$/m);
  assert.match(lockText, /^Package: app-data$/m);
  assert.doesNotMatch(lockText, /^Package: base-tool$/m, 'the base has it: not locked again');

  const out = path.join(appDir, 'out');
  const meta = path.join(appDir, 'push.json');
  const appRef = `${reg.host}/team/app:2`;
  const a = await ocibuild(['build', '-f', path.join(appDir, 'image.yaml'), '--locked', '-o', `oci:${out}:app`, '--push', appRef, '--metadata-file', meta, '--cache-dir', cache, '-q'], env);
  assert.equal(a.code, 0, a.stderr);
  const digest = a.stdout.trim();

  const base = await readLayout(await pullLayout(baseRef));
  const app = await readLayout(out);
  assert.equal(app.digest, digest);
  assert.equal(base.digest, baseDigest);
  assert.deepEqual(app.manifest.layers.slice(0, base.manifest.layers.length), base.manifest.layers, 'base layers as they are');
  assert.equal(app.manifest.layers.length, base.manifest.layers.length + 1);
  assert.equal(app.config.rootfs.diff_ids.length, app.manifest.layers.length);
  assert.equal(app.config.history.length, app.manifest.layers.length);
  assert.equal(app.manifest.annotations?.['org.opencontainers.image.base.name'], `${reg.host}/library/base:1`);
  assert.equal(app.manifest.annotations?.['org.opencontainers.image.base.digest'], baseDigest);

  const c = app.config.config;
  assert.ok(c.Env?.includes('BASE_VAR=1') && c.Env.includes('APP=2') && c.Env.includes('LANG=en_US.UTF-8'), String(c.Env));
  assert.ok(!c.Env?.includes('LANG=C.UTF-8'));
  assert.deepEqual(c.Entrypoint, ['/usr/bin/app']);
  assert.equal(c.Cmd, undefined, 'a new entrypoint drops the base cmd');
  assert.equal(c.WorkingDir, '/srv');
  assert.deepEqual(c.Labels, { 'org.example.base': 'yes', 'org.example.app': 'yes' });

  // The registry has what the layout has; the base layer was mounted, not uploaded.
  const raw = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${appRef}`]);
  assert.equal(`sha256:${createHash('sha256').update(raw.stdout).digest('hex')}`, digest);
  const pushed = JSON.parse(await readFile(meta, 'utf8')) as { digest: string; pushed: Array<{ mounted: number; uploaded: number }> };
  assert.equal(pushed.digest, digest);
  assert.equal(pushed.pushed[0]?.mounted, base.manifest.layers.length);

  // dpkg sees the base's package and the new ones as installed.
  const bundle = path.join(appDir, 'bundle');
  await run('umoci', ['unpack', '--rootless', '--image', `${out}:app`, bundle]);
  const q = await run('dpkg-query', [`--admindir=${path.join(bundle, 'rootfs/var/lib/dpkg')}`, '-W', '-f', '${Package} ${Version} ${Status}\n']);
  assert.deepEqual(q.stdout.trim().split('\n').sort(), ['app 2.0-1 install ok installed', 'app-data 2.0-1 install ok installed', 'base-tool 1.0-1 install ok installed']);
  assert.equal(await readFile(path.join(bundle, 'rootfs/etc/base.conf'), 'utf8'), 'base\n');
});

test('--username/--password-stdin are for the push registry only: the base registry gets its config-file credentials, never those', async () => {
  const baseReg = await startRegistry({ auth: 'htpasswd', users: { alice: 'alice-base-pw' } });
  const pushReg = await startRegistry({ auth: 'htpasswd', users: { bob: 'bob-push-pw' } });
  try {
    const home = await mkdtemp(path.join(tmp, 'scoped-creds-'));
    const dockerConfig = path.join(home, 'docker');
    await mkdir(dockerConfig, { recursive: true });
    const alice = Buffer.from('alice:alice-base-pw').toString('base64');
    await writeFile(path.join(dockerConfig, 'config.json'), JSON.stringify({ auths: { [baseReg.host]: { auth: alice } } }));
    const scopedEnv = { HOME: home, DOCKER_CONFIG: dockerConfig, XDG_RUNTIME_DIR: path.join(home, 'run') };
    const cache = path.join(home, 'cache');

    const baseRef = `${baseReg.host}/library/base:1`;
    const baseDir = await specDir('scoped-base', specText('scratch', ['base-tool'], ['  cmd: [/bin/sh]']));
    const b = await ocibuild(['build', '-f', path.join(baseDir, 'image.yaml'), '--push', baseRef, '--cache-dir', cache, '-q'], scopedEnv);
    assert.equal(b.code, 0, b.stderr);

    const appDir = await specDir('scoped-app', specText(baseRef, ['app'], ['  entrypoint: [/usr/bin/app]']));
    const appRef = `${pushReg.host}/team/app:1`;
    const a = await ocibuild(['build', '-f', path.join(appDir, 'image.yaml'), '--push', appRef, '--username', 'bob', '--password-stdin', '--cache-dir', cache, '-q'], scopedEnv, 'bob-push-pw\n');
    assert.equal(a.code, 0, a.stderr);
    assert.doesNotMatch(baseReg.logs(), /bob/, "the push registry's user never reaches the base registry");
    assert.match(baseReg.logs(), /alice/, 'the base registry got its own credentials');

    // Several registries for one --username: refused before anything is sent.
    const two = await ocibuild(['build', '-f', path.join(appDir, 'image.yaml'), '--push', `${appRef},${baseReg.host}/team/app:1`, '--username', 'bob', '--password-stdin', '--cache-dir', cache], scopedEnv, 'bob-push-pw\n');
    assert.equal(two.code, 2, two.stderr);
    assert.match(two.stderr, /--username is for one registry/);

    // A wrong password is reported as refused credentials, with where they came from.
    const out = path.join(appDir, 'out');
    assert.equal((await ocibuild(['build', '-f', path.join(appDir, 'image.yaml'), '-o', `oci:${out}:x`, '--cache-dir', cache, '-q'], scopedEnv)).code, 0);
    const refused = await ocibuild(['push', `oci:${out}:x`, `${pushReg.host}/team/app:2`, '--username', 'bob', '--password-stdin'], scopedEnv, 'not-the-password\n');
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /refused the credentials from the command line/);
    assert.doesNotMatch(refused.stderr, /not-the-password/);
  } finally {
    await baseReg.stop();
    await pushReg.stop();
  }
});

test('from: a Docker schema2 base: its layers keep bytes and digests, listed under OCI types in the OCI manifest; umoci and skopeo read the image', async () => {
  const cache = path.join(tmp, 'cache-v2s2');
  const ociRef = `${reg.host}/library/base-oci:1`;
  const baseDir = await specDir('v2s2-base', specText('scratch', ['base-tool'], ['  cmd: [/bin/sh]']));
  const b = await ocibuild(['build', '-f', path.join(baseDir, 'image.yaml'), '--push', ociRef, '--cache-dir', cache, '-q'], env);
  assert.equal(b.code, 0, b.stderr);
  const dockerRef = `${reg.host}/library/base-docker:1`;
  await run('skopeo', ['copy', '-q', '--format', 'v2s2', '--src-tls-verify=false', '--dest-tls-verify=false', `docker://${ociRef}`, `docker://${dockerRef}`]);
  const raw = JSON.parse((await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${dockerRef}`])).stdout) as { mediaType: string; layers: Array<{ mediaType: string; digest: string }> };
  assert.equal(raw.mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
  assert.equal(raw.layers[0]?.mediaType, 'application/vnd.docker.image.rootfs.diff.tar.gzip');

  const appDir = await specDir('v2s2-app', specText(dockerRef, ['app'], ['  entrypoint: [/usr/bin/app]']));
  const out = path.join(appDir, 'out');
  const a = await ocibuild(['build', '-f', path.join(appDir, 'image.yaml'), '-o', `oci:${out}:app`, '--cache-dir', cache, '-q'], env);
  assert.equal(a.code, 0, a.stderr);
  const app = await readLayout(out);
  const layers = app.manifest.layers;
  assert.deepEqual(layers.map((l) => l.mediaType), layers.map(() => 'application/vnd.oci.image.layer.v1.tar+gzip'));
  assert.deepEqual(layers.slice(0, raw.layers.length).map((l) => l.digest), raw.layers.map((l) => l.digest), 'the base layers as they are');
  await run('umoci', ['unpack', '--rootless', '--image', `${out}:app`, path.join(appDir, 'bundle')]);
  assert.equal(await readFile(path.join(appDir, 'bundle/rootfs/etc/base.conf'), 'utf8'), 'base\n');
  await run('skopeo', ['copy', '-q', `oci:${out}:app`, `docker-archive:${path.join(appDir, 'app.tar')}:team/app:1`]);
});

test('a base tag moved to another image: the lock is stale, and the message says the base changed, not the spec', async () => {
  const cache = path.join(tmp, 'cache-moved');
  const baseRef = `${reg.host}/library/moving:1`;
  const push = async (pkgs: string[]): Promise<void> => {
    const dir = await specDir('moving-base', specText('scratch', pkgs, ['  cmd: [/bin/sh]']));
    const b = await ocibuild(['build', '-f', path.join(dir, 'image.yaml'), '--push', baseRef, '--cache-dir', cache, '-q'], env);
    assert.equal(b.code, 0, b.stderr);
  };
  await push(['base-tool']);
  const appDir = await specDir('moving-app', specText(baseRef, ['app'], ['  entrypoint: [/usr/bin/app]']));
  const lock = await ocibuild(['lock', '-f', path.join(appDir, 'image.yaml'), '--cache-dir', cache, '-q'], env);
  assert.equal(lock.code, 0, lock.stderr);
  assert.match(await readFile(path.join(appDir, 'Packages-stable-amd64.lock'), 'utf8'), /^Base-Status-Digest: sha256:[0-9a-f]{64}$/m);

  await push(['base-tool', 'app-data']);
  const check = await ocibuild(['lock', '--check', '-f', path.join(appDir, 'image.yaml'), '--cache-dir', cache], env);
  assert.equal(check.code, 1, check.stderr);
  assert.match(check.stderr, /the lockfile is stale: the base image's installed packages \(its dpkg status\) changed/);
  const locked = await ocibuild(['build', '--locked', '-f', path.join(appDir, 'image.yaml'), '-o', `oci:${path.join(appDir, 'out')}`, '--cache-dir', cache], env);
  assert.equal(locked.code, 1, locked.stderr);
  assert.match(locked.stderr, /is stale: the base image's installed packages/);
});

test('from: an image that is not there: a clear error and nothing written', async () => {
  const dir = await specDir('missing', specText(`${reg.host}/nope/base:1`, ['app'], ['  cmd: [/bin/sh]']));
  const out = path.join(dir, 'out');
  const r = await ocibuild(['build', '-f', path.join(dir, 'image.yaml'), '-o', `oci:${out}`, '--cache-dir', path.join(tmp, 'cache-missing')], env);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /manifest not found/);
  await assert.rejects(readFile(path.join(out, 'index.json')));
  const bad = await specDir('bad', specText('Bad/Ref:x', ['app'], ['  cmd: [/bin/sh]']));
  const r2 = await ocibuild(['build', '-f', path.join(bad, 'image.yaml'), '-o', `oci:${path.join(bad, 'out')}`, '--cache-dir', path.join(tmp, 'cache-missing')], env);
  assert.equal(r2.code, 2);
  assert.match(r2.stderr, /image\.yaml.*from.*invalid image reference/);
});

async function pullLayout(ref: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmp, 'pulled-'));
  const r = await ocibuild(['pull', ref, '-o', `oci:${dir}:x`, '--cache-dir', path.join(tmp, 'cache-pull'), '-q'], env);
  assert.equal(r.code, 0, r.stderr);
  return dir;
}
