/**
 * Single-file outputs: `oci-archive` (a tar of an OCI image layout, as
 * containers/image reads and writes it) and `docker-archive` (what `docker save`
 * writes and `docker load` / `podman load` read). Both are written to a temp file
 * beside FILE and renamed over it only when complete, so FILE is the old archive,
 * no file, or the whole new one.
 *
 * The docker-archive layout chosen is the one Docker 25+ `docker save` writes: an
 * OCI image layout (oci-layout, index.json, blobs/sha256/<hex>) plus the legacy
 * `manifest.json` whose Config and Layers name those same blob paths. `docker load`
 * since 1.10 and containers/image (podman, skopeo) only follow manifest.json, and
 * open each layer through a decompressor, so the gzip layer blobs are stored once,
 * as they are, and the file also reads as an OCI layout. The pre-1.10 per-layer
 * `<id>/json`, `<id>/VERSION` and `repositories` files are not written.
 *
 * Tars are deterministic: entries byte-wise sorted, directories before their
 * contents, mtime 0, uid/gid 0 with empty names, fixed modes.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rename, stat, unlink } from 'node:fs/promises';
import { once } from 'node:events';
import { basename, dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { OcibuildError, EXIT_USAGE } from '../errors.js';
import { whenClosed } from '../store/atomic.js';
import { digestHex } from '../store/store.js';
import { BlobCheck, canonicalJson } from './descriptor.js';
import type { BuiltImage } from './image.js';
import type { BuiltArtifact } from './index.js';
import { imageBlobs, indexBytes, OCI_LAYOUT_BYTES, taggedDescriptor, validateRefName, asOutputError, fsyncPath } from './layout.js';

type ArchiveEntry =
  | { name: string; kind: 'dir' }
  | { name: string; kind: 'file'; size: number; open: () => Readable; digest?: string };

const EPOCH = new Date(0);

// A docker reference as `docker load` accepts it in RepoTags: [domain[:port]/]path[:tag].
const PATH_COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const DOMAIN = '(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?/)?';
const DOCKER_REF_RE = new RegExp(`^${DOMAIN}${PATH_COMPONENT}(?:/${PATH_COMPONENT})*(?::([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?$`);

/** `name[:tag]` → `name:tag` (`:latest` when absent), as docker load expects. */
export function normalizeRepoTag(ref: string, where = 'output'): string {
  const m = DOCKER_REF_RE.exec(ref);
  if (!m) {
    throw new OcibuildError(`invalid image reference ${JSON.stringify(ref)} for docker-archive`, {
      where,
      hint: 'use a lowercase name with an optional tag, e.g. example.com/team/app:1.0 (no @digest)',
      exitCode: EXIT_USAGE,
    });
  }
  return m[1] === undefined ? `${ref}:latest` : ref;
}

/** An image, or an image index with its images (index.json then names the index). */
export async function writeOciArchive(
  file: string,
  image: BuiltArtifact,
  opts: { tag?: string; signal?: AbortSignal } = {},
): Promise<void> {
  if (opts.tag !== undefined) validateRefName(opts.tag, `oci-archive:${file}`);
  const entries: ArchiveEntry[] = [
    ...layoutEntries(image),
    bytesEntry('index.json', indexBytes([taggedDescriptor(image, opts.tag)])),
  ];
  await writeTarAtomic(file, entries, opts.signal);
}

export async function writeDockerArchive(
  file: string,
  image: BuiltImage,
  opts: { ref?: string; signal?: AbortSignal } = {},
): Promise<void> {
  const repoTag = opts.ref === undefined ? undefined : normalizeRepoTag(opts.ref, `docker-archive:${file}`);
  const blobName = (digest: string): string => `blobs/sha256/${digestHex(digest)}`;
  const manifestJson = canonicalJson([
    {
      Config: blobName(image.config.descriptor.digest),
      RepoTags: repoTag ? [repoTag] : [],
      Layers: image.layers.map((l) => blobName(l.digest)),
    },
  ]);
  const tag = repoTag?.slice(repoTag.lastIndexOf(':') + 1);
  const entries: ArchiveEntry[] = [
    ...layoutEntries(image),
    bytesEntry('index.json', indexBytes([taggedDescriptor(image, tag)])),
    bytesEntry('manifest.json', Buffer.from(manifestJson, 'utf8')),
  ];
  await writeTarAtomic(file, entries, opts.signal);
}

/** oci-layout and every blob of the image or index; index.json is the caller's. */
function layoutEntries(image: BuiltArtifact): ArchiveEntry[] {
  const entries: ArchiveEntry[] = [
    { name: 'blobs/', kind: 'dir' },
    { name: 'blobs/sha256/', kind: 'dir' },
    bytesEntry('oci-layout', OCI_LAYOUT_BYTES),
  ];
  for (const b of imageBlobs(image)) {
    entries.push({ name: `blobs/sha256/${digestHex(b.digest)}`, kind: 'file', size: b.size, open: b.open, digest: b.digest });
  }
  return entries;
}

function bytesEntry(name: string, bytes: Buffer): ArchiveEntry {
  return { name, kind: 'file', size: bytes.length, open: () => Readable.from([bytes]) };
}

async function writeTarAtomic(file: string, entries: ArchiveEntry[], signal?: AbortSignal): Promise<void> {
  const st = await stat(file).catch(() => undefined);
  if (st?.isDirectory()) {
    throw new OcibuildError('is a directory; an archive output must be a file path', {
      where: file,
      hint: 'use oci:DIR to write an OCI image layout into a directory',
    });
  }
  const tmp = join(dirname(file), `.${basename(file)}.${process.pid}-${randomBytes(6).toString('hex')}.tmp`);
  const sorted = [...entries].sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
  const pack = tar.pack();
  const out = createWriteStream(tmp, { flags: 'wx' });
  try {
    const written = pipeline(pack, out, signal ? { signal } : {});
    // The file side can fail (ENOSPC, EROFS) while an entry waits for drain; racing
    // every wait against this turns that into an error instead of a hang.
    const broken = new Promise<never>((_resolve, reject) => {
      written.catch(reject);
    });
    broken.catch(() => undefined);
    try {
      for (const e of sorted) await addEntry(pack, e, file, broken, signal);
      pack.finalize();
    } catch (err) {
      pack.destroy(err as Error);
      await written.catch(() => undefined);
      throw err;
    }
    await written;
    await fsyncPath(tmp);
    await rename(tmp, file);
  } catch (err) {
    await whenClosed(out);
    await unlink(tmp).catch(() => undefined);
    throw asOutputError(err, file);
  }
}

async function addEntry(pack: tar.Pack, e: ArchiveEntry, file: string, broken: Promise<never>, signal?: AbortSignal): Promise<void> {
  signal?.throwIfAborted();
  const base = { name: e.name, mtime: EPOCH, uid: 0, gid: 0, uname: '', gname: '' };
  if (e.kind === 'dir') {
    const made = new Promise<void>((resolve, reject) => {
      pack.entry({ ...base, type: 'directory', mode: 0o755 }, (err) => (err ? reject(err) : resolve()));
    });
    await Promise.race([made, broken]);
    return;
  }
  let settle!: (err?: Error | null) => void;
  const finished = new Promise<void>((ok, fail) => {
    settle = (err) => (err ? fail(err) : ok());
  });
  // A failed entry also fails the pack stream, which the caller's pipeline reports.
  finished.catch(() => undefined);
  const sink = pack.entry({ ...base, type: 'file', mode: 0o644, size: e.size }, (err) => settle(err));
  // Errors reach us through the entry callback or the pack's pipeline; without a
  // listener, the entry's own 'error' event would be an uncaught exception.
  sink.on('error', () => undefined);
  const check = e.digest ? new BlobCheck({ digest: e.digest, size: e.size }, `${file}: ${e.name}`) : undefined;
  for await (const chunk of e.open() as AsyncIterable<Buffer>) {
    signal?.throwIfAborted();
    check?.update(chunk);
    if (!sink.write(chunk)) await Promise.race([once(sink, 'drain'), broken]);
  }
  check?.finish();
  sink.end(undefined);
  await Promise.race([finished, broken]);
}
