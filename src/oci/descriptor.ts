/**
 * Content descriptors (image-spec descriptor.md), canonical JSON for the documents
 * ocibuild hashes, and a stream check that a blob is what its descriptor says.
 */
import { createHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { OcibuildError } from '../errors.js';

/** image-index.md `platform`; field names as they appear in the JSON. */
export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
}

export interface Descriptor {
  mediaType: string;
  /** `sha256:<hex>` */
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
}

/** JSON values as they go into a canonical document. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue | undefined };

const SHA256_RE = /^sha256:[0-9a-f]{64}$/;

export function isSha256Digest(value: unknown): value is string {
  return typeof value === 'string' && SHA256_RE.test(value);
}

export function sha256Digest(bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/**
 * Keys sorted by code unit at every level, no whitespace, undefined members dropped:
 * the same value always gives the same bytes, hence the same digest. (The image-spec
 * does not require a key order; it only requires that the bytes hashed are the bytes
 * served, which stable output makes reproducible across runs.)
 */
export function canonicalJson(value: JsonValue): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: JsonValue): JsonValue {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === 'object') {
    const out: { [key: string]: JsonValue } = {};
    for (const key of Object.keys(value).sort()) {
      const v = value[key];
      if (v !== undefined) out[key] = sortKeys(v);
    }
    return out;
  }
  if (typeof value === 'number' && !Number.isFinite(value)) {
    throw new Error(`cannot encode ${value} in JSON`);
  }
  return value;
}

/** The descriptor of a document given as bytes. */
export function descriptorFor(
  mediaType: string,
  bytes: Uint8Array,
  extra: { annotations?: Record<string, string>; platform?: Platform } = {},
): Descriptor {
  const d: Descriptor = { mediaType, digest: sha256Digest(bytes), size: bytes.length };
  if (extra.platform) d.platform = extra.platform;
  if (extra.annotations && Object.keys(extra.annotations).length > 0) d.annotations = extra.annotations;
  return d;
}

/** A descriptor as JSON, for embedding in manifests and indices. */
export function descriptorJson(d: Descriptor): JsonValue {
  const out: { [key: string]: JsonValue } = { mediaType: d.mediaType, digest: d.digest, size: d.size };
  if (d.platform) {
    const p: { [key: string]: JsonValue } = { architecture: d.platform.architecture, os: d.platform.os };
    if (d.platform.variant) p.variant = d.platform.variant;
    if (d.platform['os.version']) p['os.version'] = d.platform['os.version'];
    if (d.platform['os.features']) p['os.features'] = d.platform['os.features'];
    out.platform = p;
  }
  if (d.annotations && Object.keys(d.annotations).length > 0) out.annotations = { ...d.annotations };
  return out;
}

/**
 * Hashes a blob chunk by chunk; `finish()` throws when the size or digest differs
 * from `expected` (descriptor.md: content SHOULD be verified against its digest), so
 * a corrupt source never becomes an output blob.
 */
export class BlobCheck {
  private readonly hash = createHash('sha256');
  private size = 0;

  constructor(
    private readonly expected: { digest: string; size: number },
    private readonly where: string,
  ) {}

  update(chunk: Uint8Array): void {
    this.size += chunk.length;
    if (this.size > this.expected.size) throw this.mismatch(`more than the expected ${this.expected.size} bytes`);
    this.hash.update(chunk);
  }

  finish(): void {
    if (this.size !== this.expected.size) {
      throw this.mismatch(`size mismatch: expected ${this.expected.size} bytes, got ${this.size}`);
    }
    const digest = `sha256:${this.hash.digest('hex')}`;
    if (digest !== this.expected.digest) throw this.mismatch(`sha256 mismatch: got ${digest}`);
  }

  private mismatch(message: string): OcibuildError {
    return new OcibuildError(`blob ${this.expected.digest}: ${message}`, {
      where: this.where,
      hint: 'the store may hold a damaged blob; remove it from the cache directory and build again',
    });
  }
}

/** BlobCheck as a pass-through stage for `pipeline`. */
export function verifyingTap(expected: { digest: string; size: number }, where: string): Transform {
  const check = new BlobCheck(expected, where);
  return new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
      try {
        check.update(chunk);
      } catch (err) {
        cb(err as Error);
        return;
      }
      cb(null, chunk);
    },
    flush(cb: TransformCallback) {
      try {
        check.finish();
      } catch (err) {
        cb(err as Error);
        return;
      }
      cb();
    },
  });
}
