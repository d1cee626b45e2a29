// The OCI image layout sink against real judges: umoci unpacks it, runc runs the
// unpacked bundle, skopeo reads and copies it. Then the failure paths: each a clear
// OcibuildError and the destination exactly as it was before.
import { test, describe, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmod, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { OcibuildError } from '../../src/errors.js';
import { Store } from '../../src/store/store.js';
import { buildImage, type BuiltImage, type Layer } from '../../src/oci/image.js';
import { inspectLayout } from '../../src/oci/inspect.js';
import { parseOutput, writeOutput } from '../../src/oci/output.js';
import { writeLayout } from '../../src/oci/layout.js';
import { scratchDirs } from '../support/scratch.js';
import { HELLO, busyboxLayer, helloConfig, helloImage, run } from './support.js';

const dirs = await scratchDirs('oci-layout');
const sha = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

interface IndexJson {
  manifests: Array<{ digest: string; annotations?: Record<string, string>; platform?: unknown }>;
}

async function readIndexJson(dir: string): Promise<IndexJson> {
  return JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as IndexJson;
}

/** Every path under `dir` with its size: "nothing changed" is this being equal. */
async function snapshot(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) {
        out.set(p, 'dir');
        await walk(p);
      } else out.set(p, sha(await readFile(p)));
    }
  };
  await walk(dir);
  return out;
}

/** A layer that delivers some bytes then fails, as a dying disk or a killed reader would. */
function failingLayer(good: Layer): Layer {
  return {
    ...good,
    digest: `sha256:${'e'.repeat(64)}`,
    open: () =>
      Readable.from(
        (async function* () {
          yield Buffer.alloc(4096, 1);
          throw new Error('simulated read failure');
        })(),
      ),
  };
}

/** A layer whose bytes do not match its digest, as a damaged store blob would be. */
function corruptLayer(good: Layer): Layer {
  return { ...good, digest: `sha256:${'f'.repeat(64)}` };
}

describe('oci:DIR output', () => {
  let store: Store;
  let image: BuiltImage;
  let layout: string;

  before(async () => {
    store = new Store(await dirs('store'));
    image = await helloImage(store);
    layout = join(await dirs('layout'), 'image');
    await writeOutput(parseOutput(`oci:${layout}:test`), image, { store });
  });

  test('writes oci-layout, index.json and every blob', async () => {
    assert.deepEqual(JSON.parse(await readFile(join(layout, 'oci-layout'), 'utf8')), { imageLayoutVersion: '1.0.0' });
    const index = await readIndexJson(layout);
    assert.equal(index.manifests.length, 1);
    assert.deepEqual(index.manifests[0], {
      ...image.manifest.descriptor,
      annotations: { 'org.opencontainers.image.ref.name': 'test' },
    });
    const blobs = (await readdir(join(layout, 'blobs', 'sha256'))).sort();
    const want = [image.manifest.descriptor.digest, image.config.descriptor.digest, image.layers[0]!.digest]
      .map((d) => d.slice(7))
      .sort();
    assert.deepEqual(blobs, want);
    for (const b of blobs) assert.equal(sha(await readFile(join(layout, 'blobs', 'sha256', b))), `sha256:${b}`);
    assert.equal((await readdir(layout)).filter((n) => n.endsWith('.tmp')).length, 0, 'no temp files left');
  });

  test('hard-links layer blobs from the store when it can', async () => {
    const inLayout = await stat(join(layout, 'blobs', 'sha256', image.layers[0]!.digest.slice(7)));
    const inStore = await stat(store.blobPath(image.layers[0]!.digest));
    assert.equal(inLayout.ino, inStore.ino);
  });

  test('umoci unpacks it and runc runs the entrypoint', async () => {
    const bundle = join(await dirs('bundle'), 'b');
    await run('umoci', ['unpack', '--image', `${layout}:test`, bundle]);
    const configPath = join(bundle, 'config.json');
    const config = JSON.parse(await readFile(configPath, 'utf8')) as { process: { terminal: boolean; args: string[] } };
    assert.deepEqual(config.process.args, ['/bin/busybox', 'echo', HELLO]);
    config.process.terminal = false;
    await writeFile(configPath, JSON.stringify(config));
    const { stdout } = await run('runc', ['run', '--bundle', bundle, `ocibuild-test-${process.pid}`]);
    assert.equal(stdout.trim(), HELLO);
  });

  test('skopeo inspect shows the manifest, config and layer digests', async () => {
    const info = JSON.parse((await run('skopeo', ['inspect', `oci:${layout}:test`])).stdout) as {
      Digest: string;
      Layers: string[];
      Architecture: string;
      Os: string;
      Created: string;
    };
    assert.equal(info.Digest, image.manifest.descriptor.digest);
    assert.deepEqual(info.Layers, [image.layers[0]!.digest]);
    assert.equal(info.Os, 'linux');
    assert.equal(info.Created, '2024-01-02T03:04:05Z');
    const rawManifest = (await run('skopeo', ['inspect', '--raw', `oci:${layout}:test`])).stdout;
    assert.equal(rawManifest, image.manifest.bytes.toString('utf8'));
    const rawConfig = (await run('skopeo', ['inspect', '--config', '--raw', `oci:${layout}:test`])).stdout;
    assert.equal(sha(Buffer.from(rawConfig)), image.config.descriptor.digest);
  });

  test('skopeo copy to another layout keeps the manifest digest', async () => {
    const other = join(await dirs('copy'), 'other');
    await run('skopeo', ['copy', `oci:${layout}:test`, `oci:${other}:x`]);
    const index = await readIndexJson(other);
    assert.equal(index.manifests[0]?.digest, image.manifest.descriptor.digest);
  });

  test('inspectLayout prints digests, platform, created, runtime config and the layer table', async () => {
    const text = await inspectLayout(`oci:${layout}:test`);
    for (const want of [
      image.manifest.descriptor.digest,
      image.config.descriptor.digest,
      'linux/',
      '2024-01-02T03:04:05Z',
      `["/bin/busybox","echo","${HELLO}"]`,
      'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      'org.opencontainers.image.created=2024-01-02T03:04:05Z',
    ]) {
      assert.ok(text.includes(want), `inspect output lacks ${want}:\n${text}`);
    }
    const row = text.split('\n').find((l) => l.startsWith(image.layers[0]!.digest));
    assert.match(row ?? '', /MiB\s+test: busybox-static$/);
    await assert.rejects(inspectLayout(`oci:${layout}:nope`), (err: unknown) => err instanceof OcibuildError && /no image tagged "nope"/.test(err.message) && /test/.test(err.hint ?? ''));
  });
});

describe('tags in one layout', () => {
  test('two tags coexist, rewriting a tag keeps one entry, an untagged write is added once', async () => {
    const store = new Store(await dirs('store'));
    const layer = await busyboxLayer(store);
    const first = buildImage(helloConfig(), [layer]);
    const second = buildImage(helloConfig({ cmd: ['second'] }), [layer]);
    const third = buildImage(helloConfig({ cmd: ['third'] }), [layer]);
    const dir = join(await dirs('layout'), 'l');

    await writeLayout(dir, first, { tag: 'one', store });
    await writeLayout(dir, second, { tag: 'two', store });
    let index = await readIndexJson(dir);
    assert.deepEqual(
      index.manifests.map((m) => [m.annotations?.['org.opencontainers.image.ref.name'], m.digest]),
      [['one', first.manifest.descriptor.digest], ['two', second.manifest.descriptor.digest]],
    );
    for (const [tag, img] of [['one', first], ['two', second]] as const) {
      const info = JSON.parse((await run('skopeo', ['inspect', `oci:${dir}:${tag}`])).stdout) as { Digest: string };
      assert.equal(info.Digest, img.manifest.descriptor.digest);
    }

    await writeLayout(dir, third, { tag: 'one', store });
    index = await readIndexJson(dir);
    assert.deepEqual(
      index.manifests.map((m) => [m.annotations?.['org.opencontainers.image.ref.name'], m.digest]),
      [['one', third.manifest.descriptor.digest], ['two', second.manifest.descriptor.digest]],
    );
    const again = await readFile(join(dir, 'index.json'));
    await writeLayout(dir, third, { tag: 'one', store });
    assert.deepEqual(await readFile(join(dir, 'index.json')), again, 'rewriting the same image and tag changes nothing');

    await writeLayout(dir, first, { store });
    await writeLayout(dir, first, { store });
    index = await readIndexJson(dir);
    assert.equal(index.manifests.length, 3);
    assert.equal(index.manifests[2]?.annotations, undefined);
    const info = JSON.parse((await run('skopeo', ['inspect', `oci:${dir}:two`])).stdout) as { Digest: string };
    assert.equal(info.Digest, second.manifest.descriptor.digest);
  });

  test('members of an existing index.json that ocibuild does not know are kept', async () => {
    const store = new Store(await dirs('store'));
    const img = await helloImage(store);
    const dir = join(await dirs('layout'), 'l');
    await writeLayout(dir, img, { tag: 'a', store });
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as Record<string, unknown> & IndexJson;
    index.annotations = { 'com.example.note': 'kept' };
    (index.manifests[0] as Record<string, unknown>).urls = ['https://example.com/x'];
    await writeFile(join(dir, 'index.json'), JSON.stringify(index));
    await writeLayout(dir, img, { tag: 'b', store });
    const after = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as Record<string, unknown> & IndexJson;
    assert.deepEqual(after.annotations, { 'com.example.note': 'kept' });
    assert.deepEqual((after.manifests[0] as Record<string, unknown>).urls, ['https://example.com/x']);
    assert.equal(after.manifests.length, 2);
  });
});

describe('oci:DIR failures leave the destination as it was', () => {
  let store: Store;
  let image: BuiltImage;
  let goodLayer: Layer;

  before(async () => {
    store = new Store(await dirs('store'));
    goodLayer = await busyboxLayer(store);
    image = buildImage(helloConfig(), [goodLayer]);
  });

  const isOutputError = (pattern: RegExp) => (err: unknown) =>
    err instanceof OcibuildError && err.exitCode === 1 && pattern.test(err.message) && err.hint !== undefined;

  test('an existing directory that is not a layout is refused and untouched', async () => {
    const dir = await dirs('not-layout');
    await writeFile(join(dir, 'notes.txt'), 'mine');
    const before = await snapshot(dir);
    await assert.rejects(writeOutput(parseOutput(`oci:${dir}:t`), image, { store }), isOutputError(/not an OCI image layout/));
    assert.deepEqual(await snapshot(dir), before);
  });

  test('a path whose parent is a file is a clear error and creates nothing', async () => {
    const d = await dirs('enotdir');
    await writeFile(join(d, 'file'), 'x');
    const before = await snapshot(d);
    await assert.rejects(
      writeOutput(parseOutput(`oci:${join(d, 'file', 'layout')}:t`), image, { store }),
      isOutputError(/cannot write the output: a parent of the path is not a directory/),
    );
    assert.deepEqual(await snapshot(d), before);
  });

  test('an unwritable directory is a clear error and creates nothing', async () => {
    const d = await dirs('readonly');
    let cleanup = async (): Promise<void> => undefined;
    if (process.getuid?.() === 0) {
      // Root ignores permission bits; a read-only mount is what stops it.
      await run('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', d]);
      cleanup = async () => void (await run('umount', [d]));
    } else {
      await chmod(d, 0o555);
    }
    try {
      await assert.rejects(
        writeOutput(parseOutput(`oci:${join(d, 'layout')}:t`), image, { store }),
        isOutputError(/cannot write the output: (read-only filesystem|permission denied)/),
      );
      assert.deepEqual(await readdir(d), []);
    } finally {
      await cleanup();
    }
  });

  for (const [name, makeLayer, pattern] of [
    ['a blob copy that fails midway', failingLayer, /simulated read failure/],
    ['a blob whose bytes do not match its digest', corruptLayer, /sha256 mismatch/],
  ] as const) {
    test(`${name}: index.json unchanged, no new blob or temp file`, async () => {
      const dir = join(await dirs('interrupted'), 'l');
      await writeLayout(dir, image, { tag: 'kept', store });
      const before = await snapshot(dir);
      const broken = buildImage(helloConfig({ cmd: ['other'] }), [goodLayer, makeLayer(goodLayer)]);
      for (const tag of ['kept', 'new']) {
        await assert.rejects(writeLayout(dir, broken, { tag, store }), (err: unknown) => err instanceof Error && pattern.test(err.message));
        assert.deepEqual(await snapshot(dir), before);
      }
      const info = JSON.parse((await run('skopeo', ['inspect', `oci:${dir}:kept`])).stdout) as { Digest: string };
      assert.equal(info.Digest, image.manifest.descriptor.digest);

      const fresh = join(await dirs('fresh'), 'l');
      await assert.rejects(writeLayout(fresh, broken, { tag: 'x', store }), pattern);
      await assert.rejects(stat(fresh), /ENOENT/, 'a new layout that failed is removed whole');
    });
  }

  test('an aborted write changes nothing', async () => {
    const dir = join(await dirs('aborted'), 'l');
    await writeLayout(dir, image, { tag: 'kept', store });
    const before = await snapshot(dir);
    const abort = new AbortController();
    abort.abort(new Error('stop'));
    const other = buildImage(helloConfig({ cmd: ['x'] }), [goodLayer]);
    await assert.rejects(writeOutput(parseOutput(`oci:${dir}:kept`), other, { store, signal: abort.signal }), /stop/);
    assert.deepEqual(await snapshot(dir), before);
  });

  test('a layer not in the store is copied through Layer.open()', async () => {
    const dir = join(await dirs('copy'), 'l');
    const bytes = await readFile(store.blobPath(goodLayer.digest));
    const streamed: Layer = { ...goodLayer, open: () => Readable.from([bytes]) };
    const img = buildImage(helloConfig(), [streamed]);
    await writeLayout(dir, img, { tag: 't' });
    const st = await stat(join(dir, 'blobs', 'sha256', goodLayer.digest.slice(7)));
    assert.equal(st.nlink, 1);
    assert.equal(st.size, goodLayer.size);
    const info = JSON.parse((await run('skopeo', ['inspect', `oci:${dir}:t`])).stdout) as { Layers: string[] };
    assert.deepEqual(info.Layers, [goodLayer.digest]);
  });
});
