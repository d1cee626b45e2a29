// The registry test helpers judged by real tools: skopeo pushes to docker-registry in
// each auth mode, curl reads the challenges, and the fault proxy's faults are seen by curl.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { scheduledFault, startFaultProxy, type FaultSchedule } from './fault-proxy.js';
import { startRegistry, writeTinyImage, type TestRegistry, type TinyImage } from './registry.js';
import { scratchDirs } from './scratch.js';
import { decodeJwtClaims, startTokenServer } from './token-server.js';

const freshDir = await scratchDirs('registry');
const image = await writeTinyImage(await freshDir('image'), { tag: 'v1' });
// skopeo reads no host credentials: every test says which it gives.
const emptyAuthFile = join(await freshDir('auth'), 'auth.json');
await writeFile(emptyAuthFile, '{"auths":{}}');

interface Result { code: number; stdout: string; stderr: string }

/** Asynchronous on purpose: the token server and the proxy live in this process. */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Result> {
  return new Promise((ok, fail) => {
    const child = spawn(cmd, args, { env: { ...process.env, REGISTRY_AUTH_FILE: emptyAuthFile, ...env }, stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', fail);
    child.on('close', (code, signal) => ok({ code: code ?? (signal ? -1 : 0), stdout, stderr }));
  });
}

const skopeo = (...args: string[]): Promise<Result> => run('skopeo', ['--insecure-policy', ...args]);
const push = (host: string, repo: string, ...extra: string[]): Promise<Result> =>
  skopeo('copy', '--dest-tls-verify=false', ...extra, image.ref, `docker://${host}/${repo}`);
const pushImage = (source: TinyImage, host: string, repo: string): Promise<Result> =>
  skopeo('copy', '--dest-tls-verify=false', source.ref, `docker://${host}/${repo}`);
const rawManifest = (host: string, repo: string, ...extra: string[]): Promise<Result> =>
  skopeo('inspect', '--raw', '--tls-verify=false', ...extra, `docker://${host}/${repo}`);
const digestOf = (text: string): string => 'sha256:' + createHash('sha256').update(text).digest('hex');

interface CurlReply { code: number; status: number; headers: Record<string, string>; body: string }
/** curl with the response head on stdout (-i); headers lower-cased, the last response's. */
async function curl(...args: string[]): Promise<CurlReply> {
  const r = await run('curl', ['-sS', '-i', ...args]);
  const heads = r.stdout.split('\r\n\r\n');
  // -i prints interim (100 Continue) heads too; the body follows the last head.
  let i = 0;
  while (i < heads.length - 1 && /^HTTP\/[\d.]+ 1\d\d/.test(heads[i] ?? '')) i++;
  const head = heads[i] ?? '';
  const body = heads.slice(i + 1).join('\r\n\r\n');
  const [statusLine = '', ...lines] = head.split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { code: r.code, status: Number(statusLine.split(' ')[1] ?? 0), headers, body };
}

async function stopAndCheckGone(registry: TestRegistry): Promise<void> {
  const root = dirname(registry.storageDir);
  await registry.stop();
  assert.equal(existsSync(root), false, 'the registry temp dir is removed');
  assert.throws(() => process.kill(registry.pid, 0), { code: 'ESRCH' }, 'the registry process is gone');
}

test('the tiny image is an OCI layout umoci reads', async () => {
  const r = await run('umoci', ['stat', '--json', '--image', `${image.dir}:${image.tag}`]);
  assert.equal(r.code, 0, r.stderr);
  const layer = image.blobs.get(image.layerDigest);
  assert.ok(layer);
  assert.equal(image.layerDigest, 'sha256:' + createHash('sha256').update(layer).digest('hex'));
});

test('anonymous registry: /v2/ answers without a challenge, skopeo pushes, manifests can be deleted, stop cleans up', async () => {
  const registry = await startRegistry();
  try {
    assert.match(registry.host, /^127\.0\.0\.1:\d+$/);
    const ping = await curl(`${registry.url}/v2/`);
    assert.equal(ping.status, 200);
    assert.equal(ping.headers['docker-distribution-api-version'], 'registry/2.0');
    assert.equal(ping.headers['www-authenticate'], undefined);

    const pushed = await push(registry.host, 'tests/anon:v1');
    assert.equal(pushed.code, 0, pushed.stderr);
    const manifest = await rawManifest(registry.host, 'tests/anon:v1');
    assert.equal(manifest.code, 0, manifest.stderr);
    assert.equal(digestOf(manifest.stdout), image.manifestDigest);
    assert.ok(existsSync(join(registry.storageDir, 'docker/registry/v2/blobs/sha256', image.layerDigest.slice(7, 9), image.layerDigest.slice(7), 'data')));

    const del = await curl('-X', 'DELETE', `${registry.url}/v2/tests/anon/manifests/${image.manifestDigest}`);
    assert.equal(del.status, 202);
    const gone = await curl('-I', `${registry.url}/v2/tests/anon/manifests/${image.manifestDigest}`);
    assert.equal(gone.status, 404);
    assert.match(registry.logs(), /DELETE \/v2\/tests\/anon\/manifests/);
  } finally {
    await stopAndCheckGone(registry);
  }
});

test('htpasswd registry: Basic challenge, curl and skopeo with credentials, refusal without', async () => {
  const registry = await startRegistry({ auth: 'htpasswd', users: { alice: 'alice-secret', bob: 'bob:with:colons' } });
  try {
    assert.equal(registry.username, 'alice');
    assert.equal(registry.password, 'alice-secret');
    const challenge = await curl(`${registry.url}/v2/`);
    assert.equal(challenge.status, 401);
    assert.equal(challenge.headers['www-authenticate'], 'Basic realm="ocibuild-test"');
    assert.equal((await curl('-u', 'alice:alice-secret', `${registry.url}/v2/`)).status, 200);
    assert.equal((await curl('-u', 'bob:bob:with:colons', `${registry.url}/v2/`)).status, 200);
    assert.equal((await curl('-u', 'alice:wrong', `${registry.url}/v2/`)).status, 401);

    const anonymous = await push(registry.host, 'tests/basic:v1');
    assert.notEqual(anonymous.code, 0);
    const pushed = await push(registry.host, 'tests/basic:v1', '--dest-creds', 'alice:alice-secret');
    assert.equal(pushed.code, 0, pushed.stderr);
    const manifest = await rawManifest(registry.host, 'tests/basic:v1', '--creds', 'bob:bob:with:colons');
    assert.equal(manifest.code, 0, manifest.stderr);
    assert.equal(digestOf(manifest.stdout), image.manifestDigest);
  } finally {
    await stopAndCheckGone(registry);
  }
});

test('token registry: Bearer challenges with scopes, skopeo push through the token server, per-user rules', async () => {
  const registry = await startRegistry({
    auth: 'token',
    users: { pusher: 'push-secret', reader: { password: 'read-secret', access: [{ name: 'tests/*', actions: ['pull'] }] } },
  });
  const ts = registry.tokenServer;
  assert.ok(ts);
  try {
    const challenge = await curl(`${registry.url}/v2/`);
    assert.equal(challenge.status, 401);
    assert.equal(challenge.headers['www-authenticate'], `Bearer realm="${ts.realm}",service="${ts.service}"`);
    const scoped = await curl(`${registry.url}/v2/tests/tok/manifests/v1`);
    assert.equal(scoped.headers['www-authenticate'], `Bearer realm="${ts.realm}",service="${ts.service}",scope="repository:tests/tok:pull"`);

    const pushed = await push(registry.host, 'tests/tok:v1', '--dest-creds', 'pusher:push-secret');
    assert.equal(pushed.code, 0, pushed.stderr);
    const pushRequests = ts.requests.filter((r) => r.username === 'pusher' && r.scopes.includes('repository:tests/tok:pull,push'));
    assert.ok(pushRequests.length > 0, JSON.stringify(ts.requests.map((r) => [r.method, r.url, r.username])));
    assert.ok(pushRequests.every((r) => r.method === 'GET' && r.auth === 'basic' && r.service === ts.service && r.status === 200));
    assert.deepEqual(pushRequests[0]?.granted, [{ type: 'repository', name: 'tests/tok', actions: ['pull', 'push'] }]);

    // The reader gets a token with pull only, so the registry refuses the push.
    const seen = ts.requests.length;
    const denied = await push(registry.host, 'tests/tok2:v1', '--dest-creds', 'reader:read-secret');
    assert.notEqual(denied.code, 0);
    const readerRequests = ts.requests.slice(seen).filter((r) => r.username === 'reader');
    assert.ok(readerRequests.length > 0);
    assert.ok(readerRequests.every((r) => (r.granted ?? []).every((g) => !g.actions.includes('push'))));
    const read = await rawManifest(registry.host, 'tests/tok:v1', '--creds', 'reader:read-secret');
    assert.equal(read.code, 0, read.stderr);
    assert.equal(digestOf(read.stdout), image.manifestDigest);

    // Wrong password: the token server says 401 and the client gets nothing.
    const before = ts.requests.length;
    const wrong = await rawManifest(registry.host, 'tests/tok:v1', '--creds', 'pusher:nope');
    assert.notEqual(wrong.code, 0);
    assert.ok(ts.requests.slice(before).some((r) => r.username === 'pusher' && r.status === 401));

    // No credentials: an anonymous token with no access, which the registry refuses.
    const anonStart = ts.requests.length;
    const anon = await rawManifest(registry.host, 'tests/tok:v1');
    assert.notEqual(anon.code, 0);
    const anonRequests = ts.requests.slice(anonStart);
    assert.ok(anonRequests.length > 0 && anonRequests.every((r) => r.auth === 'none' && r.headers.authorization === undefined));
    assert.deepEqual(anonRequests[0]?.granted, []);

    // A token fetched by hand works with curl; untrusted and expired ones are invalid_token.
    const basic = Buffer.from('pusher:push-secret').toString('base64');
    const got = await curl('-H', `Authorization: Basic ${basic}`, `${ts.realm}?service=${ts.service}&scope=repository:tests/tok:pull`);
    assert.equal(got.status, 200);
    const body = JSON.parse(got.body) as { token: string; access_token: string; expires_in: number; issued_at: string };
    assert.equal(body.token, body.access_token);
    assert.equal(body.expires_in, 300);
    assert.ok(!Number.isNaN(Date.parse(body.issued_at)));
    assert.deepEqual(decodeJwtClaims(body.token).access, [{ type: 'repository', name: 'tests/tok', actions: ['pull'] }]);
    const manifestUrl = `${registry.url}/v2/tests/tok/manifests/v1`;
    const accept = 'Accept: application/vnd.oci.image.manifest.v1+json';
    assert.equal((await curl('-H', accept, '-H', `Authorization: Bearer ${body.token}`, manifestUrl)).status, 200);
    const access = [{ type: 'repository', name: 'tests/tok', actions: ['pull'] }];
    for (const token of [ts.mintToken(access, { untrusted: true }), ts.mintToken(access, { expiresIn: -3600 }), ts.mintToken(access, { audience: 'elsewhere' })]) {
      const refused = await curl('-H', `Authorization: Bearer ${token}`, manifestUrl);
      assert.equal(refused.status, 401);
      assert.match(refused.headers['www-authenticate'] ?? '', /error="invalid_token"/);
    }
    assert.equal((await curl('-H', accept, '-H', `Authorization: Bearer ${ts.mintToken(access)}`, manifestUrl)).status, 200);
    const noPush = await curl('-X', 'POST', '-H', `Authorization: Bearer ${ts.mintToken(access)}`, `${registry.url}/v2/tests/tok/blobs/uploads/`);
    assert.equal(noPush.status, 401);
    assert.match(noPush.headers['www-authenticate'] ?? '', /scope="repository:tests\/tok:(pull,push|push,pull)",error="insufficient_scope"/);
  } finally {
    await stopAndCheckGone(registry);
  }
});

test('token registry: OAuth2 POST /token (password and refresh grants) and an identity token in skopeo\'s auth file', async () => {
  const registry = await startRegistry({ auth: 'token', users: { carol: 'carol-secret' } });
  const ts = registry.tokenServer;
  assert.ok(ts);
  try {
    assert.equal((await push(registry.host, 'tests/oauth:v1', '--dest-creds', 'carol:carol-secret')).code, 0);
    const form = (fields: Record<string, string>): string[] => Object.entries(fields).flatMap(([k, v]) => ['--data-urlencode', `${k}=${v}`]);
    const pw = await curl(...form({ grant_type: 'password', username: 'carol', password: 'carol-secret', service: ts.service, scope: 'repository:tests/oauth:pull', client_id: 'ocibuild-tests', access_type: 'offline' }), ts.realm);
    assert.equal(pw.status, 200, pw.body);
    const pwBody = JSON.parse(pw.body) as { access_token: string; refresh_token: string; scope: string };
    assert.equal(pwBody.scope, 'repository:tests/oauth:pull');
    assert.ok(pwBody.refresh_token.length > 20);
    const last = ts.requests.at(-1);
    assert.equal(last?.auth, 'password-grant');
    assert.equal(last?.form?.password, '<redacted>');
    assert.equal(last?.form?.client_id, 'ocibuild-tests');

    const refreshed = await curl(...form({ grant_type: 'refresh_token', refresh_token: pwBody.refresh_token, service: ts.service, scope: 'repository:tests/oauth:pull', client_id: 'ocibuild-tests' }), ts.realm);
    assert.equal(refreshed.status, 200, refreshed.body);
    const refreshedBody = JSON.parse(refreshed.body) as { access_token: string; refresh_token?: string };
    assert.equal(refreshedBody.refresh_token, undefined, 'no new refresh token without access_type=offline');
    const tagsUrl = `${registry.url}/v2/tests/oauth/tags/list`;
    assert.equal((await curl('-H', `Authorization: Bearer ${refreshedBody.access_token}`, tagsUrl)).status, 200);

    assert.equal((await curl(...form({ grant_type: 'password', username: 'carol', password: 'nope', service: ts.service }), ts.realm)).status, 400);
    assert.equal((await curl(...form({ grant_type: 'refresh_token', refresh_token: 'forged', service: ts.service }), ts.realm)).status, 400);

    // skopeo (containers/image) trades an identity token for access tokens by POST.
    const authFile = join(await freshDir('identity'), 'auth.json');
    // As docker login writes it: the user with an empty password in `auth`, the token beside it.
    const auth = Buffer.from('carol:').toString('base64');
    await writeFile(authFile, JSON.stringify({ auths: { [registry.host]: { auth, identitytoken: ts.issueRefreshToken('carol') } } }));
    const before = ts.requests.length;
    const viaIdentity = await rawManifest(registry.host, 'tests/oauth:v1', '--authfile', authFile);
    assert.equal(viaIdentity.code, 0, viaIdentity.stderr);
    assert.equal(digestOf(viaIdentity.stdout), image.manifestDigest);
    const used = ts.requests.slice(before);
    assert.ok(used.some((r) => r.method === 'POST' && r.auth === 'refresh-grant' && r.username === 'carol'), JSON.stringify(used.map((r) => [r.method, r.auth])));
    assert.ok(used.every((r) => r.headers.authorization === undefined), 'the identity token goes in the form, not a header');
  } finally {
    await stopAndCheckGone(registry);
  }
});

test('token registry with RS256 tokens and GET-only token server', async () => {
  const registry = await startRegistry({ auth: 'token', algorithm: 'RS256', oauth: false });
  const ts = registry.tokenServer;
  assert.ok(ts && registry.username && registry.password);
  try {
    assert.equal(ts.algorithm, 'RS256');
    const pushed = await push(registry.host, 'tests/rsa:v1', '--dest-creds', `${registry.username}:${registry.password}`);
    assert.equal(pushed.code, 0, pushed.stderr);
    assert.equal((await curl('-d', 'grant_type=password', ts.realm)).status, 404);
  } finally {
    await stopAndCheckGone(registry);
  }
});

test('a token server on its own: unknown service, bad scopes and the token-only answer shape', async () => {
  const ts = await startTokenServer({ users: { u: 'p' }, tokenFields: 'token', anonymous: [{ name: 'public/*', actions: ['pull'] }] });
  try {
    const wrongService = await curl(`${ts.realm}?service=other&scope=repository:a:pull`);
    assert.equal(wrongService.status, 400);
    const anon = await curl(`${ts.realm}?service=${ts.service}&scope=repository:public/x:pull,push&scope=repository:private/y:pull`);
    assert.equal(anon.status, 200);
    const body = JSON.parse(anon.body) as { token?: string; access_token?: string };
    assert.equal(body.access_token, undefined);
    assert.deepEqual(decodeJwtClaims(body.token ?? '').access, [{ type: 'repository', name: 'public/x', actions: ['pull'] }]);
    assert.deepEqual(ts.requests.at(-1)?.scopes, ['repository:public/x:pull,push', 'repository:private/y:pull']);
    const spaced = await curl('-u', 'u:p', `${ts.realm}?service=${ts.service}&scope=${encodeURIComponent('repository:a/b:pull registry:catalog:*')}&offline_token=true`);
    const spacedBody = JSON.parse(spaced.body) as { token: string; refresh_token?: string };
    assert.deepEqual(decodeJwtClaims(spacedBody.token).access, [
      { type: 'repository', name: 'a/b', actions: ['pull'] },
      { type: 'registry', name: 'catalog', actions: ['*'] },
    ]);
    assert.ok(spacedBody.refresh_token);
    assert.equal(decodeJwtClaims(spacedBody.token).sub, 'u');
  } finally {
    await ts.close();
  }
});

// ---- the fault proxy, in front of one anonymous registry holding the tiny image ----

const upstream = await startRegistry();
after(() => upstream.stop());
{
  const pushed = await push(upstream.host, 'tests/faults:v1');
  if (pushed.code !== 0) throw new Error(`setup push failed: ${pushed.stderr}`);
}
const layer = image.blobs.get(image.layerDigest) ?? Buffer.alloc(0);
const layerPath = `/v2/tests/faults/blobs/${image.layerDigest}`;

test('fault proxy: error statuses, with Retry-After, answered without the registry', async () => {
  const proxy = await startFaultProxy({
    upstream: upstream.url,
    rules: [
      { match: { path: '/v2/', method: 'GET' }, fault: { kind: 'status', status: 503 } },
      { fault: { kind: 'status', status: 429, retryAfter: 7 } },
      { fault: { kind: 'status', status: 500 } },
    ],
  });
  try {
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await curl(`${proxy.url}/v2/`);
      statuses.push(r.status);
      if (r.status === 429) assert.equal(r.headers['retry-after'], '7');
      if (r.status === 503) assert.match(r.body, /"code":"UNAVAILABLE"/);
    }
    assert.deepEqual(statuses, [503, 429, 500, 200]);
    assert.equal(proxy.counts().status, 3);
    assert.deepEqual(proxy.requests.map((r) => r.fault), ['status', 'status', 'status', undefined]);
  } finally {
    await proxy.close();
  }
});

test('fault proxy: rules fire in order, after `skip` matching requests, `times` times', async () => {
  const proxy = await startFaultProxy({
    upstream: upstream.url,
    rules: [
      { match: { method: 'GET', path: '/v2/' }, fault: { kind: 'status', status: 503 }, times: 2 },
      { match: { path: /^\/v2\/$/ }, fault: { kind: 'status', status: 500 }, skip: 2 },
    ],
  });
  try {
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await curl(`${proxy.url}/v2/`)).status);
    assert.deepEqual(statuses, [503, 503, 500, 200]);
    assert.deepEqual(proxy.injected.map((f) => f.n), [1, 2, 3]);
  } finally {
    await proxy.close();
  }
});

test('fault proxy: a response dropped mid-body, then a clean retry', async () => {
  const proxy = await startFaultProxy({ upstream: upstream.url, rules: [{ match: { path: '/blobs/' }, fault: { kind: 'drop-response', afterBytes: 100 } }] });
  try {
    const broken = await run('curl', ['-sS', '-o', '/dev/null', `${proxy.url}${layerPath}`]);
    assert.notEqual(broken.code, 0, 'curl sees the connection go');
    assert.equal(proxy.requests[0]?.status, 200);
    const dir = await freshDir('drop-response');
    const ok = await run('curl', ['-sS', '-f', '-o', join(dir, 'blob'), `${proxy.url}${layerPath}`]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(await readFile(join(dir, 'blob')), layer);
    assert.equal(proxy.counts()['drop-response'], 1);
  } finally {
    await proxy.close();
  }
});

test('fault proxy: a truncated body under a full Content-Length', async () => {
  const proxy = await startFaultProxy({ upstream: upstream.url, rules: [{ match: { path: layerPath, method: 'GET' }, fault: { kind: 'truncate', keepBytes: 64 } }] });
  try {
    const dir = await freshDir('truncate');
    const out = join(dir, 'blob');
    const headers = join(dir, 'headers');
    const r = await run('curl', ['-sS', '-D', headers, '-o', out, `${proxy.url}${layerPath}`]);
    assert.equal(r.code, 18, `curl: partial file; ${r.stderr}`);
    assert.match(await readFile(headers, 'utf8'), new RegExp(`content-length: ${layer.length}\\r\\n`, 'i'));
    assert.equal((await stat(out)).size, 64);
    // HEAD has no body to cut: the fault is recorded but not effective.
    proxy.addRule({ match: { method: 'HEAD' }, fault: { kind: 'truncate' } });
    assert.equal((await curl('-I', `${proxy.url}${layerPath}`)).status, 200);
    assert.equal(proxy.counts().truncate, 1);
    assert.equal(proxy.injected.length, 2);
    assert.equal(proxy.injected[1]?.effective, false);
  } finally {
    await proxy.close();
  }
});

test('fault proxy: an upload dropped mid-request body never lands; Location points at the proxy', async () => {
  const proxy = await startFaultProxy({ upstream: upstream.url });
  try {
    const blob = randomBytes(256 * 1024);
    const digest = 'sha256:' + createHash('sha256').update(blob).digest('hex');
    const dir = await freshDir('drop-request');
    await writeFile(join(dir, 'blob'), blob);
    const upload = async (): Promise<Result> => {
      const started = await curl('-X', 'POST', `${proxy.url}/v2/tests/faults/blobs/uploads/`);
      assert.equal(started.status, 202);
      const location = started.headers.location ?? '';
      assert.ok(location.startsWith(`${proxy.url}/v2/tests/faults/blobs/uploads/`), location);
      const sep = location.includes('?') ? '&' : '?';
      return run('curl', ['-sS', '-f', '-X', 'PUT', '-H', 'Content-Type: application/octet-stream', '--data-binary', `@${join(dir, 'blob')}`, `${location}${sep}digest=${digest}`]);
    };
    proxy.addRule({ match: { method: 'PUT' }, fault: { kind: 'drop-request' } });
    const broken = await upload();
    assert.notEqual(broken.code, 0);
    assert.equal((await curl('-I', `${upstream.url}/v2/tests/faults/blobs/${digest}`)).status, 404);
    const good = await upload();
    assert.equal(good.code, 0, good.stderr);
    assert.equal((await curl('-I', `${upstream.url}/v2/tests/faults/blobs/${digest}`)).status, 200);
    assert.equal(proxy.counts()['drop-request'], 1);
    assert.equal(proxy.locationRewrites(), 3, 'two upload starts and the committed PUT');
  } finally {
    await proxy.close();
  }
});

test('fault proxy: a seeded schedule injects the same faults every run', async () => {
  const schedule: FaultSchedule = {
    seed: 'ocibuild',
    rate: 0.5,
    faults: [{ kind: 'status', status: 503 }, { kind: 'status', status: 429, retryAfter: 1 }, { kind: 'delay', ms: 5 }],
    match: { path: /^\/v2\/$/ },
  };
  const expected = Array.from({ length: 16 }, (_, i) => {
    const f = scheduledFault(schedule, i);
    return f?.kind === 'status' ? f.status : 200;
  });
  assert.ok(expected.includes(503) && expected.includes(429) && expected.includes(200), `seed gives a mix: ${expected.join(' ')}`);
  for (let runNo = 0; runNo < 2; runNo++) {
    const proxy = await startFaultProxy({ upstream: upstream.url, schedule });
    try {
      const seen: number[] = [];
      for (let i = 0; i < expected.length; i++) {
        seen.push((await curl(`${proxy.url}/v2/`)).status);
        // Requests outside the schedule's match neither draw nor shift the sequence.
        if (i % 4 === 0) assert.equal((await curl('-I', `${proxy.url}${layerPath}`)).status, 200);
      }
      assert.deepEqual(seen, expected);
      const c = proxy.counts();
      assert.equal(c.status, expected.filter((s) => s !== 200).length);
      assert.equal(c.delay, Array.from({ length: expected.length }, (_, i) => scheduledFault(schedule, i)).filter((f) => f?.kind === 'delay').length);
    } finally {
      await proxy.close();
    }
  }
});

test('fault proxy: skopeo pushes through it, delayed, uploads following rewritten and relative Locations', async () => {
  for (const relativeUrls of [false, true]) {
    // Blobs the upstream does not hold yet, so that they are uploaded rather than found or mounted.
    const fresh = await writeTinyImage(await freshDir('proxied'), { content: `proxied ${String(relativeUrls)}\n` });
    const registry = relativeUrls ? await startRegistry({ relativeUrls: true }) : upstream;
    const proxy = await startFaultProxy({ upstream: registry.url, schedule: { seed: 1, rate: 1, faults: [{ kind: 'delay', ms: 1 }] } });
    try {
      const pushed = await pushImage(fresh, proxy.host, `tests/proxied-${relativeUrls ? 'rel' : 'abs'}:v1`);
      assert.equal(pushed.code, 0, pushed.stderr);
      const uploads = proxy.requests.filter((r) => (r.method === 'PUT' || r.method === 'PATCH') && r.path.includes('/blobs/uploads/'));
      assert.ok(uploads.length >= 2, 'config and layer uploads went through the proxy');
      assert.equal(proxy.counts().delay, proxy.requests.length);
      if (relativeUrls) assert.equal(proxy.locationRewrites(), 0);
      else assert.ok(proxy.locationRewrites() >= uploads.length);
      const manifest = await rawManifest(registry.host, `tests/proxied-${relativeUrls ? 'rel' : 'abs'}:v1`);
      assert.equal(digestOf(manifest.stdout), fresh.manifestDigest);
    } finally {
      await proxy.close();
      if (registry !== upstream) await registry.stop();
    }
  }
});
