// Manifest annotations through the real CLI: the spec's annotations:, --annotation,
// --source and --revision (with `git` read from a real git checkout), and the rule
// that nothing comes from the environment by itself. Specs here have only files:,
// so no apt repository is needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ocibuild } from '../support/cli.js';
import { scratchDirs } from '../support/scratch.js';
import { run } from '../oci/support.js';
import { publicUrl } from '../../src/build/git.js';

const dirs = await scratchDirs('cli-annotations');
const CREATED = { 'org.opencontainers.image.created': '2023-11-14T22:13:20Z' };

/** A files-only spec in a fresh directory; returns the spec path. */
async function project(label: string, extra: string[] = []): Promise<string> {
  const dir = await dirs(label);
  await writeFile(path.join(dir, 'hello.txt'), 'hello\n');
  const spec = path.join(dir, 'image.yaml');
  await writeFile(spec, ['from: scratch', 'files:', '  - {src: hello.txt, dest: /hello.txt}', 'config:', '  labels: {com.example.label: kept}', ...extra, ''].join('\n'));
  return spec;
}

function build(spec: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): ReturnType<typeof ocibuild> {
  const dir = path.dirname(spec);
  return ocibuild(['build', '-f', spec, '--output', `oci:${dir}/out:t`, '--cache-dir', path.join(dir, 'cache'), '--source-date-epoch', '1700000000', '-q', ...args], env);
}

interface Manifest { annotations?: Record<string, string>; config: { digest: string } }

async function manifestOf(spec: string): Promise<Manifest> {
  return JSON.parse((await run('skopeo', ['inspect', '--raw', `oci:${path.dirname(spec)}/out:t`])).stdout) as Manifest;
}

function git(dir: string, ...args: string[]): string {
  return execFileSync('git', ['-C', dir, '-c', 'user.name=ocibuild tests', '-c', 'user.email=tests@ocibuild.invalid', '-c', 'init.defaultBranch=main', ...args], {
    encoding: 'utf8',
    env: { ...process.env, GIT_CONFIG_NOSYSTEM: '1' },
  }).trim();
}

test('spec annotations:, --annotation, --source and --revision land on the manifest; labels stay labels', async () => {
  const spec = await project('all', [
    'annotations:',
    '  com.example.team: core',
    '  com.example.overridden: from-spec',
    '  org.opencontainers.image.revision: from-spec',
  ]);
  const r = await build(spec, ['--annotation', 'com.example.overridden=from-cli', '--annotation', 'com.example.empty=', '--annotation', 'com.example.eq=a=b',
    '--source', 'https://git.example.com/team/app', '--revision', '0123456789abcdef']);
  assert.equal(r.code, 0, r.stderr);
  const m = await manifestOf(spec);
  assert.deepEqual(m.annotations, {
    ...CREATED,
    'com.example.team': 'core',
    'com.example.overridden': 'from-cli',
    'com.example.empty': '',
    'com.example.eq': 'a=b',
    'org.opencontainers.image.source': 'https://git.example.com/team/app',
    'org.opencontainers.image.revision': '0123456789abcdef',
  });
  const config = JSON.parse((await run('skopeo', ['inspect', '--config', '--raw', `oci:${path.dirname(spec)}/out:t`])).stdout) as { config: { Labels: Record<string, string> } };
  assert.deepEqual(config.config.Labels, { 'com.example.label': 'kept' });
  assert.equal(r.stdout.trim(), (await run('skopeo', ['inspect', `oci:${path.dirname(spec)}/out:t`])).stdout.match(/"Digest": "([^"]+)"/)?.[1]);
});

test('nothing is taken from the environment: CI variables and GIT_DIR change no digest, a checkout adds no revision', async () => {
  const spec = await project('env');
  const dir = path.dirname(spec);
  git(dir, 'init', '-q');
  git(dir, 'add', '.');
  git(dir, 'commit', '-q', '-m', 'init');
  git(dir, 'remote', 'add', 'origin', 'https://git.example.com/team/app.git');
  const plain = await build(spec);
  assert.equal(plain.code, 0, plain.stderr);
  assert.deepEqual((await manifestOf(spec)).annotations, CREATED);
  const ci = await build(spec, [], {
    CI: 'true', GITHUB_SHA: 'f'.repeat(40), GITHUB_SERVER_URL: 'https://github.com', GITHUB_REPOSITORY: 'x/y',
    CI_COMMIT_SHA: 'e'.repeat(40), CI_PROJECT_URL: 'https://gitlab.example.com/x/y', GIT_DIR: path.join(dir, '.git'),
  });
  assert.equal(ci.code, 0, ci.stderr);
  assert.equal(ci.stdout, plain.stdout);
});

test('--revision git and --source git read the spec\'s checkout: HEAD, and origin without credentials', async () => {
  const spec = await project('git');
  const dir = path.dirname(spec);
  git(dir, 'init', '-q');
  git(dir, 'add', 'image.yaml', 'hello.txt');
  git(dir, 'commit', '-q', '-m', 'first');
  git(dir, 'remote', 'add', 'origin', 'https://builder:s3cret-token@git.example.com/team/app.git');
  const head = git(dir, 'rev-parse', 'HEAD');
  // Another repository named by the caller's environment must not be the one read.
  const other = await dirs('other-repo');
  git(other, 'init', '-q');
  git(other, 'commit', '-q', '--allow-empty', '-m', 'other');
  git(other, 'remote', 'add', 'origin', 'https://other.example.com/x.git');

  const r = await build(spec, ['--revision', 'git', '--source', 'git'], { GIT_DIR: path.join(other, '.git'), GIT_WORK_TREE: other });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual((await manifestOf(spec)).annotations, {
    ...CREATED,
    'org.opencontainers.image.revision': head,
    'org.opencontainers.image.source': 'https://git.example.com/team/app.git',
  });
  assert.doesNotMatch(r.stderr + JSON.stringify(await manifestOf(spec)), /s3cret/);

  // A spec in a subdirectory of the checkout, and an scp-like remote.
  const sub = path.join(dir, 'images', 'app');
  await mkdir(sub, { recursive: true });
  await writeFile(path.join(sub, 'hello.txt'), 'hi\n');
  await writeFile(path.join(sub, 'image.yaml'), 'from: scratch\nfiles: [{src: hello.txt, dest: /hello.txt}]\n');
  git(dir, 'remote', 'set-url', 'origin', 'git@git.example.com:team/app.git');
  const s = await build(path.join(sub, 'image.yaml'), ['--revision', 'git', '--source', 'git']);
  assert.equal(s.code, 0, s.stderr);
  const m = await manifestOf(path.join(sub, 'image.yaml'));
  assert.equal(m.annotations?.['org.opencontainers.image.revision'], head);
  assert.equal(m.annotations?.['org.opencontainers.image.source'], 'ssh://git.example.com/team/app.git');
});

test('bad annotations and git outside a checkout: exit 2, what and where and a hint, no output', async () => {
  const plain = await project('bad');
  const noOrigin = await project('no-origin');
  git(path.dirname(noOrigin), 'init', '-q');
  git(path.dirname(noOrigin), 'commit', '-q', '--allow-empty', '-m', 'x');
  const noCommit = await project('no-commit');
  git(path.dirname(noCommit), 'init', '-q');
  // The scratch directory is under the system temp dir; make sure no checkout above it counts.
  const ceiling = { GIT_CEILING_DIRECTORIES: path.dirname(path.dirname(path.dirname(plain))) };

  const cases: Array<[string, string[], RegExp, RegExp]> = [
    [plain, ['--revision', 'git'], /--revision git: the spec's directory is not in a git checkout/, /pass --revision with a value/],
    [plain, ['--source', 'git'], /--source git: the spec's directory is not in a git checkout/, /pass --source with a value/],
    [noOrigin, ['--source', 'git'], /--source git: the checkout has no remote named origin/, /git remote add origin/],
    [noCommit, ['--revision', 'git'], /--revision git: the checkout has no commit yet/, /commit first/],
    [plain, ['--source', 'not a url'], /--source: org\.opencontainers\.image\.source "not a url" is not a URL/, /repository URL/],
    [plain, ['--source', 'https://me:pw@git.example.com/app'], /contains credentials/, /remove the credentials/],
    [plain, ['--revision', 'two words'], /--revision: .*"two words" is not a revision/, /one identifier/],
    [plain, ['--annotation', 'novalue'], /--annotation: "novalue" is not KEY=VALUE/, /com\.example\.team=platform/],
    [plain, ['--annotation', '=v'], /is not KEY=VALUE/, /KEY|team/],
    [plain, ['--annotation', 'org.opencontainers.image.created=2020'], /annotation org\.opencontainers\.image\.created cannot be set by hand/, /SOURCE_DATE_EPOCH/],
    [plain, ['--annotation', 'a.b=1', '--annotation', 'a.b=2'], /--annotation: a\.b is given twice/, /once/],
    [plain, ['--annotation', 'org.opencontainers.image.source=https://a.example', '--source', 'https://b.example'], /given by both --annotation and --source/, /keep one/],
    [plain, ['--annotation', 'bad key=1'], /invalid annotation key "bad key"/, /reverse-domain/],
  ];
  const results = await Promise.all(cases.map(([spec, args]) => build(spec, args, ceiling)));
  results.forEach((r, i) => {
    const [, args, message, hint] = cases[i]!;
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message, args.join(' '));
    assert.match(r.stderr, /\n  hint: /, args.join(' '));
    assert.match(r.stderr.split('hint:')[1] ?? '', hint, args.join(' '));
    assert.equal(r.stdout, '');
  });
  for (const spec of [plain, noOrigin, noCommit]) {
    assert.ok(!(await readdir(path.dirname(spec))).includes('out'), `no output written for ${spec}`);
  }

  const reserved = await project('reserved', ['annotations:', '  org.opencontainers.image.base.name: x']);
  const r = await build(reserved);
  assert.equal(r.code, 2);
  assert.ok(r.stderr.includes(`${reserved}:7:3: annotation org.opencontainers.image.base.name cannot be set by hand`), r.stderr);
});

test('publicUrl: credentials removed, scp-like and local remotes as URLs, relative paths refused', () => {
  const table: Array<[string, string | undefined]> = [
    ['https://github.com/example/app.git', 'https://github.com/example/app.git'],
    ['https://user:token@github.com/example/app.git', 'https://github.com/example/app.git'],
    ['https://ghp_abcdef@github.com/example/app', 'https://github.com/example/app'],
    ['ssh://git@git.example.com:2222/team/app.git', 'ssh://git.example.com:2222/team/app.git'],
    ['git@github.com:example/app.git', 'ssh://github.com/example/app.git'],
    ['github.com:example/app.git', 'ssh://github.com/example/app.git'],
    ['/srv/git/app.git', 'file:///srv/git/app.git'],
    ['../app.git', undefined],
    ['app', undefined],
  ];
  for (const [remote, want] of table) assert.equal(publicUrl(remote), want, remote);
});

test('the created annotation alone when nothing else is asked for, as before annotations existed', async () => {
  const spec = await project('created-only');
  const r = await build(spec);
  assert.equal(r.code, 0, r.stderr);
  const m = await manifestOf(spec);
  assert.deepEqual(m.annotations, CREATED);
  // The manifest document is exactly this: no empty annotation members, no index wrapper.
  const index = JSON.parse(await readFile(path.join(path.dirname(spec), 'out', 'index.json'), 'utf8')) as { manifests: Array<{ mediaType: string; platform?: unknown }> };
  assert.equal(index.manifests[0]?.mediaType, 'application/vnd.oci.image.manifest.v1+json');
  assert.deepEqual(index.manifests[0]?.platform, { architecture: 'amd64', os: 'linux' });
});
