// The programmatic API: steps as values give the same spec image.yaml gives; two
// images composed from one base + apt step share that layer (built once); and the
// package works from another TypeScript project through its `exports` and types.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync, symlinkSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { addFiles, aptInstall, build, from, image, run, scratch, toSpec, type ImageDef } from '../../src/index.js';
import { parseSpec } from '../../src/spec/parse.js';
import { OcibuildError } from '../../src/errors.js';
import { buildAptRepo, generateTestKey, type FixtureRepo } from '../support/aptrepo.js';
import { serveDirectory, type TestServer } from '../support/http.js';
import type { FixturePackage } from '../support/deb.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const exec = promisify(execFile);

const packages: FixturePackage[] = [
  { name: 'base-tool', version: '1.0-1', files: { '/bin/busybox': { content: readFileSync('/bin/busybox'), mode: 0o755 }, '/bin/sh': { symlink: 'busybox' }, '/etc/passwd': 'root:x:0:0:root:/root:/bin/sh\n', '/etc/group': 'root:x:0:\n' } },
];

let tmp: string;
let repo: FixtureRepo;
let server: TestServer;

before(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'ocibuild-api-'));
  repo = await buildAptRepo(path.join(tmp, 'repo'), [{ name: 'stable', components: { main: packages } }], { key: await generateTestKey() });
  server = await serveDirectory(repo.dir);
});

after(async () => {
  await server?.close();
  await rm(tmp, { recursive: true, force: true });
});

test('steps give the spec image.yaml gives', () => {
  const dir = '/work/proj';
  const img = image(
    addFiles(run(aptInstall(from('docker.io/library/debian:12'), { packages: ['python3', 'curl=7.88.1-10'], install: 'unpack' }), ['useradd app', 'mkdir /srv'], { network: true, cache: ['/root/.cache'] }), [
      { src: 'build/server', dest: '/usr/local/bin/server', mode: 0o755 },
    ]),
    { dir, config: { entrypoint: ['/usr/local/bin/server'], expose: [8080] }, platforms: ['linux/amd64', 'linux/arm64'] },
  );
  const yaml = [
    'from: docker.io/library/debian:12',
    'apt: {packages: [python3, curl=7.88.1-10], install: unpack}',
    'run: {commands: [useradd app, mkdir /srv], network: true, cache: [/root/.cache]}',
    'files: [{src: build/server, dest: /usr/local/bin/server, mode: "0755"}]',
    'config: {entrypoint: [/usr/local/bin/server], expose: ["8080"]}',
    'platforms: [linux/amd64, linux/arm64]',
    '',
  ].join('\n');
  const fromYaml = parseSpec(yaml, path.join(dir, 'image'));
  const fromCode = toSpec(img);
  const strip = (s: ReturnType<typeof toSpec>): unknown => JSON.parse(JSON.stringify(s, (k, v: unknown) => (k === 'where' || k === 'commandWheres' ? undefined : v)));
  assert.deepEqual(strip(fromCode), strip(fromYaml));
  assert.equal(fromCode.files[0]!.mode, 0o755);
});

test('steps are checked like image.yaml', () => {
  assert.throws(() => toSpec(image(aptInstall(scratch(), { packages: ['Bad_Name'], debianVersion: '12' }))), (e: unknown) => e instanceof OcibuildError && /invalid package name "Bad_Name"/.test(e.message));
  assert.throws(() => toSpec(image(run(scratch(), 'true', { workdir: 'relative' }))), /run\.workdir: "relative" must be an absolute path/);
  assert.throws(() => from('UPPER/case:tag'), OcibuildError);
});

test('two images sharing a base and apt step: the shared layer is built once', async () => {
  const dir = await mkdtemp(path.join(tmp, 'compose-'));
  const apt = aptInstall(scratch(), {
    packages: ['base-tool'],
    sources: [{ url: server.url, suites: ['stable'], components: ['main'], keyring: repo.keyringPath }],
  });
  const images: ImageDef[] = [
    image(run(apt, 'echo api > /role'), { dir, config: { cmd: ['/bin/sh'] } }),
    image(run(apt, 'echo worker > /role'), { dir }),
  ];
  const lines: string[] = [];
  const results = await build(images, {
    cacheDir: path.join(tmp, 'store'),
    output: (i) => `oci:${path.join(dir, 'out')}:image${i}`,
    sourceDateEpoch: 1700000000,
    log: (l) => lines.push(l),
  });
  assert.equal(results.length, 2);
  const [a, b] = results.map((r) => r.images[0]!.layers.map((l) => l.digest));
  assert.equal(a![0], b![0], 'the same apt layer');
  assert.notEqual(a![1], b![1], 'different RUN layers');
  assert.equal(lines.filter((l) => l.startsWith('unpacking 1 packages')).length, 1, `apt layer built once:\n${lines.join('\n')}`);
  assert.ok(lines.some((l) => l.startsWith('apt layer: unchanged, from the layer cache')));
});

test('from another TypeScript project: import from "ocibuild", typecheck, run', async () => {
  const proj = await mkdtemp(path.join(tmp, 'consumer-'));
  await mkdir(path.join(proj, 'node_modules'));
  symlinkSync(ROOT, path.join(proj, 'node_modules', 'ocibuild'));
  symlinkSync(path.join(ROOT, 'node_modules', '@types'), path.join(proj, 'node_modules', '@types'));
  await writeFile(path.join(proj, 'package.json'), JSON.stringify({ type: 'module', private: true }));
  await writeFile(path.join(proj, 'tsconfig.json'), JSON.stringify({ compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, outDir: 'out', types: ['node'] }, include: ['main.ts'] }));
  await writeFile(path.join(proj, 'main.ts'), [
    "import { aptInstall, build, image, scratch, type BuildResult } from 'ocibuild';",
    `const apt = aptInstall(scratch(), { packages: ['base-tool'], sources: [{ url: ${JSON.stringify(server.url)}, suites: ['stable'], components: ['main'], keyring: ${JSON.stringify(repo.keyringPath)} }] });`,
    `const result: BuildResult = await build(image(apt, { dir: ${JSON.stringify(proj)} }), { cacheDir: ${JSON.stringify(path.join(tmp, 'store'))}, output: 'oci:${proj}/image:x', sourceDateEpoch: 1700000000 });`,
    'console.log(result.digest);',
    '',
  ].join('\n'));
  await exec(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', proj]);
  const out = await exec(process.execPath, [path.join(proj, 'out', 'main.js')]);
  assert.match(out.stdout, /^sha256:[0-9a-f]{64}\n$/);
});
