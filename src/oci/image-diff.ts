/**
 * Two images compared the way `ocibuild verify` reports them: layer by layer (diffId:
 * the tar; digest: the compressed blob), then the config and the manifest. A layer
 * whose tar differs is read entry by entry (layer-diff.ts); one whose tar is the same
 * but whose blob is not was compressed differently, which needs no reading to say.
 */
import type { Descriptor } from './descriptor.js';
import type { BuiltImage, Layer } from './image.js';
import { diffJson, type JsonDiff } from './json-diff.js';
import { diffLayers, type LayerDiff } from './layer-diff.js';
import { layerCompression } from './media-types.js';

export interface LayerSide {
  digest: string;
  diffId: string;
  size: number;
  mediaType: string;
}

export interface LayerRow {
  index: number;
  /** The config history's created_by for this layer ('' when neither side says). */
  createdBy: string;
  /** Absent: the image has no layer at this index. */
  a?: LayerSide;
  b?: LayerSide;
  diffIdMatch: boolean;
  digestMatch: boolean;
  /** The paths that differ, when both sides have the layer and their diffIds differ. */
  diff?: LayerDiff;
  /** Why equal tars have different blobs, when the diffIds match and the digests do not. */
  compression?: string;
}

export interface DocumentComparison {
  a: Descriptor;
  b: Descriptor;
  match: boolean;
  /** The members that differ (when the digests do and both are JSON). */
  diff?: JsonDiff;
}

export interface ImageComparison {
  layers: LayerRow[];
  config: DocumentComparison;
  manifest: DocumentComparison;
  match: boolean;
}

export interface CompareOptions {
  /** Differing paths listed per layer, differing members per document. */
  limit?: number;
  /** Called before a layer is read entry by entry (it may take a while). */
  onLayerDiff?: (index: number) => void;
}

export async function compareImages(a: BuiltImage, b: BuiltImage, opts: CompareOptions = {}): Promise<ImageComparison> {
  const historyA = layerHistory(a.config.bytes);
  const historyB = layerHistory(b.config.bytes);
  const rows: LayerRow[] = [];
  for (let i = 0; i < Math.max(a.layers.length, b.layers.length); i++) {
    const la = a.layers[i];
    const lb = b.layers[i];
    const row: LayerRow = {
      index: i,
      createdBy: historyA[i] ?? historyB[i] ?? la?.history?.createdBy ?? lb?.history?.createdBy ?? '',
      ...(la ? { a: side(la) } : {}),
      ...(lb ? { b: side(lb) } : {}),
      diffIdMatch: la !== undefined && lb !== undefined && la.diffId === lb.diffId,
      digestMatch: la !== undefined && lb !== undefined && la.digest === lb.digest,
    };
    if (la && lb && !row.diffIdMatch) {
      opts.onLayerDiff?.(i);
      row.diff = await diffLayers(la, lb, opts.limit !== undefined ? { limit: opts.limit } : {});
    } else if (la && lb && !row.digestMatch) {
      row.compression = compressionNote(la, lb);
    }
    rows.push(row);
  }
  const config = compareDocuments(a.config, b.config, opts.limit);
  const manifest = compareDocuments(a.manifest, b.manifest, opts.limit);
  const match = rows.every((r) => r.diffIdMatch && r.digestMatch) && config.match && manifest.match;
  return { layers: rows, config, manifest, match };
}

/** Two JSON documents by digest, and member by member when the digests differ. */
export function compareDocuments(a: { descriptor: Descriptor; bytes: Buffer }, b: { descriptor: Descriptor; bytes: Buffer }, limit?: number): DocumentComparison {
  const out: DocumentComparison = { a: a.descriptor, b: b.descriptor, match: a.descriptor.digest === b.descriptor.digest };
  if (out.match) return out;
  const x = parse(a.bytes);
  const y = parse(b.bytes);
  if (x !== undefined && y !== undefined) out.diff = diffJson(x, y, limit);
  return out;
}

/**
 * Same tar, other blob: the media types say whether the compression differs in kind;
 * when it does not, the compressor does (another level, or another implementation —
 * gzip, pigz, Go's compress/gzip and libdeflate all write different valid bytes).
 */
export function compressionNote(a: LayerSide, b: LayerSide): string {
  const ka = layerCompression(a.mediaType);
  const kb = layerCompression(b.mediaType);
  if (ka !== kb) return `same files, compressed differently: ${ka} (${a.size} bytes) vs ${kb} (${b.size} bytes)`;
  return `same files (same diffId), different ${ka} bytes (${a.size} vs ${b.size}): the compressor differs (compression level or implementation)`;
}

function side(l: Layer): LayerSide {
  return { digest: l.digest, diffId: l.diffId, size: l.size, mediaType: l.mediaType };
}

/** created_by of each real layer (config.md: empty_layer entries have no layer). */
function layerHistory(configBytes: Buffer): string[] {
  const doc = parse(configBytes) as { history?: Array<{ created_by?: unknown; empty_layer?: unknown }> } | undefined;
  const history = Array.isArray(doc?.history) ? doc.history : [];
  return history.filter((h) => h.empty_layer !== true).map((h) => (typeof h.created_by === 'string' ? h.created_by : ''));
}

function parse(bytes: Buffer): unknown {
  try {
    return JSON.parse(bytes.toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}
