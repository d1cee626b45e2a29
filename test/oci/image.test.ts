// Pure cores of src/oci: image config and manifest assembly, canonical JSON,
// output spec parsing. Table-driven, no I/O.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { OcibuildError } from '../../src/errors.js';
import { canonicalJson, type JsonValue } from '../../src/oci/descriptor.js';
import { buildImage, DEFAULT_PATH, rfc3339Seconds, type ImageConfigInput, type Layer } from '../../src/oci/image.js';
import { OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_MANIFEST } from '../../src/oci/media-types.js';
import { parseOutput, formatOutput } from '../../src/oci/output.js';
import { normalizeRepoTag } from '../../src/oci/archive.js';

const hex = (c: string): string => c.repeat(64);
const sha = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function fakeLayer(c: string, extra: Partial<Layer> = {}): Layer {
  return {
    digest: `sha256:${hex(c)}`,
    diffId: `sha256:${hex(c === 'a' ? 'b' : 'c')}`,
    size: 100,
    mediaType: OCI_LAYER_GZIP,
    open: () => Readable.from([]),
    ...extra,
  };
}

const base: ImageConfigInput = {
  architecture: 'arm64',
  os: 'linux',
  variant: 'v8',
  created: new Date('2024-05-06T07:08:09.123Z'),
  env: ['LANG=C.UTF-8'],
  entrypoint: ['/bin/app'],
  cmd: ['--serve'],
  workingDir: '/srv',
  user: '1000:1000',
  labels: { b: '2', a: '1' },
  exposedPorts: ['8080', '53/udp'],
};

function json(b: Buffer): Record<string, unknown> {
  return JSON.parse(b.toString('utf8')) as Record<string, unknown>;
}

describe('canonicalJson', () => {
  const cases: Array<[JsonValue, string]> = [
    [{ b: 1, a: { d: [3, { z: 1, y: 2 }], c: null } }, '{"a":{"c":null,"d":[3,{"y":2,"z":1}]},"b":1}'],
    [{ x: undefined, y: 'é' }, '{"y":"é"}'],
    [[], '[]'],
    ['s', '"s"'],
  ];
  for (const [input, want] of cases) {
    test(want, () => assert.equal(canonicalJson(input), want));
  }
});

describe('buildImage', () => {
  const layers = [
    fakeLayer('a', { history: { createdBy: 'apt install', comment: '3 packages' } }),
    fakeLayer('d', { mediaType: OCI_LAYER_ZSTD }),
  ];
  const image = buildImage(base, layers, { 'org.opencontainers.image.created': '2024-05-06T07:08:09Z' });

  test('is pure: the same inputs give the same bytes', () => {
    const again = buildImage({ ...base, labels: { a: '1', b: '2' } }, layers, { 'org.opencontainers.image.created': '2024-05-06T07:08:09Z' });
    assert.deepEqual(again.config.bytes, image.config.bytes);
    assert.deepEqual(again.manifest.bytes, image.manifest.bytes);
    assert.equal(again.manifest.descriptor.digest, image.manifest.descriptor.digest);
  });

  test('config: canonical bytes with the runtime config, rootfs and history', () => {
    const c = json(image.config.bytes);
    assert.equal(image.config.bytes.toString('utf8'), canonicalJson(c as JsonValue), 'canonical: sorted keys, no whitespace');
    assert.deepEqual(c, {
      architecture: 'arm64',
      os: 'linux',
      variant: 'v8',
      created: '2024-05-06T07:08:09Z',
      config: {
        Env: [DEFAULT_PATH, 'LANG=C.UTF-8'],
        Entrypoint: ['/bin/app'],
        Cmd: ['--serve'],
        WorkingDir: '/srv',
        User: '1000:1000',
        Labels: { a: '1', b: '2' },
        ExposedPorts: { '53/udp': {}, '8080/tcp': {} },
      },
      rootfs: { type: 'layers', diff_ids: [`sha256:${hex('b')}`, `sha256:${hex('c')}`] },
      history: [
        { created: '2024-05-06T07:08:09Z', created_by: 'apt install', comment: '3 packages' },
        { created: '2024-05-06T07:08:09Z', created_by: 'ocibuild' },
      ],
    });
    assert.deepEqual(image.config.descriptor, { mediaType: OCI_CONFIG, digest: sha(image.config.bytes), size: image.config.bytes.length });
  });

  test('manifest: OCI media types, layer descriptors, annotations, platform on the descriptor', () => {
    const m = json(image.manifest.bytes);
    assert.deepEqual(m, {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: image.config.descriptor,
      layers: [
        { mediaType: OCI_LAYER_GZIP, digest: `sha256:${hex('a')}`, size: 100 },
        { mediaType: OCI_LAYER_ZSTD, digest: `sha256:${hex('d')}`, size: 100 },
      ],
      annotations: { 'org.opencontainers.image.created': '2024-05-06T07:08:09Z' },
    });
    assert.deepEqual(image.manifest.descriptor, {
      mediaType: OCI_MANIFEST,
      digest: sha(image.manifest.bytes),
      size: image.manifest.bytes.length,
      platform: { architecture: 'arm64', os: 'linux', variant: 'v8' },
    });
    assert.equal(image.layers.length, 2);
  });

  test('a PATH given in env replaces the default; empty parts are left out', () => {
    const img = buildImage({ architecture: 'amd64', os: 'linux', created: new Date(0), env: ['PATH=/opt/bin'] }, []);
    const c = json(img.config.bytes);
    assert.deepEqual(c.config, { Env: ['PATH=/opt/bin'] });
    assert.equal(c.created, '1970-01-01T00:00:00Z');
    assert.deepEqual(c.rootfs, { type: 'layers', diff_ids: [] });
    assert.equal('annotations' in json(img.manifest.bytes), false);
  });

  const bad: Array<[string, Partial<ImageConfigInput>, string]> = [
    ['a port out of range', { exposedPorts: ['70000'] }, 'config.expose'],
    ['a port with a bad protocol', { exposedPorts: ['80/icmp'] }, 'config.expose'],
    ['an env entry without =', { env: ['JUSTNAME'] }, 'config.env'],
  ];
  for (const [name, over, where] of bad) {
    test(`rejects ${name} with a usage error`, () => {
      assert.throws(
        () => buildImage({ ...base, ...over }, []),
        (err: unknown) => err instanceof OcibuildError && err.exitCode === 2 && err.where === where,
      );
    });
  }

  test('rejects an empty_layer history on a real layer and a bad digest (programming errors)', () => {
    assert.throws(() => buildImage(base, [fakeLayer('a', { history: { createdBy: 'x', emptyLayer: true } })]), /empty_layer/);
    assert.throws(() => buildImage(base, [fakeLayer('a', { digest: 'md5:abc' })]), /sha256/);
    assert.throws(() => buildImage(base, [fakeLayer('a', { mediaType: 'text/plain' })]), /media type/);
  });

  test('rfc3339Seconds drops milliseconds and rejects invalid dates', () => {
    assert.equal(rfc3339Seconds(new Date(1700000000999)), '2023-11-14T22:13:20Z');
    assert.throws(() => rfc3339Seconds(new Date(NaN)));
  });
});

describe('parseOutput', () => {
  const good: Array<[string, ReturnType<typeof parseOutput>]> = [
    ['oci:out', { kind: 'oci', dir: 'out' }],
    ['oci:/tmp/x/out:v1.2', { kind: 'oci', dir: '/tmp/x/out', tag: 'v1.2' }],
    ['oci:out:team/app--x', { kind: 'oci', dir: 'out', tag: 'team/app--x' }],
    ['oci-archive:img.tar', { kind: 'oci-archive', file: 'img.tar' }],
    ['oci-archive:img.tar:latest', { kind: 'oci-archive', file: 'img.tar', tag: 'latest' }],
    ['docker-archive:img.tar', { kind: 'docker-archive', file: 'img.tar' }],
    ['docker-archive:img.tar:app', { kind: 'docker-archive', file: 'img.tar', ref: 'app' }],
    ['docker-archive:img.tar:localhost:5000/team/app:1.0', { kind: 'docker-archive', file: 'img.tar', ref: 'localhost:5000/team/app:1.0' }],
  ];
  for (const [spec, want] of good) {
    test(spec, () => {
      assert.deepEqual(parseOutput(spec), want);
      assert.equal(formatOutput(want), spec);
    });
  }
  const bad = ['out', 'dir:out', 'docker:app', 'oci:', 'oci::tag', 'oci:out:', 'oci:out:bad tag', 'oci:out:-x', 'docker-archive:f.tar:UPPER', 'docker-archive:f.tar:app@sha256:' + hex('a'), ''];
  for (const spec of bad) {
    test(`rejects ${JSON.stringify(spec)} with exit code 2`, () => {
      assert.throws(
        () => parseOutput(spec),
        (err: unknown) => err instanceof OcibuildError && err.exitCode === 2 && /output|tag|reference/.test(err.message),
      );
    });
  }
});

describe('normalizeRepoTag', () => {
  const cases: Array<[string, string]> = [
    ['app', 'app:latest'],
    ['app:1', 'app:1'],
    ['example.com/team/app', 'example.com/team/app:latest'],
    ['localhost:5000/app', 'localhost:5000/app:latest'],
    ['localhost:5000/app:v2', 'localhost:5000/app:v2'],
  ];
  for (const [ref, want] of cases) test(ref, () => assert.equal(normalizeRepoTag(ref), want));
});
