// oci-archive and docker-archive sinks, read back by skopeo (containers/image, the
// code podman load uses), plus determinism of the tar and the failure paths.
import { test, describe, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import tar from 'tar-stream';
import { OcibuildError } from '../../src/errors.js';
import { Store } from '../../src/store/store.js';
import { buildImage, type BuiltImage, type Layer } from '../../src/oci/image.js';
import { parseOutput, writeOutput } from '../../src/oci/output.js';
import { scratchDirs } from '../support/scratch.js';
import { busyboxLayer, helloConfig, run } from './support.js';

const dirs = await scratchDirs('oci-archive');
const sha = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

interface TarEntry {
  name: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  mtime: number;
  body: Buffer;
}

async function readTar(file: string): Promise<TarEntry[]> {
  const out: TarEntry[] = [];
  const ex = tar.extract();
  const done = (async () => {
    for await (const entry of ex) {
      const chunks: Buffer[] = [];
      for await (const c of entry as AsyncIterable<Buffer>) chunks.push(c);
      const h = entry.header;
      out.push({ name: h.name, type: h.type, mode: h.mode, uid: h.uid, gid: h.gid, uname: h.uname, gname: h.gname, mtime: h.mtime.getTime(), body: Buffer.concat(chunks) });
    }
  })();
  createReadStream(file).pipe(ex);
  await done;
  return out;
}

describe('archives', () => {
  let store: Store;
  let layer: Layer;
  let image: BuiltImage;

  before(async () => {
    store = new Store(await dirs('store'));
    layer = await busyboxLayer(store);
    image = buildImage(helloConfig(), [layer], { 'org.opencontainers.image.created': '2024-01-02T03:04:05Z' });
  });

  test('oci-archive: skopeo reads it, and the tar is deterministic', async () => {
    const d = await dirs('oci-archive');
    const file = join(d, 'image.tar');
    await writeOutput(parseOutput(`oci-archive:${file}:test`), image, { store });
    const info = JSON.parse((await run('skopeo', ['inspect', `oci-archive:${file}:test`])).stdout) as { Digest: string; Layers: string[] };
    assert.equal(info.Digest, image.manifest.descriptor.digest);
    assert.deepEqual(info.Layers, [layer.digest]);

    const copy = join(d, 'again.tar');
    await writeOutput(parseOutput(`oci-archive:${copy}:test`), image, { store });
    assert.equal(sha(await readFile(copy)), sha(await readFile(file)), 'same image, same bytes');

    const entries = await readTar(file);
    const names = entries.map((e) => e.name);
    assert.deepEqual(names, [...names].sort());
    assert.deepEqual(names, [
      'blobs/',
      'blobs/sha256/',
      ...[layer.digest, image.config.descriptor.digest, image.manifest.descriptor.digest].map((x) => `blobs/sha256/${x.slice(7)}`).sort(),
      'index.json',
      'oci-layout',
    ]);
    for (const e of entries) {
      assert.deepEqual([e.mtime, e.uid, e.gid, e.uname, e.gname], [0, 0, 0, '', ''], e.name);
      assert.equal(e.mode, e.type === 'directory' ? 0o755 : 0o644, e.name);
      if (e.name.startsWith('blobs/sha256/') && e.type === 'file') assert.equal(sha(e.body), `sha256:${e.name.slice(13)}`);
    }
    const index = JSON.parse(entries.find((e) => e.name === 'index.json')!.body.toString('utf8')) as {
      manifests: Array<{ digest: string; annotations: Record<string, string> }>;
    };
    assert.equal(index.manifests[0]?.annotations['org.opencontainers.image.ref.name'], 'test');
    assert.deepEqual((await readdir(d)).sort(), ['again.tar', 'image.tar'], 'no temp files left');
  });

  test('docker-archive: manifest.json names the config and gzip layers; skopeo reads and copies it', async () => {
    const d = await dirs('docker-archive');
    const file = join(d, 'image.tar');
    await writeOutput(parseOutput(`docker-archive:${file}:example.com/team/hello:1.0`), image, { store });
    const entries = await readTar(file);
    const manifest = JSON.parse(entries.find((e) => e.name === 'manifest.json')!.body.toString('utf8')) as unknown;
    assert.deepEqual(manifest, [
      {
        Config: `blobs/sha256/${image.config.descriptor.digest.slice(7)}`,
        Layers: [`blobs/sha256/${layer.digest.slice(7)}`],
        RepoTags: ['example.com/team/hello:1.0'],
      },
    ]);
    const info = JSON.parse((await run('skopeo', ['inspect', `docker-archive:${file}:example.com/team/hello:1.0`])).stdout) as {
      Name: string;
      Layers: string[];
      Architecture: string;
    };
    assert.equal(info.Name, 'example.com/team/hello');
    // containers/image describes docker-archive layers by their diffIDs (uncompressed).
    assert.deepEqual(info.Layers, [layer.diffId]);

    // A copy reads every layer and checks it against the config's diff_ids.
    const out = join(await dirs('docker-copy'), 'l');
    await run('skopeo', ['copy', `docker-archive:${file}`, `oci:${out}:x`]);
    const config = JSON.parse((await run('skopeo', ['inspect', '--config', '--raw', `oci:${out}:x`])).stdout) as {
      rootfs: { diff_ids: string[] };
      config: { Entrypoint: string[] };
    };
    assert.deepEqual(config.rootfs.diff_ids, [layer.diffId]);
    assert.deepEqual(config.config.Entrypoint, ['/bin/busybox', 'echo', 'hello from ocibuild']);

    const untagged = join(d, 'untagged.tar');
    await writeOutput(parseOutput(`docker-archive:${untagged}`), image, { store, tag: 'hello' });
    const m2 = JSON.parse((await readTar(untagged)).find((e) => e.name === 'manifest.json')!.body.toString('utf8')) as Array<{ RepoTags: string[] }>;
    assert.deepEqual(m2[0]?.RepoTags, ['hello:latest']);
  });

  test('a failed archive write keeps the old file and leaves no temp file', async () => {
    const d = await dirs('fail');
    for (const kind of ['oci-archive', 'docker-archive']) {
      const file = join(d, `${kind}.tar`);
      await writeOutput(parseOutput(`${kind}:${file}`), image, { store });
      const old = sha(await readFile(file));
      const corrupt: Layer = { ...layer, digest: `sha256:${'f'.repeat(64)}` };
      const broken = buildImage(helloConfig({ cmd: ['x'] }), [corrupt]);
      await assert.rejects(
        writeOutput(parseOutput(`${kind}:${file}`), broken, { store }),
        (err: unknown) => err instanceof OcibuildError && /sha256 mismatch/.test(err.message),
      );
      assert.equal(sha(await readFile(file)), old, `${kind}: old archive kept`);
      const fresh = join(d, `fresh-${kind}.tar`);
      await assert.rejects(writeOutput(parseOutput(`${kind}:${fresh}`), broken, { store }), /sha256 mismatch/);
      await assert.rejects(stat(fresh), /ENOENT/);
    }
    assert.deepEqual((await readdir(d)).sort(), ['docker-archive.tar', 'oci-archive.tar']);
  });

  test('an archive path that is a directory or under a missing directory is a clear error', async () => {
    const d = await dirs('bad-path');
    await assert.rejects(
      writeOutput(parseOutput(`oci-archive:${d}`), image, { store }),
      (err: unknown) => err instanceof OcibuildError && /is a directory/.test(err.message),
    );
    await assert.rejects(
      writeOutput(parseOutput(`docker-archive:${join(d, 'missing', 'x.tar')}`), image, { store }),
      (err: unknown) => err instanceof OcibuildError && /no such file or directory/.test(err.message) && err.hint !== undefined,
    );
    await writeFile(join(d, 'file'), 'x');
    await assert.rejects(
      writeOutput(parseOutput(`oci-archive:${join(d, 'file', 'x.tar')}`), image, { store }),
      (err: unknown) => err instanceof OcibuildError && /not a directory/.test(err.message),
    );
    assert.deepEqual((await readdir(d)).sort(), ['file']);
  });
});
