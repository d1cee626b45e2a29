/**
 * The annotations ocibuild puts on the manifests (and the index) it writes
 * (image-spec annotations.md, "Pre-Defined Annotation Keys"). Pure: every value
 * comes from the caller (the spec, the command line, a pulled base image), never
 * from the environment, so a CI runner cannot change a digest behind anyone's back.
 */
import { isSha256Digest } from './descriptor.js';
import { rfc3339Seconds } from './image.js';
import {
  ANNOTATION_BASE_DIGEST,
  ANNOTATION_BASE_NAME,
  ANNOTATION_CREATED,
  ANNOTATION_REVISION,
  ANNOTATION_SOURCE,
} from './media-types.js';

/** The base image an image was built on: its reference and manifest digest. */
export interface BaseImageRef {
  /** The reference as written in the spec, e.g. docker.io/library/debian:12. */
  name: string;
  /** The digest of the platform's manifest that was pulled. */
  digest: string;
}

export interface ImageAnnotationsInput {
  /** SOURCE_DATE_EPOCH as a date; the config's `created` too. */
  created: Date;
  /** org.opencontainers.image.source: where the sources are (a URL). */
  source?: string;
  /** org.opencontainers.image.revision: which revision of them (a commit). */
  revision?: string;
  /**
   * org.opencontainers.image.base.name/.digest. Set for images built on a pulled
   * base; an index leaves them out, since each platform has its own base digest.
   */
  base?: BaseImageRef;
  /** The user's own annotations (spec `annotations:`, `--annotation`), already validated. */
  extra?: Record<string, string>;
}

/** The manifest (or index) annotations; the well-known keys win over `extra`. */
export function imageAnnotations(input: ImageAnnotationsInput): Record<string, string> {
  const out: Record<string, string> = { ...(input.extra ?? {}) };
  out[ANNOTATION_CREATED] = rfc3339Seconds(input.created);
  if (input.source !== undefined) out[ANNOTATION_SOURCE] = input.source;
  if (input.revision !== undefined) out[ANNOTATION_REVISION] = input.revision;
  if (input.base) {
    // Internal invariant: a base comes from a verified pull, which knows its digest.
    if (!isSha256Digest(input.base.digest)) throw new Error(`base image digest ${input.base.digest} is not a sha256 digest`);
    out[ANNOTATION_BASE_NAME] = input.base.name;
    out[ANNOTATION_BASE_DIGEST] = input.base.digest;
  }
  return out;
}
