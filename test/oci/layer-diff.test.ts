// The layer comparison behind `ocibuild verify`: tars built here with tar-stream (any
// order, any header), compressed with gzip, zstd or not at all, compared entry by entry.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { compressor } from '../../src/layer/compress.js';
import { OcibuildError } from '../../src/errors.js';
import { diffLayers, formatPathDifference, movedEntries } from '../../src/oci/layer-diff.js';
import { layerEntries } from '../../src/oci/layer-entries.js';
import { diffJson, formatJsonDifference } from '../../src/oci/json-diff.js';
import { compareImages } from '../../src/oci/image-diff.js';
import { buildImage, type Layer } from '../../src/oci/image.js';
import { OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD } from '../../src/oci/media-types.js';

type Entry = { header: Parameters<tar.Pack['entry']>[0]; body?: string | Buffer };

const base = { uid: 0, gid: 0, uname: '', gname: '', mtime: new Date(1_700_000_000_000), mode: 0o644 };
const dir = (name: string): Entry => ({ header: { ...base, name, type: 'directory', mode: 0o755 } });
const file = (name: string, body: string, extra: Partial<Entry['header']> = {}): Entry => ({ header: { ...base, name, type: 'file', ...extra }, body });

async function tarBytes(entries: Entry[]): Promise<Buffer> {
  const pack = tar.pack();
  const out = buffer(pack);
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (e.body !== undefined) pack.entry(e.header, e.body, cb);
      else pack.entry(e.header, cb);
    });
  }
  pack.finalize();
  return out;
}

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A Layer over bytes in memory, compressed as asked. */
async function layer(entries: Entry[], kind: 'gzip' | 'zstd' | 'none' = 'gzip', gzipLevel = 6): Promise<Layer> {
  const raw = await tarBytes(entries);
  const blob = kind === 'gzip' ? gzipSync(raw, { level: gzipLevel }) : kind === 'zstd' ? await buffer(Readable.from([raw]).pipe(compressor('zstd'))) : raw;
  return {
    digest: sha(blob),
    diffId: sha(raw),
    size: blob.length,
    mediaType: kind === 'gzip' ? OCI_LAYER_GZIP : kind === 'zstd' ? OCI_LAYER_ZSTD : OCI_LAYER_TAR,
    open: () => Readable.from([blob]),
  };
}

const TREE: Entry[] = [dir('etc/'), file('etc/a', 'alpha\n'), file('etc/b', 'beta\n'), { header: { ...base, name: 'etc/link', type: 'symlink', linkname: 'a', mode: 0o777 } }, dir('usr/'), file('usr/c', 'gamma\n')];

function fields(d: Awaited<ReturnType<typeof diffLayers>>, path: string): string[] {
  return d.differences.find((x) => x.path === path)?.fields.map((f) => f.field) ?? [];
}

test('the same tar, gzip against zstd against none: no difference, same diffId', async () => {
  const gz = await layer(TREE, 'gzip');
  for (const other of [await layer(TREE, 'zstd'), await layer(TREE, 'none'), await layer(TREE, 'gzip', 1)]) {
    const d = await diffLayers(gz, other);
    assert.equal(d.total, 0);
    assert.deepEqual(d.differences, []);
    assert.equal(d.diffIds.a, gz.diffId);
    assert.equal(d.diffIds.b, gz.diffId);
    assert.deepEqual(d.entries, { a: TREE.length, b: TREE.length });
  }
});

test('each field that differs is named with both values', async () => {
  const changed: Entry[] = [
    dir('etc/'),
    file('etc/a', 'ALPHA\n'), // same size, other content
    file('etc/b', 'beta!!\n', { mode: 0o755, uid: 1000, gid: 1000, mtime: new Date(1_700_000_001_000) }),
    { header: { ...base, name: 'etc/link', type: 'symlink', linkname: 'b', mode: 0o777 } },
    dir('usr/'),
    file('usr/c', 'gamma\n', { pax: { 'SCHILY.xattr.user.origin': 'test' } }),
  ];
  const d = await diffLayers(await layer(TREE), await layer(changed));
  assert.equal(d.total, 4);
  assert.deepEqual(fields(d, '/etc/a'), ['content']);
  assert.deepEqual(fields(d, '/etc/b'), ['content', 'size', 'mode', 'uid/gid', 'mtime']);
  assert.deepEqual(fields(d, '/etc/link'), ['link target']);
  assert.deepEqual(fields(d, '/usr/c'), ['xattrs']);
  const b = d.differences.find((x) => x.path === '/etc/b')!;
  assert.deepEqual(b.fields.find((f) => f.field === 'mode'), { field: 'mode', a: '0644', b: '0755' });
  assert.deepEqual(b.fields.find((f) => f.field === 'uid/gid'), { field: 'uid/gid', a: '0:0', b: '1000:1000' });
  assert.deepEqual(b.fields.find((f) => f.field === 'mtime'), { field: 'mtime', a: '1700000000', b: '1700000001' });
  assert.equal(formatPathDifference(d.differences.find((x) => x.path === '/usr/c')!, { a: 'A', b: 'B' }), '/usr/c: xattrs (user.origin=(absent) vs user.origin="test")');
  assert.match(formatPathDifference(d.differences.find((x) => x.path === '/etc/a')!, { a: 'A', b: 'B' }), /^\/etc\/a: content \(sha256 [0-9a-f]{16}… vs sha256 [0-9a-f]{16}…\)$/);
  assert.notEqual(d.diffIds.a, d.diffIds.b);
});

test('paths on one side only, and a type change', async () => {
  const other: Entry[] = [dir('etc/'), file('etc/a', 'alpha\n'), dir('etc/b/'), file('etc/new', 'n\n'), { header: { ...base, name: 'etc/link', type: 'symlink', linkname: 'a', mode: 0o777 } }, dir('usr/')];
  const d = await diffLayers(await layer(TREE), await layer(other));
  const labels = { a: 'rebuild', b: 'reference' };
  assert.deepEqual(
    d.differences.map((x) => formatPathDifference(x, labels)),
    ['/etc/b: type (file vs directory), size (5 vs 0), mode (0644 vs 0755), name ("etc/b" vs "etc/b/")', '/etc/new: only in reference', '/usr/c: only in rebuild'],
  );
});

test('the same entries in another order: the moved ones are named, nothing else', async () => {
  const moved = [TREE[0]!, TREE[2]!, TREE[3]!, TREE[1]!, TREE[4]!, TREE[5]!];
  const d = await diffLayers(await layer(TREE), await layer(moved));
  assert.equal(d.total, 1);
  assert.deepEqual(d.differences, [{ path: '/etc/a', fields: [{ field: 'entry order', a: '#2', b: '#4' }] }]);
});

test('the name as written: ./etc/a against etc/a', async () => {
  const dotted = TREE.map((e) => ({ ...e, header: { ...e.header, name: `./${e.header.name}` } }));
  const d = await diffLayers(await layer(TREE), await layer(dotted));
  assert.equal(d.total, TREE.length);
  assert.deepEqual(fields(d, '/etc/a'), ['name']);
});

test('the list stops at the limit and counts the rest', async () => {
  const many = (suffix: string): Entry[] => Array.from({ length: 70 }, (_, i) => file(`f${String(i).padStart(3, '0')}`, `${i}${suffix}\n`));
  const d = await diffLayers(await layer(many('')), await layer(many('x')), { limit: 50 });
  assert.equal(d.differences.length, 50);
  assert.equal(d.total, 70);
  assert.equal(d.differences[0]!.path, '/f000');
});

test('a repeated path is paired occurrence by occurrence', async () => {
  const twice = [file('x', 'one\n'), file('x', 'two\n')];
  assert.equal((await diffLayers(await layer(twice), await layer(twice))).total, 0);
  const d = await diffLayers(await layer(twice), await layer([file('x', 'one\n')]));
  assert.deepEqual(d.differences.map((x) => [x.path, x.onlyIn]), [['/x', 'a']]);
});

test('a big layer streams: entries come while the blob is still being read, and an early stop ends the reading', async () => {
  const entries = Array.from({ length: 3000 }, (_, i) => file(`d/${String(i).padStart(5, '0')}`, 'x'.repeat(700)));
  const l = await layer(entries);
  let read = 0;
  const counted: Layer = {
    ...l,
    open: () => {
      const inner = l.open();
      return Readable.from((async function* () {
        for await (const c of inner as AsyncIterable<Buffer>) {
          for (let i = 0; i < c.length; i += 4096) {
            read += Math.min(4096, c.length - i);
            yield c.subarray(i, i + 4096);
          }
        }
      })());
    },
  };
  const it = layerEntries(counted);
  const first = await it.next();
  assert.equal(first.done, false);
  assert.ok(read < l.size, `the first entry came after ${read} of ${l.size} bytes`);
  await it.return('');
  const d = await diffLayers(l, counted);
  assert.equal(d.total, 0);
  assert.equal(d.entries.a, 3000);
});

test('a damaged blob is an error naming the layer', async () => {
  const l = await layer(TREE);
  const broken: Layer = { ...l, open: () => Readable.from([Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0]), Buffer.alloc(40, 0xff)])]) };
  await assert.rejects(diffLayers(l, broken), (err: unknown) => err instanceof OcibuildError && err.message.includes(l.digest));
});

test('movedEntries: the fewest entries that explain the order', () => {
  const pairs = (bs: number[]): Array<{ a: number; b: number }> => bs.map((b, a) => ({ a, b }));
  assert.deepEqual(movedEntries(pairs([0, 1, 2, 3])), []);
  assert.deepEqual(movedEntries(pairs([3, 0, 1, 2])), [{ a: 0, b: 3 }]);
  assert.deepEqual(movedEntries(pairs([1, 2, 3, 0])), [{ a: 3, b: 0 }]);
  assert.equal(movedEntries(pairs([3, 2, 1, 0])).length, 3);
  assert.deepEqual(movedEntries([]), []);
});

test('diffJson names the members that differ', () => {
  const a = { created: '2023-11-14T22:13:20Z', config: { Env: ['A=1', 'B=2'], Labels: { 'org.example.x': '1' } }, rootfs: { diff_ids: ['sha256:a', 'sha256:b'] } };
  const b = { created: '2023-11-14T22:13:21Z', config: { Env: ['A=1'], Labels: { 'org.example.x': '2' } }, rootfs: { diff_ids: ['sha256:a', 'sha256:c'] }, extra: true };
  const d = diffJson(a, b);
  assert.deepEqual(d.differences.map(formatJsonDifference), [
    'config.Env[1]: "B=2" vs (absent)',
    'config.Labels["org.example.x"]: "1" vs "2"',
    'created: "2023-11-14T22:13:20Z" vs "2023-11-14T22:13:21Z"',
    'extra: (absent) vs true',
    'rootfs.diff_ids[1]: "sha256:b" vs "sha256:c"',
  ]);
  assert.equal(diffJson(a, structuredClone(a)).total, 0);
  assert.equal(diffJson(a, b, 2).differences.length, 2);
  assert.equal(diffJson(a, b, 2).total, 5);
});

test('compareImages: equal tars compressed differently are a compression difference, not a file difference', async () => {
  const config = { architecture: 'amd64', os: 'linux', created: new Date(1_700_000_000_000), env: [] };
  const l6 = { ...(await layer(TREE, 'gzip', 6)), history: { createdBy: 'test layer' } };
  const l1 = { ...(await layer(TREE, 'gzip', 1)), history: { createdBy: 'test layer' } };
  assert.equal(l6.diffId, l1.diffId);
  assert.notEqual(l6.digest, l1.digest);
  const c = await compareImages(buildImage(config, [l6]), buildImage(config, [l1]));
  assert.equal(c.match, false);
  assert.equal(c.layers[0]!.diffIdMatch, true);
  assert.equal(c.layers[0]!.digestMatch, false);
  assert.equal(c.layers[0]!.diff, undefined, 'no need to read equal tars');
  assert.match(c.layers[0]!.compression!, /compressor differs/);
  assert.equal(c.layers[0]!.createdBy, 'test layer');
  assert.equal(c.config.match, true);
  assert.equal(c.manifest.match, false);
  assert.deepEqual(c.manifest.diff!.differences.map((d) => d.path), ['layers[0].digest', 'layers[0].size']);
  const same = await compareImages(buildImage(config, [l6]), buildImage(config, [l6]));
  assert.equal(same.match, true);
});
