// Pull and push against Debian's real docker-registry (anonymous, htpasswd, token
// auth), judged by skopeo, and through a fault-injecting proxy.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { OcibuildError } from '../../src/errors.js';
import { readLayoutImage } from '../../src/oci/read-layout.js';
import { writeLayout } from '../../src/oci/layout.js';
import { pullImage } from '../../src/registry/pull.js';
import { pushedLine, pushImage } from '../../src/registry/push.js';
import { parseReference } from '../../src/registry/reference.js';
import { Store } from '../../src/store/store.js';
import { startFaultProxy } from '../support/fault-proxy.js';
import { startRegistry, writeTinyImage, type TestRegistry } from '../support/registry.js';
import { scratchDirs } from '../support/scratch.js';
import { CLI } from '../support/cli.js';

const freshDir = await scratchDirs('registry-client');
const registries: TestRegistry[] = [];
after(async () => {
  await Promise.all(registries.map((r) => r.stop()));
});

async function registry(opts: Parameters<typeof startRegistry>[0] = {}): Promise<TestRegistry> {
  const r = await startRegistry(opts);
  registries.push(r);
  return r;
}

/** A credentials-free environment: no docker or podman config of this machine is read. */
async function isolatedCredentials(): Promise<{ env: NodeJS.ProcessEnv; homeDir: string }> {
  const home = await freshDir('home');
  return { env: { HOME: home, DOCKER_CONFIG: join(home, '.docker'), XDG_RUNTIME_DIR: join(home, 'run') }, homeDir: home };
}

interface Run { code: number; stdout: string; stderr: string }
function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<Run> {
  return new Promise((ok, fail) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...(opts.env ?? {}) }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', fail);
    child.on('close', (code) => ok({ code: code ?? -1, stdout, stderr }));
    // A command that exits without reading its input (a usage error) closes the pipe first.
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
  });
}

const ocibuild = (args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<Run> => run(CLI, args, opts);

async function skopeoDigest(ref: string, extra: string[] = []): Promise<string> {
  const r = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', ...extra, `docker://${ref}`]);
  assert.equal(r.code, 0, r.stderr);
  return `sha256:${createHash('sha256').update(r.stdout).digest('hex')}`;
}

test('push an OCI layout anonymously: skopeo sees the same digest; a re-push uploads nothing; pull gives it back byte for byte', async () => {
  const reg = await registry();
  const creds = await isolatedCredentials();
  const tiny = await writeTinyImage(await freshDir('tiny'), { tag: 'v1' });
  const target = await readLayoutImage(tiny.dir, 'v1');
  const ref = parseReference(`${reg.host}/team/app:1.0`);
  const first = await pushImage(target, [ref], { credentialOptions: creds });
  assert.equal(first[0]?.digest, tiny.manifestDigest);
  assert.equal(first[0]?.blobs.uploaded, 2);
  assert.equal(await skopeoDigest(`${reg.host}/team/app:1.0`), tiny.manifestDigest);

  const again = await pushImage(target, [ref], { credentialOptions: creds });
  assert.deepEqual(again[0]?.blobs, { uploaded: 0, mounted: 0, existing: 2, bytesUploaded: 0 });

  // Two new repositories of one registry in one push: the second mounts from the first.
  const two = await pushImage(target, [parseReference(`${reg.host}/team/one:1`), parseReference(`${reg.host}/other/two:1`)], { credentialOptions: creds });
  assert.deepEqual(two.map((r) => r.blobs), [
    { uploaded: 2, mounted: 0, existing: 0, bytesUploaded: two[0]!.blobs.bytesUploaded },
    { uploaded: 0, mounted: 2, existing: 0, bytesUploaded: 0 },
  ]);
  assert.equal(await skopeoDigest(`${reg.host}/other/two:1`), tiny.manifestDigest);
  assert.equal(pushedLine({ ...two[0]!, reference: `${reg.host}/team/one@${tiny.manifestDigest}` }).split('@').length, 2, 'a digest reference shows its digest once');

  // Pull into an empty store and write a layout: every blob identical to the source's.
  const store = new Store(await freshDir('store'));
  const pulled = await pullImage(ref, { store, platform: { os: 'linux', architecture: 'amd64' }, credentialOptions: creds });
  assert.equal(pulled.digest, tiny.manifestDigest);
  assert.equal(pulled.layers[0]?.digest, tiny.layerDigest);
  const out = await freshDir('pulled');
  await writeLayout(out, pulled, { store, tag: 'copy' });
  for (const [digest, bytes] of tiny.blobs) {
    assert.deepEqual(await readFile(join(out, 'blobs', 'sha256', digest.slice(7))), bytes, digest);
  }
  // skopeo copies the registry image to a layout with the same manifest digest.
  const viaSkopeo = await freshDir('skopeo');
  const copy = await run('skopeo', ['--insecure-policy', 'copy', '--src-tls-verify=false', `docker://${reg.host}/team/app:1.0`, `oci:${viaSkopeo}:x`]);
  assert.equal(copy.code, 0, copy.stderr);
  const idx = JSON.parse(await readFile(join(viaSkopeo, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
  assert.equal(idx.manifests[0]?.digest, tiny.manifestDigest);
});

test('a blob larger than one PUT goes up in PATCH chunks; cross-repository mount for a second repository', async () => {
  const reg = await registry();
  const creds = await isolatedCredentials();
  // Incompressible content: the gzip layer stays above the monolithic limit (16 MiB).
  const big = await writeTinyImage(await freshDir('big'), { tag: 'big', content: randomBytes(18 * 1024 * 1024).toString('latin1') });
  const target = await readLayoutImage(big.dir, 'big');
  assert.ok((target.images[0]?.layers[0]?.size ?? 0) > 16 * 1024 * 1024);
  const [pushed] = await pushImage(target, [parseReference(`${reg.host}/a/big:1`)], { credentialOptions: creds });
  assert.equal(pushed?.blobs.uploaded, 2);
  assert.equal(await skopeoDigest(`${reg.host}/a/big:1`), big.manifestDigest);
  assert.match(reg.logs(), /PATCH/);

  const mountSources = new Map([[big.layerDigest, { registry: reg.host, repository: 'a/big' }]]);
  const [second] = await pushImage(target, [parseReference(`${reg.host}/b/other:1`)], { credentialOptions: creds, mountSources });
  assert.deepEqual(second?.blobs, { uploaded: 1, mounted: 1, existing: 0, bytesUploaded: target.images[0]!.config.descriptor.size });
  assert.equal(await skopeoDigest(`${reg.host}/b/other:1`), big.manifestDigest);
});

test('htpasswd registry: no credentials is a clear 401 error; docker config.json credentials and --password-stdin work', async () => {
  const reg = await registry({ auth: 'htpasswd' });
  const creds = await isolatedCredentials();
  const tiny = await writeTinyImage(await freshDir('tiny-basic'), { tag: 'v1' });
  const target = await readLayoutImage(tiny.dir, 'v1');
  const ref = parseReference(`${reg.host}/private/app:1`);
  await assert.rejects(pushImage(target, [ref], { credentialOptions: creds, retries: 0 }), (err: unknown) => {
    assert.ok(err instanceof OcibuildError);
    assert.match(err.message, /HTTP 401/);
    assert.match(err.hint ?? '', /login|--username/);
    return true;
  });

  await mkdir(join(creds.homeDir, '.docker'), { recursive: true });
  const auth = Buffer.from(`${reg.username}:${reg.password}`).toString('base64');
  await writeFile(join(creds.homeDir, '.docker', 'config.json'), JSON.stringify({ auths: { [reg.host]: { auth } } }));
  const [pushed] = await pushImage(target, [ref], { credentialOptions: creds });
  assert.equal(pushed?.digest, tiny.manifestDigest);

  // The CLI with --username/--password-stdin and no config file; --metadata-file written.
  const other = await isolatedCredentials();
  const meta = join(await freshDir('meta'), 'push.json');
  const r = await ocibuild(['push', `oci:${tiny.dir}:v1`, `${reg.host}/private/cli:1,${reg.host}/private/cli:latest`, '--username', reg.username!, '--password-stdin', '--metadata-file', meta], {
    env: other.env,
    input: `${reg.password}\n`,
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), tiny.manifestDigest);
  assert.ok(!r.stderr.includes(reg.password!), 'the password is never printed');
  const doc = JSON.parse(await readFile(meta, 'utf8')) as { references: string[]; digest: string; images: Array<{ layers: Array<{ digest: string }> }> };
  assert.deepEqual(doc.references, [`${reg.host}/private/cli:1`, `${reg.host}/private/cli:latest`]);
  assert.equal(doc.digest, tiny.manifestDigest);
  assert.equal(doc.images[0]?.layers[0]?.digest, tiny.layerDigest);

  const wrong = await ocibuild(['push', `oci:${tiny.dir}:v1`, `${reg.host}/private/cli:2`, '--username', reg.username!, '--password-stdin'], { env: other.env, input: 'nope\n' });
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /HTTP 401: the registry refused the credentials from the command line/);
  assert.doesNotMatch(wrong.stderr, /internal error/);
});

test("auth.json keys scoped to a repository (podman's host/namespace form) are used for that repository only", async () => {
  const reg = await registry({ auth: 'htpasswd', users: { team: 'team-pw' } });
  const creds = await isolatedCredentials();
  const tiny = await writeTinyImage(await freshDir('tiny-scoped'), { tag: 'v1' });
  const authFile = join(creds.homeDir, 'auth.json');
  const team = Buffer.from('team:team-pw').toString('base64');
  await writeFile(authFile, JSON.stringify({ auths: { [`${reg.host}/team`]: { auth: team } } }));
  const env = { ...creds.env, REGISTRY_AUTH_FILE: authFile };
  const inTeam = await run(CLI, ['push', `oci:${tiny.dir}:v1`, `${reg.host}/team/app:1`], { env });
  assert.equal(inTeam.code, 0, inTeam.stderr);
  assert.equal(inTeam.stdout.trim(), tiny.manifestDigest);
  // Another namespace on the same registry: the key does not apply, so no credentials at all.
  const elsewhere = await run(CLI, ['push', `oci:${tiny.dir}:v1`, `${reg.host}/other/app:1`], { env });
  assert.equal(elsewhere.code, 1, elsewhere.stderr);
  assert.match(elsewhere.stderr, /HTTP 401/);
  assert.doesNotMatch(elsewhere.stderr, /refused the credentials/);
});

test('token registry: push with the token server, scopes asked for; anonymous pull refused with a hint', async () => {
  const reg = await registry({ auth: 'token' });
  const creds = await isolatedCredentials();
  const tiny = await writeTinyImage(await freshDir('tiny-token'), { tag: 'v1' });
  const target = await readLayoutImage(tiny.dir, 'v1');
  const ref = parseReference(`${reg.host}/tok/app:1`);
  const credential = { kind: 'basic' as const, username: reg.username!, password: reg.password! };
  const [pushed] = await pushImage(target, [ref], { credential });
  assert.equal(pushed?.digest, tiny.manifestDigest);
  const scopes = reg.tokenServer!.requests.flatMap((q) => q.scopes);
  assert.ok(scopes.includes('repository:tok/app:pull,push'), scopes.join(' '));
  assert.ok(reg.tokenServer!.requests.every((q) => q.auth === 'basic'));

  // One token for the whole push: the cache keeps it per scope set.
  const tokenGets = reg.tokenServer!.requests.length;
  assert.ok(tokenGets <= 2, `token requests: ${tokenGets}`);

  const store = new Store(await freshDir('store-token'));
  await assert.rejects(pullImage(ref, { store, platform: { os: 'linux', architecture: 'amd64' }, credentialOptions: creds, retries: 0 }), (err: unknown) => {
    assert.ok(err instanceof OcibuildError);
    assert.match(err.format(), /token server refused|HTTP 401/);
    return true;
  });
  const pulled = await pullImage(ref, { store, platform: { os: 'linux', architecture: 'amd64' }, credential });
  assert.equal(pulled.digest, tiny.manifestDigest);
});

test('identity token (docker login to an OAuth registry) is traded by the refresh grant', async () => {
  const reg = await registry({ auth: 'token' });
  const tiny = await writeTinyImage(await freshDir('tiny-id'), { tag: 'v1' });
  const target = await readLayoutImage(tiny.dir, 'v1');
  const token = reg.tokenServer!.issueRefreshToken(reg.username!);
  const [pushed] = await pushImage(target, [parseReference(`${reg.host}/id/app:1`)], { credential: { kind: 'identity-token', token } });
  assert.equal(pushed?.digest, tiny.manifestDigest);
  assert.ok(reg.tokenServer!.requests.some((q) => q.auth === 'refresh-grant' && q.status === 200));
});

test('through a faulty proxy a push completes with the right digest, and a pull never stores a corrupt blob', async () => {
  const reg = await registry();
  const creds = await isolatedCredentials();
  const proxy = await startFaultProxy({
    upstream: reg.url,
    schedule: {
      seed: 'push-1',
      rate: 0.35,
      faults: [{ kind: 'status', status: 503 }, { kind: 'status', status: 429, retryAfter: 0 }, { kind: 'drop-request' }, { kind: 'drop-response' }, { kind: 'status', status: 500 }],
    },
  });
  try {
    const big = await writeTinyImage(await freshDir('faulty'), { tag: 'x', content: randomBytes(3 * 1024 * 1024).toString('latin1') });
    const target = await readLayoutImage(big.dir, 'x');
    const ref = parseReference(`${proxy.host}/faulty/app:1`);
    const [pushed] = await pushImage(target, [ref], { credentialOptions: creds, backoffMs: 5, retries: 8, sequenceRetries: 8 });
    assert.equal(pushed?.digest, big.manifestDigest);
    assert.ok(proxy.injected.length > 0, 'the proxy injected faults');
    assert.equal(await skopeoDigest(`${reg.host}/faulty/app:1`), big.manifestDigest);

    // Pull: bodies cut short under a full Content-Length, then dropped connections.
    proxy.setSchedule(null);
    proxy.addRule({ match: { method: 'GET', path: '/blobs/' }, fault: { kind: 'truncate' }, times: 2 });
    proxy.addRule({ match: { method: 'GET', path: '/blobs/' }, fault: { kind: 'drop-response' }, skip: 2, times: 1 });
    const store = new Store(await freshDir('store-faulty'));
    const pulled = await pullImage(ref, { store, platform: { os: 'linux', architecture: 'amd64' }, credentialOptions: creds, backoffMs: 5 });
    assert.equal(pulled.digest, big.manifestDigest);
    const layer = await readFile(store.blobPath(big.layerDigest));
    assert.equal(`sha256:${createHash('sha256').update(layer).digest('hex')}`, big.layerDigest);
    assert.ok(proxy.counts().truncate >= 1);
  } finally {
    await proxy.close();
  }
});

test('a registry that keeps sending a wrong blob: the pull fails naming the blob and nothing enters the store', async () => {
  const reg = await registry();
  const creds = await isolatedCredentials();
  const tiny = await writeTinyImage(await freshDir('tiny-bad'), { tag: 'v1' });
  const ref = parseReference(`${reg.host}/bad/app:1`);
  await pushImage(await readLayoutImage(tiny.dir, 'v1'), [ref], { credentialOptions: creds });
  // Corrupt the registry's copy of the layer (same size, other bytes).
  const { readdir } = await import('node:fs/promises');
  const hex = tiny.layerDigest.slice(7);
  const dataPath = join(reg.storageDir, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
  const orig = await readFile(dataPath);
  const bad = Buffer.from(orig);
  bad[bad.length - 5] = (bad[bad.length - 5] ?? 0) ^ 0xff;
  await writeFile(dataPath, bad);
  const storeDir = await freshDir('store-bad');
  const store = new Store(storeDir);
  await assert.rejects(pullImage(ref, { store, platform: { os: 'linux', architecture: 'amd64' }, credentialOptions: creds }), (err: unknown) => {
    assert.ok(err instanceof OcibuildError);
    assert.match(err.message, new RegExp(`sha256 mismatch|${tiny.layerDigest}`));
    return true;
  });
  assert.equal(await store.has(tiny.layerDigest), false);
  const tmp = await readdir(join(storeDir, 'tmp')).catch(() => []);
  assert.deepEqual(tmp, []);
});

test('ocibuild pull writes an OCI layout; an unknown tag and a wrong platform are clear errors', async () => {
  const reg = await registry();
  const creds = await isolatedCredentials();
  const tiny = await writeTinyImage(await freshDir('tiny-cli'), { tag: 'v1' });
  await pushImage(await readLayoutImage(tiny.dir, 'v1'), [parseReference(`${reg.host}/cli/app:1`)], { credentialOptions: creds });
  const cache = await freshDir('cache-cli');
  const out = await freshDir('out-cli');
  const ok = await ocibuild(['pull', `${reg.host}/cli/app:1`, '-o', `oci:${out}:mine`, '--cache-dir', cache, '--platform', 'linux/amd64', '-q'], { env: creds.env });
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout.trim(), tiny.manifestDigest);
  assert.equal(ok.stderr, '', '-q prints nothing on success');
  const quietPush = await ocibuild(['push', `oci:${out}:mine`, `${reg.host}/cli/copy:1`, '-q'], { env: creds.env });
  assert.equal(quietPush.code, 0, quietPush.stderr);
  assert.equal(quietPush.stderr, '');
  const layout = await readLayoutImage(out, 'mine');
  assert.equal(layout.images[0]?.manifest.descriptor.digest, tiny.manifestDigest);

  const missing = await ocibuild(['pull', `${reg.host}/cli/app:nope`, '-o', `oci:${await freshDir('o2')}`, '--cache-dir', cache], { env: creds.env });
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /manifest not found/);
  const arm = await ocibuild(['pull', `${reg.host}/cli/app:1`, '-o', `oci:${await freshDir('o3')}`, '--cache-dir', cache, '--platform', 'linux/arm64'], { env: creds.env });
  assert.equal(arm.code, 1);
  assert.match(arm.stderr, /linux\/amd64, not linux\/arm64/);
  const refused = await ocibuild(['pull', `127.0.0.1:1/x:1`, '-o', `oci:${await freshDir('o4')}`, '--cache-dir', cache], { env: { ...creds.env } });
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /cannot reach the registry/);
  assert.ok((refused.stderr.match(/^retrying /gm) ?? []).length <= 4, refused.stderr);
  assert.match(refused.stderr, /^\(more retries to 127\.0\.0\.1:1 are not shown\)$/m);
  // push takes an OCI layout only: another transport is a usage error, before any request.
  const wrongSource = await ocibuild(['push', `oci-archive:${join(out, 'x.tar')}:v1`, `${reg.host}/cli/app:9`], { env: creds.env });
  assert.equal(wrongSource.code, 2, wrongSource.stderr);
  assert.match(wrongSource.stderr, /push reads an OCI image layout, not oci-archive:/);
  // A host name that does not resolve (.invalid never does): an error naming it, not a crash.
  const unknown = await ocibuild(['pull', 'nonexistent.invalid/x:1', '-o', `oci:${await freshDir('o5')}`, '--cache-dir', cache], { env: { ...creds.env } });
  assert.equal(unknown.code, 1, unknown.stderr);
  assert.match(unknown.stderr, /cannot resolve the registry's host name nonexistent\.invalid|cannot reach the registry/);
  assert.doesNotMatch(unknown.stderr, /internal error/);

  // docker-archive: the image is named after the pulled reference, as docker pull names it.
  const archive = join(await freshDir('o6'), 'app.tar');
  const saved = await ocibuild(['pull', `${reg.host}/cli/app:1`, '-o', `docker-archive:${archive}`, '--cache-dir', cache, '-q'], { env: creds.env });
  assert.equal(saved.code, 0, saved.stderr);
  const manifest = JSON.parse((await run('tar', ['-xOf', archive, 'manifest.json'])).stdout) as Array<{ RepoTags: string[] }>;
  assert.deepEqual(manifest[0]?.RepoTags, [`${reg.host}/cli/app:1`]);
});

test('an interrupted push, run again, uploads only what is missing', async () => {
  const reg = await registry();
  const creds = await isolatedCredentials();
  const proxy = await startFaultProxy({ upstream: reg.url });
  try {
    const tiny = await writeTinyImage(await freshDir('tiny-int'), { tag: 'v1', content: 'interrupted\n' });
    const target = await readLayoutImage(tiny.dir, 'v1');
    const ref = parseReference(`${proxy.host}/int/app:1`);
    // The manifest PUT is refused for good (not a status worth retrying): the push stops after the blobs.
    proxy.addRule({ match: { method: 'PUT', path: '/manifests/' }, fault: { kind: 'status', status: 400, body: '{"errors":[{"code":"MANIFEST_INVALID","message":"injected"}]}' } });
    await assert.rejects(pushImage(target, [ref], { credentialOptions: creds }), /HTTP 400 \(MANIFEST_INVALID: injected\)/);
    const [again] = await pushImage(target, [ref], { credentialOptions: creds });
    assert.deepEqual(again?.blobs, { uploaded: 0, mounted: 0, existing: 2, bytesUploaded: 0 });
    assert.equal(await skopeoDigest(`${reg.host}/int/app:1`), tiny.manifestDigest);
  } finally {
    await proxy.close();
  }
});

test('ocibuild push of a damaged layout: a layer not matching its digest is refused before the registry gets it', async () => {
  const reg = await registry();
  const creds = await isolatedCredentials();
  const tiny = await writeTinyImage(await freshDir('tiny-damaged'), { tag: 'v1' });
  // Same size, other bytes: only hashing the upload finds it.
  const layerPath = join(tiny.dir, 'blobs', 'sha256', tiny.layerDigest.slice('sha256:'.length));
  const bad = await readFile(layerPath);
  bad[bad.length - 5] = (bad[bad.length - 5] ?? 0) ^ 0xff;
  await writeFile(layerPath, bad);
  const r = await ocibuild(['push', tiny.ref, `${reg.host}/damaged/app:1`, '-q'], { env: creds.env });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`blob ${tiny.layerDigest}: sha256 mismatch`));
  assert.equal(r.stdout, '');
  for (const path of [`/v2/damaged/app/manifests/1`, `/v2/damaged/app/blobs/${tiny.layerDigest}`]) {
    const res = await fetch(`${reg.url}${path}`, { method: 'HEAD' });
    assert.equal(res.status, 404, path);
  }
});

test('blob downloads redirected to another host get no credentials', async () => {
  const reg = await registry({ auth: 'htpasswd' });
  const credential = { kind: 'basic' as const, username: reg.username!, password: reg.password! };
  const tiny = await writeTinyImage(await freshDir('tiny-redirect'), { tag: 'v1' });
  await pushImage(await readLayoutImage(tiny.dir, 'v1'), [parseReference(`${reg.host}/r/app:1`)], { credential });

  // "Object storage" on another origin (localhost vs 127.0.0.1), serving the blobs.
  const storageSeen: Array<string | undefined> = [];
  const storage = createServer((req, res) => {
    storageSeen.push(req.headers.authorization);
    const bytes = tiny.blobs.get(decodeURIComponent(req.url!.slice(1)));
    res.writeHead(bytes ? 200 : 404, { 'content-length': String(bytes?.length ?? 0) }).end(bytes ?? '');
  });
  await new Promise<void>((ok) => storage.listen(0, '127.0.0.1', ok));
  const storagePort = (storage.address() as AddressInfo).port;
  // The registry front: blob GETs answered 307 to storage, the rest forwarded.
  const front = createServer(async (req, res) => {
    const m = /\/blobs\/(sha256:[0-9a-f]{64})$/.exec(req.url ?? '');
    if (req.method === 'GET' && m) {
      res.writeHead(307, { location: `http://localhost:${storagePort}/${encodeURIComponent(m[1]!)}` }).end();
      return;
    }
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string' && k !== 'host') headers[k] = v;
    const up = await fetch(`${reg.url}${req.url}`, { method: req.method, headers, redirect: 'manual' });
    const out: Record<string, string> = {};
    up.headers.forEach((v, k) => {
      if (k !== 'content-length' && k !== 'transfer-encoding' && k !== 'connection') out[k] = v;
    });
    res.writeHead(up.status, out).end(Buffer.from(await up.arrayBuffer()));
  });
  await new Promise<void>((ok) => front.listen(0, '127.0.0.1', ok));
  try {
    const host = `127.0.0.1:${(front.address() as AddressInfo).port}`;
    const store = new Store(await freshDir('store-redirect'));
    const pulled = await pullImage(parseReference(`${host}/r/app:1`), { store, platform: { os: 'linux', architecture: 'amd64' }, credential });
    assert.equal(pulled.digest, tiny.manifestDigest);
    assert.ok(storageSeen.length >= 2, `storage served ${storageSeen.length} blobs`);
    assert.deepEqual(storageSeen.filter((a) => a !== undefined), [], 'no Authorization header reached the other host');
  } finally {
    front.close();
    storage.close();
  }
});

test('a multi-platform index: pushed after its manifests, each platform pulled by os/arch', async () => {
  const reg = await registry();
  const creds = await isolatedCredentials();
  const amd = await readLayoutImage((await writeTinyImage(await freshDir('amd'), { tag: 'a', content: 'amd64\n' })).dir, 'a');
  const armLayout = await writeTinyImage(await freshDir('arm'), { tag: 'b', content: 'arm64\n' });
  // Rewrite the second image's config as arm64 (a new config and manifest).
  const arm = await readLayoutImage(armLayout.dir, 'b');
  const armImage = arm.images[0]!;
  const cfg = JSON.parse(armImage.config.bytes.toString()) as Record<string, unknown>;
  cfg.architecture = 'arm64';
  const cfgBytes = Buffer.from(JSON.stringify(cfg));
  const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
  const man = JSON.parse(armImage.manifest.bytes.toString()) as { config: { digest: string; size: number } };
  man.config = { ...man.config, digest: sha(cfgBytes), size: cfgBytes.length };
  const manBytes = Buffer.from(JSON.stringify(man));
  const armBuilt = {
    config: { descriptor: { ...armImage.config.descriptor, digest: sha(cfgBytes), size: cfgBytes.length }, bytes: cfgBytes },
    manifest: { descriptor: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha(manBytes), size: manBytes.length }, bytes: manBytes },
    layers: armImage.layers,
  };
  const amdImage = amd.images[0]!;
  const indexBytes = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [
      { ...amdImage.manifest.descriptor, platform: { os: 'linux', architecture: 'amd64' } },
      { ...armBuilt.manifest.descriptor, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    ],
  }));
  const index = { descriptor: { mediaType: 'application/vnd.oci.image.index.v1+json', digest: sha(indexBytes), size: indexBytes.length }, bytes: indexBytes };
  const ref = parseReference(`${reg.host}/multi/app:1`);
  const [pushed] = await pushImage({ images: [amdImage, armBuilt], index }, [ref], { credentialOptions: creds });
  assert.equal(pushed?.digest, index.descriptor.digest);
  assert.equal(await skopeoDigest(`${reg.host}/multi/app:1`), index.descriptor.digest);

  const store = new Store(await freshDir('store-multi'));
  const a = await pullImage(ref, { store, platform: { os: 'linux', architecture: 'amd64' }, credentialOptions: creds });
  assert.equal(a.digest, amdImage.manifest.descriptor.digest);
  const b = await pullImage(ref, { store, platform: { os: 'linux', architecture: 'arm64' }, credentialOptions: creds });
  assert.equal(b.digest, armBuilt.manifest.descriptor.digest);
  await assert.rejects(pullImage(ref, { store, platform: { os: 'linux', architecture: 's390x' }, credentialOptions: creds }), (err: unknown) => {
    assert.ok(err instanceof OcibuildError);
    assert.match(err.format(), /no image for linux\/s390x[\s\S]*it has: linux\/amd64, linux\/arm64\/v8/);
    return true;
  });
});

test('a Docker schema2 image (as skopeo --format v2s2 pushes it) is pulled as it is', async () => {
  const reg = await registry();
  const creds = await isolatedCredentials();
  const tiny = await writeTinyImage(await freshDir('tiny-v2s2'), { tag: 'v1', content: 'docker\n' });
  const copy = await run('skopeo', ['--insecure-policy', 'copy', '--format', 'v2s2', '--dest-tls-verify=false', `oci:${tiny.dir}:v1`, `docker://${reg.host}/docker/app:1`], { env: creds.env });
  assert.equal(copy.code, 0, copy.stderr);
  const expected = await skopeoDigest(`${reg.host}/docker/app:1`);
  const store = new Store(await freshDir('store-v2s2'));
  const pulled = await pullImage(parseReference(`${reg.host}/docker/app:1`), { store, platform: { os: 'linux', architecture: 'amd64' }, credentialOptions: creds });
  assert.equal(pulled.digest, expected);
  assert.equal(pulled.manifest.descriptor.mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
  assert.equal(pulled.layers[0]?.mediaType, 'application/vnd.docker.image.rootfs.diff.tar.gzip');
  assert.equal(pulled.layers[0]?.digest, tiny.layerDigest, 'the layer blob is the same bytes');
  // Pushed back elsewhere, it keeps its digest.
  const [again] = await pushImage({ images: [pulled] }, [parseReference(`${reg.host}/docker/copy:1`)], { credentialOptions: creds });
  assert.equal(again?.digest, expected);
});

/** A registry front that rewrites manifest bodies on the way out (a broken proxy or registry). */
async function manifestRewritingFront(upstream: string, rewrite: (body: Buffer, path: string) => Buffer): Promise<{ host: string; close(): void }> {
  const front = createServer(async (req, res) => {
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string' && k !== 'host') headers[k] = v;
    const up = await fetch(`${upstream}${req.url}`, { method: req.method, headers, redirect: 'manual' });
    const out: Record<string, string> = {};
    up.headers.forEach((v, k) => {
      if (k !== 'content-length' && k !== 'transfer-encoding' && k !== 'connection' && k !== 'docker-content-digest') out[k] = v;
    });
    let body: Buffer = Buffer.from(await up.arrayBuffer());
    if (req.method === 'GET' && /\/manifests\//.test(req.url ?? '')) body = rewrite(body, req.url ?? '');
    res.writeHead(up.status, out).end(body);
  });
  await new Promise<void>((ok) => front.listen(0, '127.0.0.1', ok));
  return { host: `127.0.0.1:${(front.address() as AddressInfo).port}`, close: () => front.close() };
}

test('bad registry answers: a manifest not matching its digest, a layer of unknown media type — errors, nothing stored', async () => {
  const reg = await registry();
  const creds = await isolatedCredentials();
  const tiny = await writeTinyImage(await freshDir('tiny-badman'), { tag: 'v1', content: 'bad manifests\n' });
  await pushImage(await readLayoutImage(tiny.dir, 'v1'), [parseReference(`${reg.host}/bad/man:1`)], { credentialOptions: creds });

  // Same JSON, other bytes (a space added): the digest no longer matches the reference.
  const spaced = await manifestRewritingFront(reg.url, (b) => Buffer.concat([b, Buffer.from(' ')]));
  try {
    const store = new Store(await freshDir('store-badman'));
    await assert.rejects(pullImage(parseReference(`${spaced.host}/bad/man@${tiny.manifestDigest}`), { store, platform: { os: 'linux', architecture: 'amd64' }, credentialOptions: creds }), (err: unknown) => {
      assert.ok(err instanceof OcibuildError);
      assert.match(err.message, new RegExp(`not the requested ${tiny.manifestDigest}`));
      return true;
    });
    assert.equal(await store.has(tiny.manifestDigest), false);
    assert.equal(await store.has(tiny.layerDigest), false);
  } finally {
    spaced.close();
  }

  const foreign = await manifestRewritingFront(reg.url, (b) => Buffer.from(b.toString('utf8').replace('application/vnd.oci.image.layer.v1.tar+gzip', 'application/vnd.example.unknown.layer')));
  try {
    const store = new Store(await freshDir('store-foreign'));
    await assert.rejects(pullImage(parseReference(`${foreign.host}/bad/man:1`), { store, platform: { os: 'linux', architecture: 'amd64' }, credentialOptions: creds }), (err: unknown) => {
      assert.ok(err instanceof OcibuildError);
      assert.match(err.message, /layer of type application\/vnd\.example\.unknown\.layer/);
      return true;
    });
    assert.equal(await store.has(tiny.layerDigest), false, 'no blob fetched for an image ocibuild cannot use');
  } finally {
    foreign.close();
  }
});
