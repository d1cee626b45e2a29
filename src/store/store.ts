/**
 * A content-addressed store: blobs under blobs/sha256/<hex>, plus a derived-data
 * cache under cache/<kind>/<key>. Every write goes to a temp file in <root>/tmp (the
 * same filesystem, so rename is atomic), is hashed while written, verified, fsynced
 * and only then renamed into place. A reader therefore never sees a partial blob, and
 * a process killed mid-write leaves only a stray temp file that nothing reads.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { whenClosed, writeFileAtomic } from './atomic.js';
import { digestHex } from './digest.js';
import { markUsed, touch } from './last-use.js';
import { OcibuildError } from '../errors.js';

export interface BlobInfo {
  /** `sha256:<hex>` */
  digest: string;
  size: number;
}

export interface ExpectedBlob {
  digest?: string;
  size?: number;
}

// Cache kinds and keys become path segments; keep them to a safe alphabet.
const SEGMENT_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export { digestHex } from './digest.js';

export class Store {
  readonly root: string;

  constructor(root: string) {
    this.root = root;
  }

  /** $OCIBUILD_CACHE, else $XDG_CACHE_HOME/ocibuild, else ~/.cache/ocibuild. */
  static defaultRoot(env: NodeJS.ProcessEnv = process.env): string {
    if (env.OCIBUILD_CACHE) return env.OCIBUILD_CACHE;
    if (env.XDG_CACHE_HOME) return join(env.XDG_CACHE_HOME, 'ocibuild');
    return join(env.HOME || homedir(), '.cache', 'ocibuild');
  }

  blobPath(digest: string): string {
    return join(this.root, 'blobs', 'sha256', digestHex(digest));
  }

  /**
   * Whether the store has the blob. Asking is how a user announces a use, so this
   * also marks the blob used (last-use.ts): `cache prune` orders by that, and a blob
   * this says is there stays there for a build that is running.
   */
  async has(digest: string): Promise<boolean> {
    return markUsed(this, this.blobPath(digest), digest);
  }

  /**
   * Streams `src` into the store. With `expect`, a size or digest mismatch deletes
   * the temp file and throws an OcibuildError naming `where` (a URL or file), so
   * nothing unverified ever becomes a blob.
   */
  async putStream(
    src: Readable | AsyncIterable<Uint8Array>,
    expect: ExpectedBlob = {},
    where?: string,
    signal?: AbortSignal,
  ): Promise<BlobInfo> {
    if (expect.digest !== undefined) digestHex(expect.digest);
    const tmp = await this.tempPath();
    const hash = createHash('sha256');
    let size = 0;
    const tap = new Transform({
      transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
        hash.update(chunk);
        size += chunk.length;
        cb(null, chunk);
      },
    });
    const out = createWriteStream(tmp, { flags: 'wx' });
    try {
      await pipeline(src, tap, out, signal ? { signal } : {});
      const digest = `sha256:${hash.digest('hex')}`;
      checkExpected(expect, digest, size, where);
      await fsyncFile(tmp);
      const dest = this.blobPath(digest);
      await mkdir(dirname(dest), { recursive: true });
      // Another process may have stored the same blob meanwhile: rename replaces it
      // with identical bytes, which is harmless.
      await rename(tmp, dest);
      return { digest, size };
    } catch (err) {
      // A source that fails at once can beat the file's open.
      await whenClosed(out);
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Moves the file at `path` (a file under tmpDir(), so the rename stays on one file
   * system) into the store after hashing and verifying it as a whole: how a download
   * resumed across attempts or processes is admitted. On a mismatch the file is
   * deleted and an OcibuildError naming `where` is thrown, as with putStream.
   */
  async putFile(path: string, expect: ExpectedBlob = {}, where?: string, signal?: AbortSignal): Promise<BlobInfo> {
    if (expect.digest !== undefined) digestHex(expect.digest);
    try {
      const hash = createHash('sha256');
      let size = 0;
      for await (const chunk of createReadStream(path, signal ? { signal } : {}) as AsyncIterable<Buffer>) {
        hash.update(chunk);
        size += chunk.length;
      }
      const digest = `sha256:${hash.digest('hex')}`;
      checkExpected(expect, digest, size, where);
      await fsyncFile(path);
      const dest = this.blobPath(digest);
      await mkdir(dirname(dest), { recursive: true });
      await rename(path, dest);
      return { digest, size };
    } catch (err) {
      // An abort keeps the file: it is a valid prefix a later attempt resumes from.
      if (!isAbortError(err)) await unlink(path).catch(() => undefined);
      throw err;
    }
  }

  /** <root>/tmp: temp files live here, on the store's file system, so renames are atomic. */
  async tmpDir(): Promise<string> {
    const dir = join(this.root, 'tmp');
    await mkdir(dir, { recursive: true });
    return dir;
  }

  async putBytes(data: Uint8Array, expect: ExpectedBlob = {}, where?: string): Promise<BlobInfo> {
    return this.putStream(Readable.from([data]), expect, where);
  }

  openBlob(digest: string): Readable {
    return createReadStream(this.blobPath(digest));
  }

  async readBlob(digest: string): Promise<Buffer> {
    return readFile(this.blobPath(digest));
  }

  cachePath(kind: string, key: string): string {
    if (!SEGMENT_RE.test(kind) || !SEGMENT_RE.test(key)) {
      throw new Error(`invalid cache kind/key: ${JSON.stringify(kind)}/${JSON.stringify(key)}`);
    }
    return join(this.root, 'cache', kind, key);
  }

  /** Atomic: a reader sees the old file, no file, or the whole new file. */
  async writeCacheFile(kind: string, key: string, data: Uint8Array): Promise<void> {
    const dest = this.cachePath(kind, key);
    const tmp = await this.tempPath();
    await mkdir(dirname(dest), { recursive: true });
    await writeFileAtomic(dest, data, tmp);
  }


  /** Marks the record used (last-use.ts); read whole at once, so no lock is needed. */
  async readCacheFile(kind: string, key: string): Promise<Buffer | undefined> {
    const path = this.cachePath(kind, key);
    if (!(await touch(path))) return undefined;
    try {
      return await readFile(path);
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /** pid + random: two processes (or two writes in one) never share a temp name. */
  private async tempPath(): Promise<string> {
    return join(await this.tmpDir(), `${process.pid}-${randomBytes(8).toString('hex')}.tmp`);
  }
}

function checkExpected(expect: ExpectedBlob, digest: string, size: number, where: string | undefined): void {
  if (expect.size !== undefined && expect.size !== size) {
    throw new OcibuildError(`size mismatch: expected ${expect.size} bytes, got ${size}`, {
      where,
      hint: 'the mirror may be out of sync or the download was corrupted; retry later or use another mirror',
    });
  }
  if (expect.digest !== undefined && expect.digest !== digest) {
    throw new OcibuildError(`sha256 mismatch: expected ${expect.digest}, got ${digest}`, {
      where,
      hint: 'the mirror may be out of sync or tampered with; retry later or use another mirror',
    });
  }
}

function isAbortError(err: unknown): boolean {
  return (err as { name?: unknown } | null)?.name === 'AbortError';
}

async function fsyncFile(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
}
