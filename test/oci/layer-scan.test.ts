import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { OcibuildError } from '../../src/errors.js';
import type { Layer } from '../../src/oci/image.js';
import { scanLayers } from '../../src/oci/layer-scan.js';
import { OCI_LAYER_GZIP, OCI_LAYER_TAR } from '../../src/oci/media-types.js';

type Entry = { name: string; type?: 'file' | 'directory' | 'symlink'; body?: string; linkname?: string; mode?: number; uid?: number; gid?: number; mtime?: Date };

async function layer(entries: Entry[], gzip = true): Promise<Layer> {
  const pack = tar.pack();
  for (const e of entries) {
    const meta = { ...(e.uid !== undefined ? { uid: e.uid } : {}), ...(e.gid !== undefined ? { gid: e.gid } : {}), ...(e.mtime ? { mtime: e.mtime } : {}) };
    if (e.type === 'directory') pack.entry({ name: e.name, type: 'directory', mode: e.mode ?? 0o755, ...meta });
    else if (e.type === 'symlink') pack.entry({ name: e.name, type: 'symlink', linkname: e.linkname ?? '', ...(e.mode !== undefined ? { mode: e.mode } : {}), ...meta });
    else pack.entry({ name: e.name, mode: 0o644 }, e.body ?? '');
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack as AsyncIterable<Buffer>) chunks.push(c);
  const raw = Buffer.concat(chunks);
  const bytes = gzip ? gzipSync(raw) : raw;
  const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
  return { digest: sha(bytes), diffId: sha(raw), size: bytes.length, mediaType: gzip ? OCI_LAYER_GZIP : OCI_LAYER_TAR, open: () => Readable.from([bytes]) };
}

const STATUS = 'var/lib/dpkg/status';

test('the topmost copy of a file wins; kinds of top-level paths', async () => {
  const l1 = await layer([{ name: 'bin', type: 'symlink', linkname: 'usr/bin', mode: 0o777, uid: 0, gid: 0, mtime: new Date(1700000000 * 1000) }, { name: 'var/lib/dpkg/', type: 'directory', mode: 0o1777, uid: 3, gid: 4 }, { name: STATUS, body: 'one' }]);
  const l2 = await layer([{ name: './var/lib/dpkg/status', body: 'two' }], false);
  const r = await scanLayers([l1, l2], [STATUS], ['bin', 'lib', 'sbin', 'var/lib/dpkg']);
  assert.equal(r.files.get(STATUS)?.toString(), 'two');
  assert.deepEqual(r.kinds.get('bin'), { kind: 'symlink', linkname: 'usr/bin', mode: 0o777, uid: 0, gid: 0, mtime: 1700000000 }, 'with its metadata');
  assert.equal(r.kinds.has('lib'), false);
  const dir = r.kinds.get('var/lib/dpkg');
  assert.deepEqual([dir?.kind, dir?.mode, dir?.uid, dir?.gid], ['directory', 0o1777, 3, 4]);
});

test('whiteouts and opaque directories hide lower copies', async () => {
  const base = await layer([{ name: STATUS, body: 'base' }, { name: 'bin/', type: 'directory' }]);
  const whiteout = await layer([{ name: 'var/lib/dpkg/.wh.status' }]);
  assert.equal((await scanLayers([base, whiteout], [STATUS])).files.has(STATUS), false);

  const parentGone = await layer([{ name: 'var/lib/.wh.dpkg' }]);
  assert.equal((await scanLayers([base, parentGone], [STATUS])).files.has(STATUS), false);

  const opaque = await layer([{ name: 'var/lib/dpkg/.wh..wh..opq' }, { name: 'var/lib/dpkg/other', body: 'x' }]);
  assert.equal((await scanLayers([base, opaque], [STATUS])).files.has(STATUS), false);

  // An opaque directory keeps its own layer's entries.
  const opaqueWithFile = await layer([{ name: 'var/lib/dpkg/.wh..wh..opq' }, { name: STATUS, body: 'mine' }]);
  assert.equal((await scanLayers([base, opaqueWithFile], [STATUS])).files.get(STATUS)?.toString(), 'mine');

  // Deleted and recreated above the whiteout.
  const again = await layer([{ name: STATUS, body: 'again' }]);
  assert.equal((await scanLayers([base, whiteout, again], [STATUS])).files.get(STATUS)?.toString(), 'again');

  const binGone = await layer([{ name: '.wh.bin' }]);
  assert.equal((await scanLayers([base, binGone], [], ['bin'])).kinds.has('bin'), false);
  assert.equal((await scanLayers([base], [], ['bin'])).kinds.get('bin')?.kind, 'directory');
});

test('a corrupt layer is an error naming it', async () => {
  const good = await layer([{ name: STATUS, body: 'x' }]);
  const broken: Layer = { ...good, open: () => Readable.from([Buffer.from('not gzip at all')]) };
  await assert.rejects(scanLayers([broken], [STATUS]), (err: unknown) => {
    assert.ok(err instanceof OcibuildError);
    assert.match(err.format(), new RegExp(`layer ${good.digest}.*cannot read`));
    return true;
  });
});
