/**
 * The OCI image layout (image-spec image-layout.md) as a sink and a small source:
 * `oci-layout`, `index.json`, `blobs/sha256/<hex>`. An existing layout is updated
 * in place so several tags share one directory; blobs go in first, each through a
 * temp file and a rename, and index.json is replaced last, so a reader never finds
 * an index that names a missing blob and a failed write leaves the old index as it
 * was.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { link, mkdir, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { OcibuildError, EXIT_USAGE } from '../errors.js';
import { digestHex } from '../store/digest.js';
import type { Store } from '../store/store.js';
import { tempName, whenClosed, writeFileAtomic } from '../store/atomic.js';
import {
  canonicalJson,
  descriptorJson,
  isSha256Digest,
  sha256Digest,
  verifyingTap,
  type Descriptor,
  type JsonValue,
} from './descriptor.js';
import { artifactImages, isIndex, topDescriptor, type BuiltArtifact } from './index.js';
import { ANNOTATION_REF_NAME, IMAGE_LAYOUT_VERSION, OCI_INDEX } from './media-types.js';

export interface WriteLayoutOptions {
  /** Becomes the manifest's `org.opencontainers.image.ref.name` in index.json. */
  tag?: string;
  /** When a blob is in the store, it is hard-linked from there instead of copied. */
  store?: Store;
  signal?: AbortSignal;
}

/** A blob to place: its descriptor and a way to read it. */
export interface BlobSource {
  digest: string;
  size: number;
  open(): Readable;
}

// image-layout.md / annotations.md: the grammar of org.opencontainers.image.ref.name.
const ALNUM = '[A-Za-z0-9]+';
const SEPARATOR = '(?:[-._:@+]|--)';
const COMPONENT = `${ALNUM}(?:${SEPARATOR}${ALNUM})*`;
const REF_NAME_RE = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);

const FS_ERRORS = new Set(['EACCES', 'EPERM', 'EROFS', 'ENOTDIR', 'ENOSPC', 'EDQUOT', 'EISDIR', 'EEXIST', 'ENOENT', 'ELOOP', 'ENAMETOOLONG']);

export function validateRefName(tag: string, where = 'output'): void {
  if (!REF_NAME_RE.test(tag)) {
    throw new OcibuildError(`invalid tag ${JSON.stringify(tag)}`, {
      where,
      hint: 'a tag is letters and digits, separated by one of - . _ : @ + or --, components joined by /',
      exitCode: EXIT_USAGE,
    });
  }
}

/**
 * The blobs of an image, or of an index and all its images, in the order a layout
 * or archive holds them (layers, then configs and manifests, then the index), each once.
 */
export function imageBlobs(artifact: BuiltArtifact): BlobSource[] {
  const out = new Map<string, BlobSource>();
  const images = artifactImages(artifact);
  for (const image of images) {
    for (const l of image.layers) {
      if (!out.has(l.digest)) out.set(l.digest, { digest: l.digest, size: l.size, open: () => l.open() });
    }
  }
  const docs = images.flatMap((image) => [image.config, image.manifest]);
  if (isIndex(artifact)) docs.push(artifact.index);
  for (const doc of docs) {
    if (!out.has(doc.descriptor.digest)) {
      const bytes = doc.bytes;
      out.set(doc.descriptor.digest, { digest: doc.descriptor.digest, size: doc.descriptor.size, open: () => Readable.from([bytes]) });
    }
  }
  return [...out.values()];
}

/**
 * The top-level descriptor as index.json lists it: a manifest's platform kept (an
 * index has none), ref.name added.
 */
export function taggedDescriptor(artifact: BuiltArtifact, tag?: string): Descriptor {
  const d: Descriptor = { ...topDescriptor(artifact) };
  const annotations = { ...(d.annotations ?? {}) };
  if (tag !== undefined) annotations[ANNOTATION_REF_NAME] = tag;
  if (Object.keys(annotations).length > 0) d.annotations = annotations;
  else delete d.annotations;
  return d;
}

/**
 * index.json (image-index.md) listing `manifests` (descriptors, or entries read from
 * an existing index kept as they were, unknown members included), other members of
 * `base` kept.
 */
export function indexBytes(manifests: Array<Descriptor | IndexEntry>, base: { [key: string]: JsonValue } = {}): Buffer {
  const doc: { [key: string]: JsonValue } = {
    ...base,
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: manifests.map((m) => ('raw' in m ? m.raw : descriptorJson(m))),
  };
  return Buffer.from(canonicalJson(doc), 'utf8');
}

export const OCI_LAYOUT_BYTES = Buffer.from(canonicalJson({ imageLayoutVersion: IMAGE_LAYOUT_VERSION }), 'utf8');

/**
 * Writes an image, or an image index with its images, into the layout at `dir`
 * (creating it when missing); index.json names the top-level manifest or index.
 */
export async function writeLayout(dir: string, image: BuiltArtifact, opts: WriteLayoutOptions = {}): Promise<void> {
  if (opts.tag !== undefined) validateRefName(opts.tag, `oci:${dir}`);
  const placed: string[] = [];
  let createdDir: string | undefined;
  let tmp: string | undefined;
  try {
    const existing = await readExistingLayout(dir);
    createdDir = await makeDirs(join(dir, 'blobs', 'sha256'));
    for (const blob of imageBlobs(image)) {
      opts.signal?.throwIfAborted();
      tmp = tempName(dir);
      if (await placeBlob(dir, blob, tmp, opts)) placed.push(blobPath(dir, blob.digest));
      tmp = undefined;
    }
    opts.signal?.throwIfAborted();
    if (!existing.hasLayoutFile) {
      tmp = tempName(dir);
      await writeFileAtomic(join(dir, 'oci-layout'), OCI_LAYOUT_BYTES, tmp);
      tmp = undefined;
    }
    const manifests = updatedManifests(existing.manifests, taggedDescriptor(image, opts.tag), opts.tag);
    tmp = tempName(dir);
    await writeFileAtomic(join(dir, 'index.json'), indexBytes(manifests, existing.rest), tmp);
    tmp = undefined;
    await syncDir(dir);
  } catch (err) {
    if (tmp) await unlink(tmp).catch(() => undefined);
    for (const p of placed) await unlink(p).catch(() => undefined);
    if (createdDir) await rm(createdDir, { recursive: true, force: true }).catch(() => undefined);
    throw asOutputError(err, dir);
  }
}

/**
 * image-layout.md: one entry per tag. The same tag moves to the new manifest in its
 * old position; an untagged write adds the manifest once.
 */
function updatedManifests(old: IndexEntry[], added: Descriptor, tag: string | undefined): Array<Descriptor | IndexEntry> {
  const refOf = (d: Descriptor): string | undefined => d.annotations?.[ANNOTATION_REF_NAME];
  const out: Array<Descriptor | IndexEntry> = [];
  let replaced = false;
  for (const e of old) {
    const d = e.descriptor;
    const same = tag !== undefined ? refOf(d) === tag : refOf(d) === undefined && d.digest === added.digest;
    if (!same) out.push(e);
    else if (!replaced) {
      out.push(added);
      replaced = true;
    }
  }
  if (!replaced) out.push(added);
  return out;
}

/** A manifests[] member of an existing index.json: parsed, and as it was. */
export interface IndexEntry {
  descriptor: Descriptor;
  raw: JsonValue;
}

interface ExistingLayout {
  hasLayoutFile: boolean;
  manifests: IndexEntry[];
  /** index.json members other than schemaVersion, mediaType and manifests. */
  rest: { [key: string]: JsonValue };
}

async function readExistingLayout(dir: string): Promise<ExistingLayout> {
  const empty: ExistingLayout = { hasLayoutFile: false, manifests: [], rest: {} };
  let st;
  try {
    st = await stat(dir);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return empty;
    throw err;
  }
  if (!st.isDirectory()) {
    throw new OcibuildError('exists and is not a directory', {
      where: dir,
      hint: 'oci:DIR needs a directory; use oci-archive:FILE to write a single file',
    });
  }
  const entries = await readdir(dir);
  if (entries.length === 0) return empty;
  if (!entries.includes('oci-layout')) {
    throw new OcibuildError('directory exists and is not an OCI image layout (no oci-layout file)', {
      where: dir,
      hint: 'choose a new or empty directory, or an existing OCI layout to add a tag to',
    });
  }
  await readLayoutFile(dir);
  if (!entries.includes('index.json')) return { hasLayoutFile: true, manifests: [], rest: {} };
  const { manifests, rest } = await readIndex(dir);
  return { hasLayoutFile: true, manifests, rest };
}

async function readLayoutFile(dir: string): Promise<void> {
  const where = join(dir, 'oci-layout');
  const doc = parseJson(await readFile(where), where);
  const version = isObject(doc) ? doc.imageLayoutVersion : undefined;
  // image-layout.md: imageLayoutVersion; every 1.x spec still writes "1.0.0".
  if (typeof version !== 'string' || !version.startsWith('1.')) {
    throw new OcibuildError(`unsupported imageLayoutVersion ${JSON.stringify(version)}`, {
      where,
      hint: 'ocibuild reads and writes image layouts of version 1.x',
    });
  }
}

/** Reads and checks index.json of the layout at `dir`. */
export async function readIndex(dir: string): Promise<{ manifests: IndexEntry[]; rest: { [key: string]: JsonValue } }> {
  const where = join(dir, 'index.json');
  const doc = parseJson(await readFile(where), where);
  if (!isObject(doc) || doc.schemaVersion !== 2 || !Array.isArray(doc.manifests)) {
    throw new OcibuildError('not an OCI image index (schemaVersion 2 with a manifests list)', { where });
  }
  const manifests = doc.manifests.map((m: unknown, i) => ({
    descriptor: toDescriptor(m, `${where}: manifests[${i}]`),
    raw: m as JsonValue,
  }));
  const rest: { [key: string]: JsonValue } = {};
  for (const [k, v] of Object.entries(doc)) {
    if (k !== 'schemaVersion' && k !== 'mediaType' && k !== 'manifests') rest[k] = v as JsonValue;
  }
  return { manifests, rest };
}

/** The manifest descriptor for `tag`, or the only one when no tag is given. */
export function selectManifest(manifests: Descriptor[], tag: string | undefined, where: string): Descriptor {
  const tags = manifests.map((m) => m.annotations?.[ANNOTATION_REF_NAME]).filter((t): t is string => t !== undefined);
  if (tag === undefined) {
    const only = manifests[0];
    if (manifests.length === 1 && only) return only;
    throw new OcibuildError(manifests.length === 0 ? 'the layout holds no image' : 'the layout holds several images; name a tag', {
      where,
      hint: tags.length > 0 ? `tags: ${tags.join(', ')}` : undefined,
      exitCode: EXIT_USAGE,
    });
  }
  const found = manifests.filter((m) => m.annotations?.[ANNOTATION_REF_NAME] === tag);
  const first = found[0];
  if (!first) {
    throw new OcibuildError(`no image tagged ${JSON.stringify(tag)}`, {
      where,
      hint: tags.length > 0 ? `tags in this layout: ${tags.join(', ')}` : 'this layout has no tagged images',
    });
  }
  return first;
}

/** A small blob (manifest, config) of the layout, checked against its descriptor. */
export async function readLayoutBlob(dir: string, d: Descriptor): Promise<Buffer> {
  const path = blobPath(dir, d.digest);
  const bytes = await readFile(path);
  if (bytes.length !== d.size || sha256Digest(bytes) !== d.digest) {
    throw new OcibuildError(`blob does not match its descriptor ${d.digest} (${d.size} bytes)`, {
      where: path,
      hint: 'the layout is damaged; write the image again',
    });
  }
  return bytes;
}

export function blobPath(dir: string, digest: string): string {
  return join(dir, 'blobs', 'sha256', digestHex(digest));
}

/** Returns true when it put a file in place, false when a good one was there. */
async function placeBlob(dir: string, blob: BlobSource, tmp: string, opts: WriteLayoutOptions): Promise<boolean> {
  const dest = blobPath(dir, blob.digest);
  const where = `oci:${dir}`;
  // Content addressing: a file of the right name and size is taken as that blob,
  // as other layout writers do; re-hashing every existing blob would cost a full read.
  const current = await stat(dest).catch(() => undefined);
  if (current?.isFile() && current.size === blob.size) return false;
  if (opts.store && (await opts.store.has(blob.digest)) && (await tryLink(opts.store.blobPath(blob.digest), tmp))) {
    // The link shares the store's inode: check it, since the copy path would.
    await pipeline(createReadStream(tmp), verifyingTap(blob, where), discard(), signalOpt(opts.signal));
  } else {
    const out = createWriteStream(tmp, { flags: 'wx' });
    try {
      await pipeline(blob.open(), verifyingTap(blob, where), out, signalOpt(opts.signal));
    } catch (err) {
      // The caller removes tmp: only once the file cannot appear after that.
      await whenClosed(out);
      throw err;
    }
    await fsyncPath(tmp);
  }
  await rename(tmp, dest);
  return true;
}

async function tryLink(from: string, to: string): Promise<boolean> {
  try {
    await link(from, to);
    return true;
  } catch (err) {
    // EXDEV: store and layout on different filesystems; EPERM: links not allowed there.
    if (['EXDEV', 'EPERM', 'EMLINK', 'ENOTSUP', 'EOPNOTSUPP'].includes(errnoCode(err) ?? '')) return false;
    throw err;
  }
}

/**
 * mkdir -p that returns the first directory it created. Node's own recursive mkdir
 * reports ENOENT where the real cause is EROFS or EACCES on a parent; creating one
 * level at a time keeps the real error for the user.
 */
export async function makeDirs(path: string): Promise<string | undefined> {
  const missing: string[] = [];
  let p = resolve(path);
  for (;;) {
    try {
      await stat(p);
      break;
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT' || dirname(p) === p) throw err;
      missing.unshift(p);
      p = dirname(p);
    }
  }
  let first: string | undefined;
  for (const m of missing) {
    try {
      await mkdir(m);
      first ??= m;
    } catch (err) {
      // Another writer made it meanwhile: fine, but it is not ours to remove.
      if (errnoCode(err) !== 'EEXIST') throw err;
    }
  }
  return first;
}

// Re-exported: the layout writer's callers and tests use them from here.
export { writeFileAtomic, tempName } from '../store/atomic.js';

export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function syncDir(dir: string): Promise<void> {
  // Makes the renames durable; some filesystems refuse fsync on a directory.
  await fsyncPath(dir).catch(() => undefined);
}

/** Filesystem failures become user errors naming the output; others pass through. */
export function asOutputError(err: unknown, where: string): unknown {
  if (err instanceof OcibuildError) return err;
  const code = errnoCode(err);
  if (code && FS_ERRORS.has(code)) {
    const path = (err as NodeJS.ErrnoException).path ?? where;
    return new OcibuildError(`cannot write the output: ${describeErrno(code)}`, {
      where: path,
      hint: 'choose a writable location (check permissions, free space and that every parent is a directory)',
      cause: err,
    });
  }
  return err;
}

function describeErrno(code: string): string {
  switch (code) {
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EROFS':
      return 'read-only filesystem';
    case 'ENOTDIR':
      return 'a parent of the path is not a directory';
    case 'ENOSPC':
    case 'EDQUOT':
      return 'no space left';
    case 'ENOENT':
      return 'no such file or directory';
    case 'EISDIR':
      return 'is a directory';
    default:
      return code;
  }
}

export function errnoCode(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

function discard(): Writable {
  return new Writable({ write: (_chunk, _enc, cb) => cb() });
}

function signalOpt(signal: AbortSignal | undefined): { signal?: AbortSignal } {
  return signal ? { signal } : {};
}

function parseJson(bytes: Buffer, where: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8')) as unknown;
  } catch (err) {
    throw new OcibuildError(`not valid JSON: ${(err as Error).message}`, { where });
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function toDescriptor(v: unknown, where: string): Descriptor {
  if (!isObject(v) || typeof v.mediaType !== 'string' || !isSha256Digest(v.digest) || typeof v.size !== 'number') {
    throw new OcibuildError('not a descriptor with mediaType, a sha256 digest and size', { where });
  }
  const d: Descriptor = { mediaType: v.mediaType, digest: v.digest, size: v.size };
  if (isObject(v.annotations)) {
    const a: Record<string, string> = {};
    for (const [k, val] of Object.entries(v.annotations)) if (typeof val === 'string') a[k] = val;
    d.annotations = a;
  }
  const p = v.platform;
  if (isObject(p) && typeof p.architecture === 'string' && typeof p.os === 'string') {
    d.platform = { architecture: p.architecture, os: p.os };
    if (typeof p.variant === 'string') d.platform.variant = p.variant;
  }
  return d;
}
