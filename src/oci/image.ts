/**
 * The image as values: read-only `Layer`s (go-containerregistry's model) and the
 * pure assembly of an image config (image-spec config.md) and manifest
 * (manifest.md) from them. Sinks (layout, archives, registry push) consume a
 * `BuiltImage`; nothing here touches the filesystem except a `storeLayer()`'s reads.
 */
import type { Readable } from 'node:stream';
import { OcibuildError, EXIT_USAGE } from '../errors.js';
import { fileChunks } from '../store/file-chunks.js';
import type { Store } from '../store/store.js';
import {
  canonicalJson,
  descriptorFor,
  descriptorJson,
  isSha256Digest,
  type Descriptor,
  type JsonValue,
  type Platform,
} from './descriptor.js';
import { OCI_CONFIG, OCI_MANIFEST, isLayerType, ociLayerMediaType } from './media-types.js';

/** What made a layer, for the config's `history` (config.md "history"). */
export interface LayerHistory {
  createdBy: string;
  comment?: string;
  /**
   * config.md: an entry with empty_layer has no layer in rootfs.diff_ids. A `Layer`
   * is always a real layer, so buildImage rejects `true` here as a programming error.
   */
  emptyLayer?: boolean;
}

export interface Layer {
  /** sha256 of the compressed bytes, as in the manifest. */
  digest: string;
  /** sha256 of the uncompressed tar, as in rootfs.diff_ids. */
  diffId: string;
  /** Compressed size in bytes. */
  size: number;
  mediaType: string;
  /** The compressed bytes; every call gives a fresh stream. */
  open(): Readable;
  /**
   * The same bytes as chunks of one buffer filled again for each (src/store/file-chunks.ts):
   * a chunk is valid only until the next is asked for. Offered by file-backed layers
   * for consumers done with a chunk by then (a registry upload).
   */
  chunks?(): AsyncIterable<Uint8Array>;
  history?: LayerHistory;
}

export interface ImageConfigInput {
  architecture: string;
  os: string;
  variant?: string;
  /** SOURCE_DATE_EPOCH as a date: the config's `created` and every history entry's. */
  created: Date;
  /** `NAME=value` entries; PATH defaults to DEFAULT_PATH when absent. */
  env: string[];
  entrypoint?: string[];
  cmd?: string[];
  workingDir?: string;
  user?: string;
  labels?: Record<string, string>;
  /** `8080`, `8080/tcp`, `53/udp`, `9/sctp` */
  exposedPorts?: string[];
  /**
   * A base image's part: its history entries kept as they are (empty_layer ones too),
   * for its first `layers` layers, and its runtime config members ocibuild does not
   * model (Healthcheck, StopSignal, Volumes, Shell…), kept under the ones set here.
   */
  base?: { history: JsonValue[]; layers: number; config: { [key: string]: JsonValue } };
}

export interface BuiltImage {
  config: { descriptor: Descriptor; bytes: Buffer };
  /** The descriptor carries the platform, for index.json and image indices. */
  manifest: { descriptor: Descriptor; bytes: Buffer };
  layers: Layer[];
}

/** The PATH Docker and buildah put into images that set none. */
export const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

const HISTORY_AUTHOR = 'ocibuild';
const PORT_RE = /^([0-9]{1,5})(?:\/(tcp|udp|sctp))?$/;
const ENV_RE = /^[^=]+=/;

/** config.md: `created` is RFC 3339; ocibuild writes whole seconds in UTC. */
export function rfc3339Seconds(date: Date): string {
  if (Number.isNaN(date.getTime())) throw new Error('invalid date for image config');
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * Assembles config and manifest. Pure: the same inputs always give the same bytes,
 * so the same digests.
 */
export function buildImage(
  config: ImageConfigInput,
  layers: Layer[],
  annotations: Record<string, string> = {},
): BuiltImage {
  const created = rfc3339Seconds(config.created);
  for (const [i, l] of layers.entries()) checkLayer(l, i);

  const configDoc: { [key: string]: JsonValue } = {
    architecture: config.architecture,
    os: config.os,
    created,
    config: runtimeConfig(config),
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: [...(config.base?.history ?? []), ...layers.slice(config.base?.layers ?? 0).map((l) => historyEntry(l, created))],
  };
  if (config.variant) configDoc.variant = config.variant;
  const configBytes = Buffer.from(canonicalJson(configDoc), 'utf8');
  const configDescriptor = descriptorFor(OCI_CONFIG, configBytes);

  const manifestDoc: { [key: string]: JsonValue } = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: descriptorJson(configDescriptor),
    layers: layers.map((l) => descriptorJson({ mediaType: ociLayerMediaType(l.mediaType), digest: l.digest, size: l.size })),
  };
  if (Object.keys(annotations).length > 0) manifestDoc.annotations = { ...annotations };
  const manifestBytes = Buffer.from(canonicalJson(manifestDoc), 'utf8');
  const platform: Platform = { architecture: config.architecture, os: config.os };
  if (config.variant) platform.variant = config.variant;

  return {
    config: { descriptor: configDescriptor, bytes: configBytes },
    manifest: { descriptor: descriptorFor(OCI_MANIFEST, manifestBytes, { platform }), bytes: manifestBytes },
    layers: [...layers],
  };
}

/** A Layer whose bytes are the store's blob `l.digest`. */
export function storeLayer(
  store: Store,
  l: { digest: string; diffId: string; size: number; mediaType: string; history?: LayerHistory },
): Layer {
  const layer: Layer = {
    digest: l.digest,
    diffId: l.diffId,
    size: l.size,
    mediaType: l.mediaType,
    open: () => store.openBlob(l.digest),
    chunks: () => fileChunks(store.blobPath(l.digest)),
  };
  if (l.history) layer.history = { ...l.history };
  return layer;
}

/** config.md "config": Docker-style capitalised keys; empty members left out. */
function runtimeConfig(c: ImageConfigInput): JsonValue {
  for (const e of c.env) {
    if (!ENV_RE.test(e)) {
      throw new OcibuildError(`environment entry ${JSON.stringify(e)} is not NAME=value`, {
        where: 'config.env',
        exitCode: EXIT_USAGE,
      });
    }
  }
  const env = c.env.some((e) => e.startsWith('PATH=')) ? [...c.env] : [DEFAULT_PATH, ...c.env];
  const out: { [key: string]: JsonValue } = { ...(c.base?.config ?? {}), Env: env };
  for (const k of ['Entrypoint', 'Cmd', 'WorkingDir', 'User', 'Labels', 'ExposedPorts']) delete out[k];
  if (c.entrypoint && c.entrypoint.length > 0) out.Entrypoint = [...c.entrypoint];
  if (c.cmd && c.cmd.length > 0) out.Cmd = [...c.cmd];
  if (c.workingDir) out.WorkingDir = c.workingDir;
  if (c.user) out.User = c.user;
  if (c.labels && Object.keys(c.labels).length > 0) out.Labels = { ...c.labels };
  if (c.exposedPorts && c.exposedPorts.length > 0) {
    // config.md: ExposedPorts is a set, encoded as a map to empty objects.
    const ports: { [key: string]: JsonValue } = {};
    for (const p of c.exposedPorts) ports[normalizePort(p)] = {};
    out.ExposedPorts = ports;
  }
  return out;
}

function normalizePort(p: string): string {
  const m = PORT_RE.exec(p);
  const n = m ? Number(m[1]) : 0;
  if (!m || n < 1 || n > 65535) {
    throw new OcibuildError(`exposed port ${JSON.stringify(p)} is not PORT or PORT/tcp|udp|sctp`, {
      where: 'config.expose',
      exitCode: EXIT_USAGE,
    });
  }
  return `${n}/${m[2] ?? 'tcp'}`;
}

function historyEntry(l: Layer, created: string): JsonValue {
  const h: { [key: string]: JsonValue } = {
    created,
    created_by: l.history?.createdBy ?? HISTORY_AUTHOR,
  };
  if (l.history?.comment) h.comment = l.history.comment;
  return h;
}

function checkLayer(l: Layer, i: number): void {
  // Internal invariants: layers come from our own writer or a verified pull.
  if (!isSha256Digest(l.digest) || !isSha256Digest(l.diffId)) {
    throw new Error(`layer ${i}: digest and diffId must be sha256 digests`);
  }
  if (!Number.isSafeInteger(l.size) || l.size < 0) throw new Error(`layer ${i}: bad size ${l.size}`);
  if (!isLayerType(l.mediaType)) throw new Error(`layer ${i}: not a layer media type: ${l.mediaType}`);
  if (l.history?.emptyLayer) throw new Error(`layer ${i}: a real layer cannot have an empty_layer history entry`);
}
