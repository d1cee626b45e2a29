/**
 * Layer compression with pinned output: the same tar gives the same compressed bytes
 * on every machine, CPU and Node version, so a layer's digest is a function of its
 * content alone (DESIGN.md: "compression with a pinned implementation and level").
 *
 * gzip — not node:zlib: Node bundles Chromium's zlib, whose deflate output changes
 * between Node releases and with the CPU's features. Instead libdeflate, through the
 * `libdeflate` npm package pinned to exactly 0.1.0: libdeflate compiled to
 * WebAssembly and embedded in the package. WebAssembly integer arithmetic is specified
 * bit for bit, and this module uses no relaxed-SIMD instruction (the one feature whose
 * results may differ between CPUs: the module validates with it disabled, Node 20's
 * default), so it computes the same bytes on every CPU and every Node version —
 * checked on Node 20.20.2 and 22.23.3, and with V8 generating code without
 * SSE3/SSE4/AVX/BMI, Liftoff-only and TurboFan-only (bench/RESULTS.md).
 *
 * Why libdeflate: on a 53 MB tar in 1 MiB blocks, level 6 takes ~1.1 s of CPU where
 * fflate (pure JS, used before) took ~3.1 s and GNU `gzip -6` ~2.1 s, and it
 * compresses better (0.283 of the tar, fflate 0.292, `gzip -6` 0.286). Why level 6:
 * it is gzip's default and already beats `gzip -6` on both speed and size; level 5
 * would save ~12 % of the CPU for ~0.7 % more bytes, level 7 costs ~30 % more CPU for
 * ~0.6 % fewer (bench/RESULTS.md, "Layer writing: libdeflate, batched reads"). A new
 * package version or level changes every gzip layer digest.
 *
 * libdeflate compresses whole buffers, which suits the layout: the input is cut into
 * fixed 1 MiB blocks and each block becomes one complete gzip member (RFC 1952 §2.2:
 * a gzip file is a series of members; gzip, Go's compress/gzip — containerd, umoci,
 * skopeo —, zlib and Node all read them as one stream). Block boundaries depend on the
 * input offset only, never on chunking or on how many worker threads ran, so the
 * output is fixed while the work spreads over the cores. (An earlier version chained
 * blocks into one deflate stream with fflate's sync flush and a preset dictionary;
 * fflate's flush does not always end on a valid stored block, which corrupted layers.)
 * The member header is ours, not libdeflate's gzip wrapper: ID1 ID2 CM=8, FLG=0 (no
 * name, comment or extra field), MTIME=0, XFL=0, OS=3 (Unix, as GNU gzip writes on
 * Linux); trailer CRC32 and ISIZE of the block; libdeflate supplies the raw deflate.
 *
 * zstd — zstd-napi 0.0.13 (`^0.0.13` admits no other version; it bundles libzstd
 * 1.5.7), in a worker thread, level 3, checksum on
 * (as the zstd CLI), no content size (a streamed frame never knows it), no dictionary
 * ID, nbWorkers fixed (see ZSTD_WORKERS). Input reaches the compressor in fixed
 * chunks, so its first call is never the one-shot ZSTD_e_end path, whose parameters
 * would depend on the input size.
 */
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { PassThrough, Transform, type TransformCallback } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import * as zlib from 'node:zlib';

export type Compression = 'gzip' | 'zstd' | 'none';

export const GZIP_LEVEL = 6;
export const ZSTD_LEVEL = 3;
/**
 * libzstd's multi-threaded mode gives the same bytes for any nbWorkers ≥ 1 (its jobs
 * are cut by size, not by thread), but not the same as nbWorkers = 0: the value is
 * part of the pinned format, and must stay ≥ 1 once chosen.
 */
export const ZSTD_WORKERS = 2;

const GZIP_BLOCK = 1024 * 1024;
const ZSTD_CHUNK = 128 * 1024;

export interface CompressorOptions {
  /** gzip worker threads; default min(4, CPUs). The output does not depend on it. */
  threads?: number;
}

/** A Transform from tar bytes to compressed bytes (identity for 'none'). */
export function compressor(kind: Compression, opts: CompressorOptions = {}): Transform {
  switch (kind) {
    case 'gzip':
      return new PinnedGzip(opts.threads ?? Math.max(1, Math.min(4, availableParallelism())));
    case 'zstd':
      return new PinnedZstd();
    case 'none':
      return new PassThrough();
  }
}

/** Cuts a byte stream into chunks of exactly `size` bytes (the last one shorter). */
class FixedChunks {
  private buf: Buffer;
  private len = 0;

  constructor(private readonly size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }

  /** Calls `full` with each completed chunk (a fresh Buffer the callee may keep). */
  write(chunk: Buffer, full: (b: Buffer) => void): void {
    let off = 0;
    while (off < chunk.length) {
      const n = Math.min(this.size - this.len, chunk.length - off);
      chunk.copy(this.buf, this.len, off, off + n);
      this.len += n;
      off += n;
      if (this.len === this.size) full(this.take());
    }
  }

  take(): Buffer {
    const out = this.buf.subarray(0, this.len);
    this.buf = Buffer.allocUnsafe(this.size);
    this.len = 0;
    return out;
  }
}

interface ZstdJob {
  out?: Buffer;
}

/**
 * zstd in a worker thread, so that compression overlaps with tar writing and hashing
 * on the main thread (libzstd's own multi-threaded mode blocks its caller while its
 * job queue is full). Replies come back in order: one worker, one queue.
 */
class PinnedZstd extends Transform {
  private readonly chunks = new FixedChunks(ZSTD_MESSAGE);
  private readonly worker: Worker;
  private readonly jobs: ZstdJob[] = [];
  private waiting: (() => void) | undefined;
  private flushed: TransformCallback | undefined;
  private stopped = false;

  constructor() {
    super();
    this.worker = new Worker(ZSTD_WORKER_SOURCE, {
      eval: true,
      workerData: { binding: zstdBindingPath, level: ZSTD_LEVEL, nbWorkers: ZSTD_WORKERS, piece: ZSTD_CHUNK },
    });
    this.worker.on('message', (out: Uint8Array) => {
      const job = this.jobs.find((j) => !j.out);
      if (job) job.out = Buffer.from(out.buffer, out.byteOffset, out.byteLength);
      this.drain();
    });
    this.worker.on('error', (err) => {
      if (!this.stopped) this.destroy(err);
    });
    this.worker.on('exit', (code) => {
      if (!this.stopped) this.destroy(new Error(`zstd worker exited with code ${code}`));
    });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.chunks.write(chunk, (b) => this.post(b, false));
    if (this.jobs.length >= ZSTD_IN_FLIGHT) this.waiting = () => done();
    else done();
  }

  override _flush(done: TransformCallback): void {
    this.flushed = done;
    this.post(this.chunks.take(), true);
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    this.close();
    cb(err);
  }

  private close(): void {
    this.stopped = true;
    void this.worker.terminate();
  }

  private post(data: Buffer, end: boolean): void {
    this.jobs.push({});
    const moved = ownsBuffer(data) ? data : new Uint8Array(data);
    this.worker.postMessage({ data: moved, end }, [moved.buffer as ArrayBuffer]);
  }

  private drain(): void {
    while (this.jobs[0]?.out) this.push(this.jobs.shift()!.out);
    if (this.waiting && this.jobs.length < ZSTD_IN_FLIGHT) {
      const w = this.waiting;
      this.waiting = undefined;
      w();
    }
    if (this.flushed && this.jobs.length === 0) {
      this.close();
      const done = this.flushed;
      this.flushed = undefined;
      done();
    }
  }
}

const ZSTD_MESSAGE = 1024 * 1024;
const ZSTD_IN_FLIGHT = 4;
const zstdBindingPath = createRequire(import.meta.url).resolve('zstd-napi/binding');

// Feeds libzstd in fixed pieces with ZSTD_e_continue — the last, shorter (maybe
// empty) piece too — and only then ZSTD_e_end: the frame is always a streamed one.
const ZSTD_WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const z = require(workerData.binding);
const cctx = new z.CCtx();
cctx.setParameter(z.CParameter.compressionLevel, workerData.level);
cctx.setParameter(z.CParameter.checksumFlag, 1);
cctx.setParameter(z.CParameter.contentSizeFlag, 0);
cctx.setParameter(z.CParameter.dictIDFlag, 0);
cctx.setParameter(z.CParameter.nbWorkers, workerData.nbWorkers);
const buf = Buffer.allocUnsafe(z.cStreamOutSize());
function step(outs, chunk, op) {
  for (;;) {
    const [ret, produced, consumed] = cctx.compressStream2(buf, chunk, op);
    if (produced > 0) outs.push(Buffer.from(buf.subarray(0, produced)));
    chunk = chunk.subarray(consumed);
    if (chunk.length === 0 && (op === z.EndDirective.continue || ret === 0)) return;
  }
}
parentPort.on('message', (m) => {
  const data = Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength);
  const outs = [];
  const piece = workerData.piece;
  let o = 0;
  for (; o + piece <= data.length; o += piece) step(outs, data.subarray(o, o + piece), z.EndDirective.continue);
  if (m.end) {
    step(outs, data.subarray(o), z.EndDirective.continue);
    step(outs, Buffer.alloc(0), z.EndDirective.end);
  } else if (o < data.length) {
    step(outs, data.subarray(o), z.EndDirective.continue);
  }
  let n = 0;
  for (const p of outs) n += p.length;
  const out = new Uint8Array(n);
  n = 0;
  for (const p of outs) { out.set(p, n); n += p.length; }
  parentPort.postMessage(out, [out.buffer]);
});
`;

/** True when `b` is the whole of its ArrayBuffer, so it can move to a worker. */
function ownsBuffer(b: Buffer): boolean {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength;
}

/** RFC 1952 member header: no FNAME/MTIME, XFL 0, OS 3. */
const GZIP_HEADER = Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);

interface Job {
  out?: Buffer;
}

class PinnedGzip extends Transform {
  private readonly blocks = new FixedChunks(GZIP_BLOCK);
  private members = 0;
  private pool: DeflatePool | undefined;
  private readonly jobs: Job[] = [];
  private waiting: (() => void) | undefined;
  private flushed: TransformCallback | undefined;

  constructor(private readonly threads: number) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    try {
      this.blocks.write(chunk, (b) => this.dispatch(b, false));
    } catch (err) {
      done(err as Error);
      return;
    }
    if (this.jobs.length >= this.maxInFlight()) this.waiting = () => done();
    else done();
  }

  override _flush(done: TransformCallback): void {
    this.flushed = done;
    try {
      this.dispatch(this.blocks.take(), true);
    } catch (err) {
      done(err as Error);
    }
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    this.pool?.close();
    this.pool = undefined;
    cb(err);
  }

  private maxInFlight(): number {
    return 2 * (this.pool?.size ?? 1);
  }

  private dispatch(block: Buffer, final: boolean): void {
    // An empty last block adds no member, unless the whole input was empty.
    if (block.length === 0 && (!final || this.members > 0)) {
      if (final) this.drain();
      return;
    }
    this.members++;
    const trailer = Buffer.alloc(8);
    trailer.writeUInt32LE(crc32(block, 0) >>> 0, 0);
    trailer.writeUInt32LE(block.length, 4);
    const job: Job = {};
    this.jobs.push(job);
    this.pool ??= new DeflatePool(this.threads, GZIP_LEVEL, (err) => this.destroy(err));
    this.pool.run(block, (out) => {
      job.out = Buffer.concat([GZIP_HEADER, out, trailer]);
      this.drain();
    });
  }

  private drain(): void {
    while (this.jobs[0]?.out) this.push(this.jobs.shift()!.out);
    if (this.waiting && this.jobs.length < this.maxInFlight()) {
      const w = this.waiting;
      this.waiting = undefined;
      w();
    }
    if (this.flushed && this.jobs.length === 0) {
      this.pool?.close();
      this.pool = undefined;
      const done = this.flushed;
      this.flushed = undefined;
      done();
    }
  }
}

// The worker's whole program. It is CommonJS (eval'd workers are); it imports the
// exact libdeflate the main thread resolved, once (the package instantiates its wasm
// module on first use and keeps it), and deflates one block per message. Messages are
// handled in the order they came: each waits on the same `ready` promise. (libdeflate
// is only ever loaded in these workers: its Emscripten glue installs process-wide
// uncaughtException and unhandledRejection handlers.)
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const ready = import(workerData.libdeflate).then((m) => m.deflate);
parentPort.on('message', (m) => {
  ready.then((deflate) => {
    const out = deflate(m.data, workerData.level);
    parentPort.postMessage({ id: m.id, out }, [out.buffer]);
  }).catch((err) => {
    parentPort.postMessage({ id: m.id, error: String(err && err.stack || err) });
  });
});
`;

const libdeflateUrl = pathToFileURL(createRequire(import.meta.url).resolve('libdeflate')).href;

/** Worker threads running libdeflate; results come back by job id, in any order. */
class DeflatePool {
  private readonly workers: Worker[] = [];
  private readonly callbacks = new Map<number, (out: Buffer) => void>();
  private nextId = 0;
  private closed = false;

  constructor(
    readonly size: number,
    level: number,
    private readonly onError: (err: Error) => void,
  ) {
    for (let i = 0; i < this.size; i++) {
      const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { libdeflate: libdeflateUrl, level } });
      w.on('message', (m: { id: number; out?: Uint8Array; error?: string }) => {
        const cb = this.callbacks.get(m.id);
        this.callbacks.delete(m.id);
        if (!m.out) {
          if (!this.closed) this.onError(new Error(`deflate worker: ${m.error ?? 'no output'}`));
          return;
        }
        cb?.(Buffer.from(m.out.buffer, m.out.byteOffset, m.out.byteLength));
      });
      w.on('error', (err) => {
        if (!this.closed) this.onError(err);
      });
      w.on('exit', (code) => {
        if (!this.closed) this.onError(new Error(`deflate worker exited with code ${code}`));
      });
      this.workers.push(w);
    }
  }

  run(data: Buffer, cb: (out: Buffer) => void): void {
    const id = this.nextId++;
    this.callbacks.set(id, cb);
    // Blocks go round-robin: they are the same size, so the load stays even.
    // A full block owns its ArrayBuffer and moves to the worker; anything else (a
    // short last block may live in Node's shared Buffer pool) is copied first.
    const moved = ownsBuffer(data) ? data : new Uint8Array(data);
    this.workers[id % this.size]!.postMessage({ id, data: moved }, [moved.buffer as ArrayBuffer]);
  }

  close(): void {
    this.closed = true;
    for (const w of this.workers) void w.terminate();
  }
}

// zlib.crc32 is Node ≥ 20.15; a CRC-32 is the same number whatever computes it.
const nodeCrc32 = (zlib as { crc32?: (data: Uint8Array, value?: number) => number }).crc32;
let table: Uint32Array | undefined;

function crc32(data: Uint8Array, value: number): number {
  if (nodeCrc32) return nodeCrc32(data, value);
  table ??= makeTable();
  let c = ~value >>> 0;
  for (let i = 0; i < data.length; i++) c = table[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

function makeTable(): Uint32Array {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
}
