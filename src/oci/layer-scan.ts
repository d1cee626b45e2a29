/**
 * Reading a few facts out of an image's layers without unpacking them: the file a
 * path resolves to after the layers are stacked (whiteouts and opaque directories
 * applied, image-spec layer.md), and what kind of entry a top-level path is. A build
 * on a base image needs the base's `var/lib/dpkg/status` (the installed set for the
 * resolver and the dpkg database to extend) and whether `/bin` & co. are merged-/usr
 * symlinks. Layers are read top-down and reading stops as soon as the answer is known.
 */
import { createRequire } from 'node:module';
import { PassThrough } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import tar from 'tar-stream';
import { OcibuildError } from '../errors.js';
import type { Layer } from './image.js';
import { layerCompression } from './media-types.js';

export type EntryKind = 'file' | 'directory' | 'symlink' | 'other';

/** A path found in a layer: its kind, and its metadata as the tar header gives it. */
export interface PathHit {
  kind: EntryKind;
  linkname?: string;
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch. */
  mtime: number;
}

export interface ScanResult {
  /** Contents of each wanted file as the stacked layers show it (absent: no such file). */
  files: Map<string, Buffer>;
  /** Kind (and link target) of each wanted top-level path in the stacked layers. */
  kinds: Map<string, PathHit>;
}

const MAX_FILE = 64 * 1024 * 1024;

/**
 * Looks up `files` (regular files, contents wanted) and `paths` (kinds wanted) in
 * `layers` stacked bottom to top. Paths are relative, without a leading slash.
 */
export async function scanLayers(layers: readonly Layer[], files: readonly string[], paths: readonly string[] = []): Promise<ScanResult> {
  const result: ScanResult = { files: new Map(), kinds: new Map() };
  // Paths still open: a hit or a whiteout in an upper layer settles them.
  const openFiles = new Set(files.map(clean));
  const openPaths = new Set(paths.map(clean));
  for (let i = layers.length - 1; i >= 0 && (openFiles.size > 0 || openPaths.size > 0); i--) {
    const layer = layers[i] as Layer;
    const seen = await readLayer(layer, openFiles, openPaths);
    for (const [p, hit] of seen.files) {
      if (hit !== null) result.files.set(p, hit);
      openFiles.delete(p);
    }
    for (const [p, hit] of seen.kinds) {
      if (hit !== null) result.kinds.set(p, hit);
      openPaths.delete(p);
    }
  }
  return result;
}

interface LayerHits {
  /** path → contents, or null when this layer hides it (whiteout, opaque parent, not a file). */
  files: Map<string, Buffer | null>;
  kinds: Map<string, PathHit | null>;
}

async function readLayer(layer: Layer, files: ReadonlySet<string>, paths: ReadonlySet<string>): Promise<LayerHits> {
  const hits: LayerHits = { files: new Map(), kinds: new Map() };
  // Whiteouts and opaque markers seen in this layer, applied after the whole layer is
  // read (an opaque directory hides lower layers only, not its own layer's entries).
  const whiteouts = new Set<string>();
  const opaque = new Set<string>();
  const extract = tar.extract();
  const where = `layer ${layer.digest}`;
  extract.on('entry', (header, stream, next) => {
    const name = clean(header.name);
    const base = name.slice(name.lastIndexOf('/') + 1);
    const dir = name.includes('/') ? name.slice(0, name.lastIndexOf('/')) : '';
    if (base === '.wh..wh..opq') opaque.add(dir);
    else if (base.startsWith('.wh.')) whiteouts.add(dir === '' ? base.slice(4) : `${dir}/${base.slice(4)}`);
    if (paths.has(name)) hits.kinds.set(name, kindOf(header));
    if (files.has(name)) {
      if (header.type === 'file' || header.type === 'contiguous-file') {
        if ((header.size ?? 0) > MAX_FILE) {
          stream.resume();
          next(new OcibuildError(`/${name} in the base image is larger than ${MAX_FILE} bytes`, { where }));
          return;
        }
        const chunks: Buffer[] = [];
        stream.on('data', (c: unknown) => chunks.push(c as Buffer));
        stream.on('end', () => {
          hits.files.set(name, Buffer.concat(chunks));
          next();
        });
        return;
      }
      // A hard link, symlink or directory where a file is wanted: not followed.
      hits.files.set(name, null);
    }
    stream.on('end', () => next());
    stream.resume();
  });
  const hidden = (p: string): boolean => {
    if (whiteouts.has(p)) return true;
    for (let dir = parentOf(p); dir !== undefined; dir = parentOf(dir)) {
      if (whiteouts.has(dir) || opaque.has(dir)) return true;
    }
    return false;
  };
  try {
    await pipeline(layer.open(), decompressor(layer.mediaType), extract);
  } catch (err) {
    if (err instanceof OcibuildError) throw err;
    throw new OcibuildError(`cannot read the base image's layer (${(err as Error).message})`, { where, cause: err });
  }
  for (const p of files) if (!hits.files.has(p) && hidden(p)) hits.files.set(p, null);
  for (const p of paths) if (!hits.kinds.has(p) && hidden(p)) hits.kinds.set(p, null);
  return hits;
}

function parentOf(p: string): string | undefined {
  if (p === '') return undefined;
  const i = p.lastIndexOf('/');
  return i < 0 ? '' : p.slice(0, i);
}

function kindOf(header: tar.Header): PathHit {
  const meta = { mode: (header.mode ?? 0) & 0o7777, uid: header.uid ?? 0, gid: header.gid ?? 0, mtime: Math.floor((header.mtime?.getTime() ?? 0) / 1000) };
  switch (header.type) {
    case 'file':
    case 'contiguous-file':
      return { kind: 'file', ...meta };
    case 'directory':
      return { kind: 'directory', ...meta };
    case 'symlink':
      return { kind: 'symlink', linkname: header.linkname ?? '', ...meta };
    default:
      return { kind: 'other', ...meta };
  }
}

/** `./a/b/` → `a/b`. */
function clean(name: string): string {
  return name.replace(/^(\.\/)+/, '').replace(/^\/+/, '').replace(/\/+$/, '');
}

function decompressor(mediaType: string): NodeJS.ReadWriteStream {
  const kind = layerCompression(mediaType);
  if (kind === 'gzip') return createGunzip();
  if (kind === 'zstd') return zstdDecompressor();
  return new PassThrough();
}

function zstdDecompressor(): NodeJS.ReadWriteStream {
  // Loaded on first use: most base images have gzip layers.
  const require = createRequire(import.meta.url);
  const zstd = require('zstd-napi') as { DecompressStream: new () => NodeJS.ReadWriteStream };
  return new zstd.DecompressStream();
}
