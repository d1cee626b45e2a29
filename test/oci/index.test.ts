// The image index (several platforms under one digest): the pure assembly, then each
// sink holding one, judged by skopeo (inspect --raw, copy --override-arch) and, on
// the single-platform copy skopeo makes, by umoci and runc.
import { test, describe, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { OcibuildError } from '../../src/errors.js';
import { Store } from '../../src/store/store.js';
import { buildImage, type BuiltImage, type Layer } from '../../src/oci/image.js';
import { buildIndex, isIndex, topDescriptor, type BuiltIndex } from '../../src/oci/index.js';
import { imageAnnotations } from '../../src/oci/annotations.js';
import { inspectLayout } from '../../src/oci/inspect.js';
import { imageBlobs } from '../../src/oci/layout.js';
import { parseOutput, writeOutput } from '../../src/oci/output.js';
import { scratchDirs } from '../support/scratch.js';
import { HELLO, busyboxLayer, helloConfig, run } from './support.js';

const dirs = await scratchDirs('oci-index');
const sha = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

const CREATED = { 'org.opencontainers.image.created': '2024-01-02T03:04:05Z' };

interface IndexDoc {
  schemaVersion: number;
  mediaType: string;
  manifests: Array<{ mediaType: string; digest: string; size: number; platform?: { os: string; architecture: string; variant?: string }; annotations?: Record<string, string> }>;
  annotations?: Record<string, string>;
}

describe('buildIndex', () => {
  let store: Store;
  let layer: Layer;
  let amd64: BuiltImage;
  let arm64: BuiltImage;
  let armv7: BuiltImage;

  before(async () => {
    store = new Store(await dirs('store'));
    layer = await busyboxLayer(store);
    amd64 = buildImage(helloConfig({ architecture: 'amd64' }), [layer], CREATED);
    arm64 = buildImage(helloConfig({ architecture: 'arm64' }), [layer], CREATED);
    armv7 = buildImage(helloConfig({ architecture: 'arm', variant: 'v7' }), [layer], CREATED);
  });

  test('lists each manifest with its platform, in order, with the annotations; the digest is of the bytes', () => {
    const index = buildIndex([amd64, arm64, armv7], CREATED);
    const doc = JSON.parse(index.index.bytes.toString('utf8')) as IndexDoc;
    assert.equal(doc.schemaVersion, 2);
    assert.equal(doc.mediaType, 'application/vnd.oci.image.index.v1+json');
    assert.deepEqual(doc.annotations, CREATED);
    assert.deepEqual(
      doc.manifests.map((m) => [m.digest, m.mediaType, m.size, m.platform]),
      [
        [amd64.manifest.descriptor.digest, 'application/vnd.oci.image.manifest.v1+json', amd64.manifest.bytes.length, { architecture: 'amd64', os: 'linux' }],
        [arm64.manifest.descriptor.digest, 'application/vnd.oci.image.manifest.v1+json', arm64.manifest.bytes.length, { architecture: 'arm64', os: 'linux' }],
        [armv7.manifest.descriptor.digest, 'application/vnd.oci.image.manifest.v1+json', armv7.manifest.bytes.length, { architecture: 'arm', os: 'linux', variant: 'v7' }],
      ],
    );
    assert.deepEqual(index.index.descriptor, { mediaType: 'application/vnd.oci.image.index.v1+json', digest: sha(index.index.bytes), size: index.index.bytes.length });
    assert.ok(isIndex(index) && !isIndex(amd64));
    assert.equal(topDescriptor(index), index.index.descriptor);
    assert.equal(topDescriptor(amd64), amd64.manifest.descriptor);
    // Pure: the same images give the same bytes; another order is another index.
    assert.deepEqual(buildIndex([amd64, arm64, armv7], CREATED).index.bytes, index.index.bytes);
    assert.notEqual(buildIndex([arm64, amd64, armv7], CREATED).index.descriptor.digest, index.index.descriptor.digest);
    assert.equal(JSON.parse(buildIndex([amd64]).index.bytes.toString('utf8')).annotations, undefined);
  });

  test('blobs: the shared layer once, every config and manifest, then the index', () => {
    const index = buildIndex([amd64, arm64], CREATED);
    assert.deepEqual(
      imageBlobs(index).map((b) => b.digest),
      [layer.digest, amd64.config.descriptor.digest, amd64.manifest.descriptor.digest, arm64.config.descriptor.digest, arm64.manifest.descriptor.digest, index.index.descriptor.digest],
    );
  });

  test('no images, two images for one platform, or a manifest without a platform are programming errors', () => {
    assert.throws(() => buildIndex([]), /at least one image/);
    assert.throws(() => buildIndex([amd64, buildImage(helloConfig({ architecture: 'amd64', cmd: ['x'] }), [layer])]), /two images for platform linux\/amd64/);
    const bare: BuiltImage = { ...amd64, manifest: { ...amd64.manifest, descriptor: { ...amd64.manifest.descriptor, platform: undefined } } };
    delete bare.manifest.descriptor.platform;
    assert.throws(() => buildIndex([bare]), /has no platform/);
  });
});

describe('an image index in each output', () => {
  let store: Store;
  let index: BuiltIndex;
  let layout: string;

  before(async () => {
    store = new Store(await dirs('store'));
    const layer = await busyboxLayer(store);
    const host = process.arch === 'x64' ? 'amd64' : process.arch;
    const other = host === 'amd64' ? 'arm64' : 'amd64';
    index = buildIndex(
      [
        buildImage(helloConfig({ architecture: host }), [layer], CREATED),
        buildImage(helloConfig({ architecture: other, cmd: ['other'] }), [layer], CREATED),
        buildImage(helloConfig({ architecture: 'arm', variant: 'v7', cmd: ['arm'] }), [layer], CREATED),
      ],
      CREATED,
    );
    layout = join(await dirs('layout'), 'l');
    await writeOutput(parseOutput(`oci:${layout}:multi`), index, { store });
  });

  test('oci:DIR: index.json names the index blob with the tag; skopeo reads the index raw', async () => {
    const top = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as IndexDoc;
    assert.deepEqual(top.manifests, [{ ...index.index.descriptor, annotations: { 'org.opencontainers.image.ref.name': 'multi' } }]);
    const raw = (await run('skopeo', ['inspect', '--raw', `oci:${layout}:multi`])).stdout;
    assert.equal(raw, index.index.bytes.toString('utf8'));
    const blobs = (await readdir(join(layout, 'blobs', 'sha256'))).sort();
    assert.deepEqual(blobs, imageBlobs(index).map((b) => b.digest.slice(7)).sort());
  });

  test('skopeo copy --override-arch picks each platform; umoci unpacks the copy and runc runs it', async () => {
    for (const image of index.images) {
      const p = image.manifest.descriptor.platform!;
      const copy = join(await dirs(`copy-${p.architecture}`), 'c');
      const args = ['copy', '--override-arch', p.architecture, ...(p.variant ? ['--override-variant', p.variant] : []), `oci:${layout}:multi`, `oci:${copy}:one`];
      await run('skopeo', args);
      const raw = (await run('skopeo', ['inspect', '--raw', `oci:${copy}:one`])).stdout;
      assert.equal(sha(Buffer.from(raw)), image.manifest.descriptor.digest, `${p.architecture}: the same manifest, byte for byte`);
      const config = JSON.parse((await run('skopeo', ['inspect', '--config', '--raw', `oci:${copy}:one`])).stdout) as { architecture: string; variant?: string };
      assert.equal(config.architecture, p.architecture);
      assert.equal(config.variant, p.variant);
    }
    // The host's image runs (its layer is the host's busybox).
    const copy = join(await dirs('copy-host'), 'c');
    await run('skopeo', ['copy', `oci:${layout}:multi`, `oci:${copy}:host`]);
    const bundle = join(await dirs('bundle'), 'b');
    await run('umoci', ['unpack', '--image', `${copy}:host`, bundle]);
    const configPath = join(bundle, 'config.json');
    const config = JSON.parse(await readFile(configPath, 'utf8')) as { process: { terminal: boolean } };
    config.process.terminal = false;
    await writeFile(configPath, JSON.stringify(config));
    const { stdout } = await run('runc', ['run', '--bundle', bundle, `ocibuild-index-${process.pid}`]);
    assert.equal(stdout.trim(), HELLO);
  });

  test('inspect shows the index, its platforms and each image', async () => {
    const text = await inspectLayout(`oci:${layout}:multi`);
    assert.ok(text.includes(`Index       ${index.index.descriptor.digest}`), text);
    for (const image of index.images) {
      const p = image.manifest.descriptor.platform!;
      const name = [p.os, p.architecture, p.variant].filter(Boolean).join('/');
      assert.match(text, new RegExp(`${name.replaceAll('/', '\\/')}\\s+${image.manifest.descriptor.digest}`));
      assert.ok(text.includes(`Image       oci:${layout}:multi ${name}\n`), text);
    }
    assert.match(text, /Annotations org\.opencontainers\.image\.created=2024-01-02T03:04:05Z/);
  });

  test('oci-archive: skopeo reads the index from the archive', async () => {
    const file = join(await dirs('archive'), 'multi.tar');
    await writeOutput(parseOutput(`oci-archive:${file}:multi`), index, { store });
    const raw = (await run('skopeo', ['inspect', '--raw', `oci-archive:${file}:multi`])).stdout;
    assert.equal(raw, index.index.bytes.toString('utf8'));
  });

  test('docker-archive refuses an index: a usage error, no file written', async () => {
    const d = await dirs('docker');
    const file = join(d, 'multi.tar');
    await assert.rejects(
      writeOutput(parseOutput(`docker-archive:${file}:app:1`), index, { store }),
      (err: unknown) =>
        err instanceof OcibuildError && err.exitCode === 2 && /docker-archive holds one platform/.test(err.message) && /3 platforms/.test(err.message) && /--platform/.test(err.hint ?? ''),
    );
    await assert.rejects(stat(file));
    assert.deepEqual(await readdir(d), []);
  });
});

test('imageAnnotations: created always, source/revision when known, the base-image hook, user keys kept', () => {
  const created = new Date('2024-05-06T07:08:09.999Z');
  const table: Array<[Parameters<typeof imageAnnotations>[0], Record<string, string>]> = [
    [{ created }, { 'org.opencontainers.image.created': '2024-05-06T07:08:09Z' }],
    [
      { created, source: 'https://example.com/app', revision: 'abc123', extra: { 'com.example.team': 'core' } },
      {
        'com.example.team': 'core',
        'org.opencontainers.image.created': '2024-05-06T07:08:09Z',
        'org.opencontainers.image.source': 'https://example.com/app',
        'org.opencontainers.image.revision': 'abc123',
      },
    ],
    [
      // source/revision given as options win over the same keys in the user's map.
      { created, source: 'https://a.example/x', extra: { 'org.opencontainers.image.source': 'https://b.example/y' } },
      { 'org.opencontainers.image.created': '2024-05-06T07:08:09Z', 'org.opencontainers.image.source': 'https://a.example/x' },
    ],
    [
      { created, base: { name: 'docker.io/library/debian:12', digest: `sha256:${'a'.repeat(64)}` } },
      {
        'org.opencontainers.image.created': '2024-05-06T07:08:09Z',
        'org.opencontainers.image.base.name': 'docker.io/library/debian:12',
        'org.opencontainers.image.base.digest': `sha256:${'a'.repeat(64)}`,
      },
    ],
  ];
  for (const [input, want] of table) assert.deepEqual(imageAnnotations(input), want);
  assert.throws(() => imageAnnotations({ created, base: { name: 'x', digest: 'latest' } }), /not a sha256 digest/);
});
