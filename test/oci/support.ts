// Shared by the oci tests: a small real layer (a gzip tar holding the statically
// linked busybox from Debian's busybox-static and a bin/sh symlink), built here with
// tar-stream and zlib so these tests do not depend on the layer writer, and a way to
// run the external judges (umoci, skopeo, runc) that fails when one is missing.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { Store } from '../../src/store/store.js';
import { buildImage, storeLayer, type BuiltImage, type ImageConfigInput, type Layer } from '../../src/oci/image.js';
import { OCI_LAYER_GZIP } from '../../src/oci/media-types.js';

const execFileP = promisify(execFile);

export const BUSYBOX = '/bin/busybox';
export const HELLO = 'hello from ocibuild';

export async function run(cmd: string, args: string[]): Promise<{ stdout: string; stderr: string }> {
  try {
    return await execFileP(cmd, args, { maxBuffer: 64 * 1024 * 1024 });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string; stdout?: string };
    if (e.code === 'ENOENT') {
      throw new Error(`${cmd} is not installed: apt-get install -y umoci skopeo runc busybox-static`);
    }
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
  }
}

function sha256(b: Uint8Array): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

async function tarBytes(entries: Array<{ header: Parameters<tar.Pack['entry']>[0]; body?: Buffer }>): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of pack as AsyncIterable<Buffer>) chunks.push(c);
  })();
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (e.body) pack.entry(e.header, e.body, cb);
      else pack.entry(e.header, cb);
    });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

/** A gzip layer with /bin/busybox and /bin/sh → busybox, stored in `store`. */
export async function busyboxLayer(store: Store): Promise<Layer> {
  let busybox: Buffer;
  try {
    busybox = await readFile(BUSYBOX);
  } catch {
    throw new Error(`${BUSYBOX} is missing: apt-get install -y busybox-static`);
  }
  const mtime = new Date(0);
  const base = { uid: 0, gid: 0, uname: '', gname: '', mtime };
  const raw = await tarBytes([
    { header: { ...base, name: 'bin/', type: 'directory', mode: 0o755 } },
    { header: { ...base, name: 'bin/busybox', type: 'file', mode: 0o755, size: busybox.length }, body: busybox },
    { header: { ...base, name: 'bin/sh', type: 'symlink', linkname: 'busybox', mode: 0o777 } },
  ]);
  const gz = gzipSync(raw, { level: 6 });
  const info = await store.putBytes(gz);
  return storeLayer(store, {
    digest: info.digest,
    diffId: sha256(raw),
    size: info.size,
    mediaType: OCI_LAYER_GZIP,
    history: { createdBy: 'test: busybox-static', comment: 'from the host' },
  });
}

export function helloConfig(overrides: Partial<ImageConfigInput> = {}): ImageConfigInput {
  return {
    architecture: process.arch === 'x64' ? 'amd64' : process.arch,
    os: 'linux',
    created: new Date('2024-01-02T03:04:05Z'),
    env: [],
    entrypoint: [BUSYBOX, 'echo', HELLO],
    ...overrides,
  };
}

export async function helloImage(store: Store, overrides: Partial<ImageConfigInput> = {}): Promise<BuiltImage> {
  return buildImage(helloConfig(overrides), [await busyboxLayer(store)], {
    'org.opencontainers.image.created': '2024-01-02T03:04:05Z',
  });
}
