/**
 * The distribution-spec operations on one repository: manifests (GET, HEAD, PUT),
 * blobs (HEAD, GET into the store verified, cross-repository mount, upload). Every
 * pulled byte is checked against its digest and size before it enters the store;
 * uploads are whole sequences (HEAD, POST, PUT or PATCH…PUT) that are replayed from
 * the start after a transient failure, skipping what the registry already has.
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { OcibuildError } from '../errors.js';
import { DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST } from '../oci/media-types.js';
import type { BlobInfo, Store } from '../store/store.js';
import { isTransientError, TransientStatusError, TruncatedBodyError } from './transient.js';
import { headerValue, unexpectedResponse, type RegistryResponse, type RegistryTransport } from './transport.js';

export const MANIFEST_ACCEPT = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST].join(', ');
/** Manifests are small JSON documents; a bigger answer is refused before it fills memory. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
/** Blobs up to this size go up in one PUT; larger ones in PATCH chunks. */
export const MONOLITHIC_MAX = 16 * 1024 * 1024;
/** PATCH chunk size (at least the registry's OCI-Chunk-Min-Length). */
export const CHUNK_SIZE = 64 * 1024 * 1024;

export interface FetchedManifest {
  bytes: Buffer;
  mediaType: string;
  digest: string;
}

export interface UploadableBlob {
  digest: string;
  size: number;
  /**
   * The blob's bytes afresh on every call: a stream, or chunks that may share one
   * buffer (each is written out before the next is asked for; Layer.chunks).
   */
  open(): Readable | AsyncIterable<Uint8Array>;
}

export type UploadOutcome = 'exists' | 'mounted' | 'uploaded';

export interface RepositoryClientOptions {
  /** Replays of a whole blob download or upload sequence (default 5). */
  sequenceRetries?: number;
  backoffMs?: number;
  signal?: AbortSignal;
  log?: (line: string) => void;
}

export class RepositoryClient {
  readonly pullScope: string;
  readonly pushScope: string;

  constructor(
    readonly transport: RegistryTransport,
    readonly repository: string,
    private readonly opts: RepositoryClientOptions = {},
  ) {
    this.pullScope = `repository:${repository}:pull`;
    this.pushScope = `repository:${repository}:pull,push`;
  }

  private where(path = ''): string {
    return `${this.transport.registry}/${this.repository}${path}`;
  }

  /** GET a manifest or index by tag or digest, verified against the digest when one is known. */
  async getManifest(reference: string, scopes: readonly string[] = [this.pullScope]): Promise<FetchedManifest> {
    return this.sequence(`manifest ${this.where(`:${reference}`)}`, async () => {
      const res = await this.transport.request({
        method: 'GET',
        url: `/v2/${this.repository}/manifests/${reference}`,
        headers: { accept: MANIFEST_ACCEPT },
        scopes,
      });
      if (res.status === 404) {
        await res.body.dump().catch(() => undefined);
        throw new OcibuildError(`manifest not found: ${this.where(reference.startsWith('sha256:') ? `@${reference}` : `:${reference}`)}`, {
          where: res.url,
          hint: 'check the image name and tag (ocibuild does not add "library/" for registries other than Docker Hub)',
        });
      }
      if (res.status !== 200) throw await unexpectedResponse(res, `GET manifest ${this.where(`:${reference}`)}`);
      const bytes = await readCapped(res, MAX_MANIFEST_BYTES, `manifest ${reference}`);
      const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
      if (reference.startsWith('sha256:') && digest !== reference) {
        throw new OcibuildError(`the registry sent a manifest whose digest is ${digest}, not the requested ${reference}`, {
          where: res.url,
          hint: 'the registry or a proxy in between altered the manifest; nothing was stored',
        });
      }
      return { bytes, digest, mediaType: manifestMediaType(bytes, headerValue(res.headers['content-type']), res.url) };
    });
  }

  /** HEAD a manifest: its digest without the body (is a tag already where we want it?). */
  async headManifest(reference: string, scopes: readonly string[] = [this.pullScope]): Promise<{ digest: string; size: number } | undefined> {
    const res = await this.transport.request({
      method: 'HEAD',
      url: `/v2/${this.repository}/manifests/${reference}`,
      headers: { accept: MANIFEST_ACCEPT },
      scopes,
    });
    if (res.status !== 200 && res.status !== 404) throw await unexpectedResponse(res, `HEAD manifest ${this.where(`:${reference}`)}`);
    await res.body.dump().catch(() => undefined);
    if (res.status === 404) return undefined;
    const digest = headerValue(res.headers['docker-content-digest']);
    const size = Number(headerValue(res.headers['content-length']));
    if (!digest || !Number.isSafeInteger(size)) return undefined;
    return { digest, size };
  }

  /** The blob's size when the repository has it, else undefined. */
  async blobSize(digest: string, scopes: readonly string[] = [this.pullScope]): Promise<number | undefined> {
    const res = await this.transport.request({ method: 'HEAD', url: `/v2/${this.repository}/blobs/${digest}`, scopes });
    if (res.status !== 200 && res.status !== 404) throw await unexpectedResponse(res, `HEAD blob ${digest} in ${this.where()}`);
    await res.body.dump().catch(() => undefined);
    if (res.status === 404) return undefined;
    const size = Number(headerValue(res.headers['content-length']));
    return Number.isSafeInteger(size) ? size : undefined;
  }

  /** Downloads a blob into the store, verified against digest and size while streaming. */
  async fetchBlob(desc: { digest: string; size: number }, store: Store): Promise<BlobInfo> {
    if (await store.has(desc.digest)) return { digest: desc.digest, size: desc.size };
    return this.sequence(`blob ${desc.digest}`, async () => {
      const res = await this.transport.request({ method: 'GET', url: `/v2/${this.repository}/blobs/${desc.digest}`, scopes: [this.pullScope] });
      if (res.status !== 200) throw await unexpectedResponse(res, `GET blob ${desc.digest} of ${this.where()}`);
      const length = Number(headerValue(res.headers['content-length']));
      if (Number.isSafeInteger(length) && length !== desc.size) {
        await res.body.dump().catch(() => undefined);
        throw new OcibuildError(`the registry sends ${length} bytes for blob ${desc.digest}, the manifest says ${desc.size}`, {
          where: res.url,
          hint: 'the registry holds a damaged blob or the manifest is wrong; nothing was stored',
        });
      }
      return store.putStream(countedBody(res, desc.size), desc, `${res.url} (blob ${desc.digest})`, this.opts.signal);
    });
  }

  /**
   * Uploads a blob unless the repository has it: HEAD, then a cross-repository mount
   * when `mountFrom` names another repository of the same registry, else POST and
   * PUT (small) or POST, PATCH chunks and PUT (large).
   */
  async uploadBlob(blob: UploadableBlob, mountFrom?: string): Promise<UploadOutcome> {
    const scopes = mountFrom && mountFrom !== this.repository ? [this.pushScope, `repository:${mountFrom}:pull`] : [this.pushScope];
    return this.sequence(`upload of ${blob.digest} to ${this.where()}`, async () => {
      if ((await this.blobSize(blob.digest, scopes)) === blob.size) return 'exists';
      let start = `/v2/${this.repository}/blobs/uploads/`;
      if (mountFrom && mountFrom !== this.repository) {
        start += `?mount=${encodeURIComponent(blob.digest)}&from=${encodeURIComponent(mountFrom)}`;
      }
      const res = await this.transport.request({ method: 'POST', url: start, headers: { 'content-length': '0' }, scopes });
      if (res.status === 201 && start.includes('?mount=')) {
        await res.body.dump().catch(() => undefined);
        return 'mounted';
      }
      // A refused mount answers 202 with a fresh upload session (distribution-spec).
      if (res.status !== 202) throw await unexpectedResponse(res, `starting the upload of ${blob.digest} to ${this.where()}`);
      await res.body.dump().catch(() => undefined);
      let location = this.location(res);
      const chunkMin = Number(headerValue(res.headers['oci-chunk-min-length']));
      if (blob.size <= MONOLITHIC_MAX) {
        await this.finishUpload(location, blob.digest, scopes, blob.size, () => blob.open());
        return 'uploaded';
      }
      const chunk = Math.max(CHUNK_SIZE, Number.isSafeInteger(chunkMin) ? chunkMin : 0);
      const reader = chunkReader(blob.open());
      try {
        for (let offset = 0; offset < blob.size; ) {
          const n = Math.min(chunk, blob.size - offset);
          const patch = await this.transport.request({
            method: 'PATCH',
            url: location,
            headers: {
              'content-type': 'application/octet-stream',
              'content-length': String(n),
              'content-range': `${offset}-${offset + n - 1}`,
            },
            body: () => reader.take(n),
            scopes,
            noRetry: true,
          });
          if (patch.status !== 202) {
            if (isRetryStatus(patch.status)) {
              await patch.body.dump().catch(() => undefined);
              throw new TransientStatusError(`PATCH: HTTP ${patch.status}`, patch.status);
            }
            throw await unexpectedResponse(patch, `uploading ${blob.digest} to ${this.where()}`);
          }
          await patch.body.dump().catch(() => undefined);
          location = this.location(patch);
          offset += n;
        }
      } finally {
        await reader.close();
      }
      await this.finishUpload(location, blob.digest, scopes, 0, undefined);
      return 'uploaded';
    });
  }

  /** The closing PUT ?digest=, with the body (monolithic) or without (after PATCHes). */
  private async finishUpload(location: string, digest: string, scopes: readonly string[], size: number, body: (() => Readable | AsyncIterable<Uint8Array>) | undefined): Promise<void> {
    const url = new URL(location);
    url.searchParams.set('digest', digest);
    const res = await this.transport.request({
      method: 'PUT',
      url: url.toString(),
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
      ...(body ? { body } : {}),
      scopes,
      noRetry: true,
    });
    if (res.status === 201 || res.status === 204 || isRetryStatus(res.status)) {
      await res.body.dump().catch(() => undefined);
      if (isRetryStatus(res.status)) throw new TransientStatusError(`PUT: HTTP ${res.status}`, res.status);
      return;
    }
    throw await unexpectedResponse(res, `finishing the upload of ${digest} to ${this.where()}`);
  }

  /** PUT a manifest or index under a tag or its digest; Content-Type is its mediaType. */
  async putManifest(reference: string, bytes: Buffer, mediaType: string): Promise<string> {
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    const res = await this.transport.request({
      method: 'PUT',
      url: `/v2/${this.repository}/manifests/${reference}`,
      headers: { 'content-type': mediaType },
      body: bytes,
      scopes: [this.pushScope],
    });
    if (res.status !== 201 && res.status !== 200 && res.status !== 202) {
      throw await unexpectedResponse(res, `PUT manifest ${this.where(`:${reference}`)}`);
    }
    await res.body.dump().catch(() => undefined);
    const echoed = headerValue(res.headers['docker-content-digest']);
    if (echoed && echoed.startsWith('sha256:') && echoed !== digest) {
      throw new OcibuildError(`the registry stored the manifest as ${echoed}, not ${digest}`, {
        where: res.url,
        hint: 'the registry rewrote the manifest; its digest would not match what was built',
      });
    }
    return digest;
  }

  /** An upload session's next URL (Location may be relative to the request URL). */
  private location(res: RegistryResponse): string {
    const raw = headerValue(res.headers.location);
    if (!raw) throw new OcibuildError('the registry started an upload without a Location header', { where: res.url });
    return new URL(raw, res.url).toString();
  }

  /** Runs `fn` again (with backoff) after transient failures, so a broken sequence starts over. */
  private async sequence<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const retries = this.opts.sequenceRetries ?? 5;
    const base = this.opts.backoffMs ?? 200;
    for (let attempt = 0; ; attempt++) {
      this.opts.signal?.throwIfAborted();
      try {
        return await fn();
      } catch (err) {
        if (!isTransientError(err) || attempt >= retries) {
          if (isTransientError(err)) {
            throw new OcibuildError(`${what} failed after ${attempt + 1} attempts (${(err as Error).message})`, {
              where: this.where(),
              hint: 'the registry or the network keeps failing; retry later',
              cause: err,
            });
          }
          throw err;
        }
        const wait = Math.round(base * 2 ** attempt * (0.5 + Math.random() / 2));
        this.opts.log?.(`retrying ${what} in ${wait} ms (${(err as Error).message})`);
        await delay(wait, undefined, this.opts.signal ? { signal: this.opts.signal } : {});
      }
    }
  }
}

function isRetryStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

/** The manifest's media type: its own `mediaType` field, else Content-Type. */
function manifestMediaType(bytes: Buffer, contentType: string | undefined, where: string): string {
  let doc: { mediaType?: unknown; schemaVersion?: unknown; manifests?: unknown };
  try {
    doc = JSON.parse(bytes.toString('utf8')) as typeof doc;
  } catch {
    throw new OcibuildError('the registry sent a manifest that is not JSON', { where });
  }
  if (doc.schemaVersion === 1) {
    throw new OcibuildError('this image has a Docker schema 1 manifest, which ocibuild does not read', {
      where,
      hint: 'schema 1 is deprecated; re-push the image with a current docker, skopeo or ocibuild',
    });
  }
  if (typeof doc.mediaType === 'string' && doc.mediaType !== '') return doc.mediaType;
  const type = contentType?.split(';')[0]?.trim();
  if (type && type !== 'application/json') return type;
  // OCI documents may leave mediaType out; an index is recognised by its manifests list.
  return Array.isArray(doc.manifests) ? OCI_INDEX : OCI_MANIFEST;
}

async function readCapped(res: RegistryResponse, cap: number, what: string): Promise<Buffer> {
  const length = Number(headerValue(res.headers['content-length']));
  if (Number.isSafeInteger(length) && length > cap) {
    await res.body.dump().catch(() => undefined);
    throw new OcibuildError(`${what} is ${length} bytes, more than the ${cap} a manifest may have`, { where: res.url });
  }
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of countedBody(res, Number.isSafeInteger(length) ? length : undefined)) {
    n += chunk.length;
    if (n > cap) {
      res.body.destroy();
      throw new OcibuildError(`${what} is more than the ${cap} bytes a manifest may have`, { where: res.url });
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** The body, with a short one (cut connection, lying proxy) turned into a TruncatedBodyError. */
async function* countedBody(res: RegistryResponse, expected: number | undefined): AsyncGenerator<Buffer> {
  let n = 0;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    n += chunk.length;
    yield chunk;
  }
  if (expected !== undefined && n < expected) throw new TruncatedBodyError(`body cut short: ${n} of ${expected} bytes`);
}

/**
 * Reads a stream or chunk iterable in consecutive slices of exact sizes (the PATCH
 * chunks); a slice is yielded before the next chunk is asked for, so chunks that
 * share one buffer stay valid while their slices are sent.
 */
function chunkReader(source: Readable | AsyncIterable<Uint8Array>): { take(n: number): AsyncGenerator<Uint8Array>; close(): Promise<void> } {
  const it = (source as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
  let pending: Uint8Array | undefined;
  return {
    async *take(n: number): AsyncGenerator<Uint8Array> {
      let left = n;
      while (left > 0) {
        let buf = pending;
        pending = undefined;
        if (!buf) {
          const next = await it.next();
          if (next.done) throw new Error(`blob ended ${left} bytes early`);
          buf = next.value;
        }
        if (buf.length > left) {
          pending = buf.subarray(left);
          buf = buf.subarray(0, left);
        }
        left -= buf.length;
        yield buf;
      }
    },
    /** Ends the source early (a stream is destroyed, a file closed). */
    async close(): Promise<void> {
      await it.return?.();
    },
  };
}
