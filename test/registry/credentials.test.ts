import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { OcibuildError } from '../../src/errors.js';
import {
  basicAuthHeader,
  credentialFiles,
  findCredential,
  helperServerUrl,
  runCredentialHelper,
  type Credential,
  type CredentialSourceOptions,
} from '../../src/registry/credentials.js';

// Every test works below this directory: the real ~/.docker is never read.
let root: string;
let bin: string;
let caseNo = 0;

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');

const HELPERS: Record<string, string> = {
  // answers for Docker Hub and ghcr.io, "not found" otherwise, as docker-credential-helpers do
  test: `#!/bin/sh
[ "$1" = get ] || { echo "unexpected arguments: $*" >&2; exit 3; }
url=$(cat)
printf '%s' "$url" > "$(dirname "$0")/test.last-url"
case "$url" in
  https://index.docker.io/v1/) echo '{"ServerURL":"https://index.docker.io/v1/","Username":"hubuser","Secret":"hub-s3cret"}' ;;
  ghcr.io) echo '{"ServerURL":"ghcr.io","Username":"<token>","Secret":"ghcr-t0ken"}' ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
`,
  broken: `#!/bin/sh
cat >/dev/null
echo "error getting credentials - err: exit status 1, out: keychain is locked" >&2
exit 1
`,
  garbage: `#!/bin/sh
cat >/dev/null
echo "Username=me Password=hunter2"
`,
  notfound2: `#!/bin/sh
cat >/dev/null
echo "credentials not found" >&2
exit 1
`,
  leaky: `#!/bin/sh
cat >/dev/null
echo '{"Username":"u","Secret":"l3aked"}'
exit 1
`,
  slow: `#!/bin/sh
exec sleep 60
`,
};

before(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'ocibuild-credentials-'));
  bin = path.join(root, 'bin');
  await mkdir(bin);
  for (const [name, script] of Object.entries(HELPERS)) {
    const file = path.join(bin, `docker-credential-${name}`);
    await writeFile(file, script);
    await chmod(file, 0o755);
  }
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

interface Setup {
  home: string;
  opts: CredentialSourceOptions;
  write(relative: string, content: unknown): Promise<string>;
}

/** A fresh home directory, an environment with only the given variables and the helpers' bin on PATH. */
async function setup(vars: Record<string, string> = {}): Promise<Setup> {
  const home = path.join(root, `case-${++caseNo}`);
  await mkdir(home, { recursive: true });
  const env: NodeJS.ProcessEnv = { PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}` };
  for (const [k, v] of Object.entries(vars)) env[k] = v.replaceAll('$HOME', home);
  return {
    home,
    opts: { env, homeDir: home },
    async write(relative, content) {
      const file = path.join(home, relative);
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(file, typeof content === 'string' ? content : JSON.stringify(content, null, 2));
      return file;
    },
  };
}

const DOCKER = '.docker/config.json';
const basic = (username: string, password: string): Credential => ({ kind: 'basic', username, password });

async function expectError(p: Promise<unknown>, message: RegExp, check?: (err: OcibuildError) => void): Promise<OcibuildError> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof OcibuildError, `expected an OcibuildError, got ${String(caught)}`);
  assert.match(caught.message, message);
  assert.ok(caught.hint && caught.hint.length > 0, 'a hint');
  check?.(caught);
  return caught;
}

// [key written in auths, registry asked for, repository, found?]
const KEY_MATCHING: Array<[string, string, string | undefined, boolean]> = [
  ['ghcr.io', 'ghcr.io', undefined, true],
  ['https://ghcr.io', 'ghcr.io', undefined, true],
  ['http://ghcr.io', 'ghcr.io', undefined, true],
  ['ghcr.io/v1/', 'ghcr.io', undefined, true],
  ['https://ghcr.io/v1/', 'ghcr.io', undefined, true],
  ['https://ghcr.io/v2/', 'ghcr.io', undefined, true],
  ['GHCR.IO', 'ghcr.io', undefined, true],
  ['ghcr.io', 'GHCR.io', undefined, true],
  ['https://index.docker.io/v1/', 'docker.io', undefined, true],
  ['index.docker.io', 'docker.io', undefined, true],
  ['docker.io', 'docker.io', undefined, true],
  ['registry-1.docker.io', 'docker.io', undefined, true],
  ['https://index.docker.io/v1/', 'registry-1.docker.io', undefined, true],
  ['docker.io', 'index.docker.io', undefined, true],
  ['localhost:5000', 'localhost:5000', undefined, true],
  ['http://localhost:5000/', 'localhost:5000', undefined, true],
  ['localhost', 'localhost:5000', undefined, false],
  ['localhost:5000', 'localhost', undefined, false],
  ['ghcr.io:443', 'ghcr.io', undefined, false],
  ['quay.io', 'ghcr.io', undefined, false],
  ['ghcr.io.evil.com', 'ghcr.io', undefined, false],
  ['https://index.docker.io/v1/', 'ghcr.io', undefined, false],
  // podman's per-namespace keys
  ['quay.io/org', 'quay.io', undefined, false],
  ['quay.io/org', 'quay.io', 'org/app', true],
  ['quay.io/org/app', 'quay.io', 'org/app', true],
  ['quay.io/org/app', 'quay.io', 'org/app2', false],
  ['quay.io/org', 'quay.io', 'organization/app', false],
  ['docker.io/library', 'docker.io', 'library/ubuntu', true],
];

for (const [key, registry, repository, found] of KEY_MATCHING) {
  test(`auths key ${JSON.stringify(key)} ${found ? 'matches' : 'does not match'} ${registry}${repository ? `/${repository}` : ''}`, async () => {
    const s = await setup();
    await s.write(DOCKER, { auths: { [key]: { auth: b64('u:p') } } });
    const result = await findCredential(registry, { ...s.opts, repository });
    assert.deepEqual(result, found ? { credential: basic('u', 'p'), source: '~/.docker/config.json (auths)' } : undefined);
  });
}

// [auths entry, credential]
const ENTRIES: Array<[Record<string, unknown>, Credential | undefined]> = [
  [{ auth: b64('user:pass') }, basic('user', 'pass')],
  [{ auth: b64('user:pa:ss:') }, basic('user', 'pa:ss:')],
  [{ auth: b64('üser:pässwörd') }, basic('üser', 'pässwörd')],
  [{ auth: b64('user:') }, basic('user', '')],
  [{ auth: ` ${b64('user:pass')}\n` }, basic('user', 'pass')],
  [{ username: 'user', password: 'pass' }, basic('user', 'pass')],
  [{ auth: b64('a:b'), username: 'c', password: 'd' }, basic('a', 'b')],
  [{ auth: '', username: 'c', password: 'd' }, basic('c', 'd')],
  [{ auth: b64('user:'), identitytoken: 'refresh-tok' }, { kind: 'identity-token', username: 'user', token: 'refresh-tok' }],
  [{ auth: b64('<token>:'), identitytoken: 'refresh-tok' }, { kind: 'identity-token', token: 'refresh-tok' }],
  [{ identitytoken: 'refresh-tok' }, { kind: 'identity-token', token: 'refresh-tok' }],
  [{ identitytoken: 'refresh-tok', email: 'x@example.com' }, { kind: 'identity-token', token: 'refresh-tok' }],
  // what docker writes next to a credsStore: nothing
  [{}, undefined],
  [{ auth: '', email: 'x@example.com' }, undefined],
  [{ auth: null }, undefined],
];

for (const [entry, expected] of ENTRIES) {
  test(`auths entry ${JSON.stringify(entry)}`, async () => {
    const s = await setup();
    await s.write(DOCKER, { auths: { 'r.example.com': entry } });
    const result = await findCredential('r.example.com', s.opts);
    assert.deepEqual(result?.credential, expected);
  });
}

// [config.json text, message pattern] — every one names the file
const MALFORMED: Array<[string, RegExp]> = [
  ['{"auths": {"r.example.com": {"auth": "c2VjcmV0OnB3"}', /config\.json is not valid JSON/],
  ['{"auths": {"r.example.com": {"auth": "s3cret-in-broken-json" x}}}', /is not valid JSON \(line 1, column \d+\)/],
  ['[1, 2]', /the top level is not a JSON object/],
  ['"string"', /the top level is not a JSON object/],
  ['{"auths": []}', /"auths" is not an object/],
  ['{"auths": "x"}', /"auths" is not an object/],
  ['{"credHelpers": 3}', /"credHelpers" is not an object/],
  ['{"credsStore": 3}', /"credsStore" is not a string/],
  ['{"auths": {"r.example.com": "s3cret"}}', /auths\["r\.example\.com"\] is not an object/],
  ['{"auths": {"r.example.com": {"auth": 5}}}', /auths\["r\.example\.com"\]\.auth is not a string/],
  ['{"auths": {"r.example.com": {"auth": "not base64!"}}}', /\.auth is not the base64 of "username:password"/],
  [`{"auths": {"r.example.com": {"auth": "${b64('nocolon-s3cret')}"}}}`, /\.auth is not the base64 of "username:password"/],
  ['{"auths": {"r.example.com": {"identitytoken": {}}}}', /identitytoken is not a string/],
  ['{"credHelpers": {"r.example.com": 1}}', /credHelpers\["r\.example\.com"\] is not a string/],
  ['{"credHelpers": {"r.example.com": "../../bin/sh"}}', /names "\.\.\/\.\.\/bin\/sh", which is not a credential helper name/],
];

for (const [text, message] of MALFORMED) {
  test(`a malformed config is an error naming the file: ${text.slice(0, 50)}`, async () => {
    const s = await setup();
    await s.write(DOCKER, text);
    await expectError(findCredential('r.example.com', s.opts), message, (err) => {
      assert.equal(err.where, '~/.docker/config.json');
      assert.ok(err.message.includes('~/.docker/config.json'), err.message);
      assert.doesNotMatch(err.format(), /s3cret|c2VjcmV0/, 'no secret in the message');
      assert.equal(err.exitCode, 1);
    });
  });
}

test('an empty or blank config file is no configuration', async () => {
  for (const text of ['', '  \n']) {
    const s = await setup();
    await s.write(DOCKER, text);
    assert.equal(await findCredential('ghcr.io', s.opts), undefined);
  }
});

test('an unreadable config is an error, a missing one is skipped', async () => {
  const s = await setup({ DOCKER_CONFIG: '$HOME/dockercfg' });
  assert.equal(await findCredential('ghcr.io', s.opts), undefined);
  // a directory where the file should be
  await mkdir(path.join(s.home, 'dockercfg', 'config.json'), { recursive: true });
  await expectError(findCredential('ghcr.io', s.opts), /cannot read credentials file ~\/dockercfg\/config\.json/);
});

test('no config files at all: undefined', async () => {
  const s = await setup({ XDG_RUNTIME_DIR: '$HOME/run' });
  assert.equal(await findCredential('docker.io', s.opts), undefined);
});

// [environment, files with a credential for r.example.com (user = file label), expected source]
const FILE_ORDER: Array<[Record<string, string>, Record<string, string>, string | undefined]> = [
  [{}, { docker: DOCKER }, '~/.docker/config.json'],
  [{}, { podman: '.config/containers/auth.json', docker: DOCKER }, '~/.config/containers/auth.json'],
  [{ XDG_CONFIG_HOME: '$HOME/xdg' }, { podman: '.config/containers/auth.json', docker: DOCKER }, '~/.docker/config.json'],
  [{ XDG_CONFIG_HOME: '$HOME/xdg' }, { podman: 'xdg/containers/auth.json', docker: DOCKER }, '~/xdg/containers/auth.json'],
  [{ XDG_RUNTIME_DIR: '$HOME/run' }, { runtime: 'run/containers/auth.json', podman: '.config/containers/auth.json' }, '~/run/containers/auth.json'],
  [{ REGISTRY_AUTH_FILE: '$HOME/auth.json', XDG_RUNTIME_DIR: '$HOME/run' }, { file: 'auth.json', runtime: 'run/containers/auth.json', docker: DOCKER }, '~/auth.json'],
  // podman reads neither runtime nor ~/.config auth.json when REGISTRY_AUTH_FILE is set, docker's file still
  [{ REGISTRY_AUTH_FILE: '$HOME/missing.json', XDG_RUNTIME_DIR: '$HOME/run' }, { runtime: 'run/containers/auth.json', podman: '.config/containers/auth.json', docker: DOCKER }, '~/.docker/config.json'],
  [{ REGISTRY_AUTH_FILE: '$HOME/missing.json' }, { podman: '.config/containers/auth.json' }, undefined],
  [{ DOCKER_CONFIG: '$HOME/dc' }, { docker: DOCKER, dc: 'dc/config.json' }, '~/dc/config.json'],
  [{ DOCKER_CONFIG: '$HOME/dc' }, { docker: DOCKER }, undefined],
  [{ REGISTRY_AUTH_FILE: '/nonexistent-ocibuild-test/auth.json' }, {}, undefined],
];

for (const [vars, files, expected] of FILE_ORDER) {
  test(`file order: ${JSON.stringify(vars)} with ${Object.keys(files).join(', ') || 'no files'}`, async () => {
    const s = await setup(vars);
    for (const [label, relative] of Object.entries(files)) {
      await s.write(relative, { auths: { 'r.example.com': { auth: b64(`${label}:pw`) } } });
    }
    const result = await findCredential('r.example.com', s.opts);
    if (expected === undefined) {
      assert.equal(result, undefined);
    } else {
      assert.equal(result?.source, `${expected} (auths)`);
      const label = Object.entries(files).find(([, rel]) => `~/${rel}` === expected)?.[0];
      assert.deepEqual(result?.credential, basic(label ?? '?', 'pw'));
    }
  });
}

test('credentialFiles lists the files in order, home shown as ~', async () => {
  const s = await setup({ XDG_RUNTIME_DIR: '/run/user/1000' });
  assert.deepEqual(credentialFiles(s.opts).map((f) => f.display), [
    '/run/user/1000/containers/auth.json',
    '~/.config/containers/auth.json',
    '~/.docker/config.json',
  ]);
});

test('the key docker writes wins over other spellings of the same registry', async () => {
  const s = await setup();
  await s.write(DOCKER, {
    auths: {
      'https://ghcr.io': { auth: b64('a:1') },
      'ghcr.io': { auth: b64('b:2') },
      'docker.io': { auth: b64('c:3') },
      'https://index.docker.io/v1/': { auth: b64('d:4') },
    },
  });
  assert.deepEqual((await findCredential('ghcr.io', s.opts))?.credential, basic('b', '2'));
  assert.deepEqual((await findCredential('docker.io', s.opts))?.credential, basic('d', '4'));
});

test('an empty entry under the preferred key falls through to another spelling', async () => {
  const s = await setup();
  await s.write(DOCKER, { auths: { 'ghcr.io': {}, 'https://ghcr.io': { auth: b64('a:1') } } });
  assert.deepEqual((await findCredential('ghcr.io', s.opts))?.credential, basic('a', '1'));
});

test('the most specific podman namespace key wins, then the registry key', async () => {
  const s = await setup();
  await s.write('.config/containers/auth.json', {
    auths: {
      'quay.io': { auth: b64('host:1') },
      'quay.io/org': { auth: b64('org:2') },
      'quay.io/org/app': { auth: b64('app:3') },
    },
  });
  const at = async (repository?: string): Promise<Credential | undefined> =>
    (await findCredential('quay.io', { ...s.opts, repository }))?.credential;
  assert.deepEqual(await at('org/app'), basic('app', '3'));
  assert.deepEqual(await at('org/other'), basic('org', '2'));
  assert.deepEqual(await at('elsewhere/app'), basic('host', '1'));
  assert.deepEqual(await at(), basic('host', '1'));
});

test('basicAuthHeader', () => {
  const cases: Array<[string, string, string]> = [
    ['user', 'pass', 'Basic dXNlcjpwYXNz'],
    ['Aladdin', 'open sesame', 'Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=='],
    ['', '', 'Basic Og=='],
    ['test', '123\u00a3', 'Basic dGVzdDoxMjPCow=='],
    ['u', 'a:b', 'Basic dTphOmI='],
  ];
  for (const [u, p, expected] of cases) assert.equal(basicAuthHeader(u, p), expected);
});

test('helperServerUrl: Docker Hub under its v1 URL, others by host', () => {
  assert.equal(helperServerUrl('docker.io'), 'https://index.docker.io/v1/');
  assert.equal(helperServerUrl('registry-1.docker.io'), 'https://index.docker.io/v1/');
  assert.equal(helperServerUrl('ghcr.io'), 'ghcr.io');
  assert.equal(helperServerUrl('localhost:5000'), 'localhost:5000');
});

// ---- credential helpers, run for real from a temporary PATH ----

test('credHelpers runs docker-credential-<name> get with the server URL on stdin', async () => {
  const s = await setup();
  await s.write(DOCKER, { credHelpers: { 'ghcr.io': 'test' }, auths: { 'ghcr.io': { auth: b64('file:pw') } } });
  const result = await findCredential('ghcr.io', s.opts);
  assert.deepEqual(result, {
    credential: { kind: 'identity-token', token: 'ghcr-t0ken' },
    source: '~/.docker/config.json (credHelpers: docker-credential-test)',
  });
  assert.equal(await readFile(path.join(bin, 'test.last-url'), 'utf8'), 'ghcr.io');
});

test('credsStore answers for Docker Hub with its v1 server URL', async () => {
  const s = await setup();
  await s.write(DOCKER, { auths: { 'https://index.docker.io/v1/': {} }, credsStore: 'test' });
  const result = await findCredential('docker.io', s.opts);
  assert.deepEqual(result, {
    credential: basic('hubuser', 'hub-s3cret'),
    source: '~/.docker/config.json (credsStore: docker-credential-test)',
  });
  assert.equal(await readFile(path.join(bin, 'test.last-url'), 'utf8'), 'https://index.docker.io/v1/');
  assert.ok(!result.source.includes('s3cret'));
});

test('an auths entry with credentials beats credsStore', async () => {
  const s = await setup();
  await s.write(DOCKER, { auths: { 'https://index.docker.io/v1/': { auth: b64('file:pw') } }, credsStore: 'test' });
  assert.deepEqual((await findCredential('docker.io', s.opts))?.credential, basic('file', 'pw'));
});

test('"credentials not found" from a helper is no credential, and the search goes on to the next file', async () => {
  const s = await setup();
  await s.write('.config/containers/auth.json', { credHelpers: { 'quay.io': 'test' }, auths: { 'quay.io': { auth: b64('same-file:pw') } } });
  assert.equal(await findCredential('quay.io', s.opts), undefined);
  await s.write(DOCKER, { auths: { 'quay.io': { auth: b64('docker:pw') } } });
  assert.deepEqual(await findCredential('quay.io', s.opts), { credential: basic('docker', 'pw'), source: '~/.docker/config.json (auths)' });
});

test('"credentials not found" on stderr counts too', async () => {
  assert.equal(await runCredentialHelper('notfound2', 'x.io', { env: { PATH: `${bin}:${process.env.PATH ?? ''}` } }), undefined);
});

test('a failing helper is an error naming the helper and the config entry', async () => {
  const s = await setup();
  await s.write(DOCKER, { credHelpers: { 'ghcr.io': 'broken' } });
  await expectError(findCredential('ghcr.io', s.opts), /^credential helper docker-credential-broken failed \(exit code 1\): error getting credentials .*keychain is locked$/, (err) => {
    assert.equal(err.where, 'docker-credential-broken');
    assert.match(err.hint ?? '', /configured in ~\/\.docker\/config\.json \(credHelpers\["ghcr\.io"\]\)/);
  });
});

test('the error of a failing helper never repeats output that looks like an answer', async () => {
  await expectError(
    runCredentialHelper('leaky', 'ghcr.io', { env: { PATH: `${bin}:${process.env.PATH ?? ''}` } }),
    /^credential helper docker-credential-leaky failed \(exit code 1\)$/,
    (err) => assert.doesNotMatch(err.format(), /l3aked/),
  );
});

test('a helper that is not installed is an error', async () => {
  const s = await setup();
  await s.write(DOCKER, { credsStore: 'nonexistent-ocibuild-test' });
  await expectError(findCredential('ghcr.io', s.opts), /docker-credential-nonexistent-ocibuild-test is not installed/, (err) => {
    assert.match(err.hint ?? '', /credsStore/);
  });
});

test('a helper answering with something other than JSON is an error that does not repeat the answer', async () => {
  const s = await setup();
  await s.write(DOCKER, { credHelpers: { 'ghcr.io': 'garbage' } });
  await expectError(findCredential('ghcr.io', s.opts), /docker-credential-garbage answered with something that is not JSON/, (err) => {
    assert.doesNotMatch(err.format(), /hunter2/);
  });
});

test('a helper that never answers is killed after the timeout', async () => {
  await expectError(
    runCredentialHelper('slow', 'ghcr.io', { env: { PATH: `${bin}:${process.env.PATH ?? ''}` }, timeoutMs: 200 }),
    /docker-credential-slow did not answer within 0\.2 s/,
  );
});

// [helper stdout, credential]
const ANSWERS: Array<[string | undefined, Credential | undefined]> = [
  ['{"ServerURL":"r.io","Username":"u","Secret":"s"}', basic('u', 's')],
  ['{"Username":"<token>","Secret":"t"}\n', { kind: 'identity-token', token: 't' }],
  ['{"Username":"u","Secret":""}', undefined],
  ['{}', undefined],
  [undefined, undefined],
];

for (const [answer, expected] of ANSWERS) {
  test(`a helper answer of ${JSON.stringify(answer)}`, async () => {
    const s = await setup();
    await s.write(DOCKER, { credsStore: 'stub' });
    const calls: Array<[string, string]> = [];
    const result = await findCredential('r.io', {
      ...s.opts,
      runHelper: async (helper, serverUrl) => {
        calls.push([helper, serverUrl]);
        return answer;
      },
    });
    assert.deepEqual(result?.credential, expected);
    assert.deepEqual(calls, [['stub', 'r.io']]);
  });
}

test('a helper answer with non-string fields is an error', async () => {
  const s = await setup();
  await s.write(DOCKER, { credsStore: 'stub' });
  await expectError(findCredential('r.io', { ...s.opts, runHelper: async () => '{"Username":1,"Secret":"s3cret"}' }),
    /answered without string Username and Secret/, (err) => assert.doesNotMatch(err.format(), /s3cret/));
});

test('a custom runHelper that throws is wrapped with the helper and the config entry', async () => {
  const s = await setup();
  await s.write(DOCKER, { credsStore: 'stub' });
  await expectError(findCredential('r.io', { ...s.opts, runHelper: async () => { throw new Error('boom'); } }),
    /^credential helper docker-credential-stub failed: boom$/, (err) => {
      assert.equal(err.where, 'docker-credential-stub');
      assert.match(err.hint ?? '', /~\/\.docker\/config\.json \(credsStore\)/);
    });
});
