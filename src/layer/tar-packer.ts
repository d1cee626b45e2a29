/**
 * Assembles the tar stream in batches of about BATCH_BYTES, reading file contents in
 * the shared file-system worker (fs-worker.ts) with plain synchronous open/read/close.
 *
 * Why: a layer is mostly small files, and reading each through its own fs.ReadStream
 * costs more than the bytes — a stream object, a 64 KiB buffer, four thread-pool round
 * trips (open, read, read to EOF, close) with their callbacks — all on the main thread,
 * which also hashes the tar and feeds the compressors. Here the main thread only
 * describes a batch: literal bytes (headers, padding, in-memory contents) and file
 * ranges. The worker lays the batch out in one buffer, reading each range straight
 * into its place, and moves the buffer back: one message each way per batch, no copy
 * of file data on the main thread, and reading overlaps with hashing and compression
 * (up to IN_FLIGHT batches ahead). Batches without file ranges never leave the main
 * thread, so a layer without files starts no worker.
 *
 * The worker checks sizes as it reads: a range must be there in full, and a file's
 * last range must end the file, so a file that grew or shrank since it was listed
 * fails the layer (`sizeChanged`) instead of being truncated or padded.
 */
import type { MessagePort } from 'node:worker_threads';
import { OcibuildError } from '../errors.js';
import { openChannel } from './fs-worker.js';

/** Tar bytes per batch, about (a batch ends at the first op that reaches it). */
const BATCH_BYTES = 1024 * 1024;
const BATCH_OPS = 2048;
/** Batches sent ahead of the one being consumed: the read-ahead. */
const IN_FLIGHT = 8;
/** Files are read in pieces of at most this size; a large file is never held whole. */
export const FILE_PIECE = 1024 * 1024;

/** A file range to read, then `pad` zero bytes. */
interface FileOp {
  path: string;
  offset: number;
  length: number;
  /** The range ends the file: the worker checks that nothing follows. */
  last: boolean;
  pad: number;
}

/** A number: copy that many of the batch's literal bytes. */
type Op = number | FileOp;

/** What a file op was for, to name it in an error. */
interface OpSource {
  member: string;
  size: number;
  offset: number;
  file: string;
}

interface Batch {
  id: number;
  lit: Buffer[];
  ops: Op[];
  sources: Map<number, OpSource>;
  size: number;
  reply?: Promise<Buffer>;
  settled?: boolean;
}

interface WorkerError {
  op: number;
  /** An fs error (open, read). */
  message?: string;
  code?: string;
  syscall?: string;
  /** A size check: bytes read of the range, and whether the file went on. */
  got?: number;
  more?: boolean;
}

type Reply = { id: number; buf: Uint8Array; error?: undefined } | { id: number; buf?: undefined; error: WorkerError };

export function sizeChanged(path: string, expected: number, got: number): OcibuildError {
  return new OcibuildError(`${path}: expected ${expected} bytes, read ${got > expected ? 'more' : got}`, {
    where: path,
    hint: 'the file changed while the layer was being written; make sure nothing modifies the tree during a build',
  });
}

export class TarPacker {
  private building: Batch = newBatch(0);
  private readonly unsent: Batch[] = [];
  private readonly inFlight: Batch[] = [];
  private readonly waiting = new Map<number, { batch: Batch; resolve: (b: Buffer) => void; reject: (e: Error) => void }>();
  private port: MessagePort | undefined;
  /** Set to 1 on close: the worker drops the batches it has not started. */
  private readonly stop = new Int32Array(new SharedArrayBuffer(4));
  private failed: Error | undefined;
  private closed = false;

  /** Appends bytes as they are (kept by reference until the batch is sent). */
  literal(b: Buffer): void {
    if (b.length === 0) return;
    const batch = this.building;
    const lastOp = batch.ops.length - 1;
    if (lastOp >= 0 && typeof batch.ops[lastOp] === 'number') batch.ops[lastOp] = (batch.ops[lastOp] as number) + b.length;
    else batch.ops.push(b.length);
    batch.lit.push(b);
    batch.size += b.length;
    this.maybeSeal();
  }

  /**
   * Appends the regular file at `file` (absolute), which must hold exactly `size`
   * bytes, and the zero padding that follows it; `member` names it in errors.
   */
  file(member: string, file: string, size: number, pad: number): void {
    for (let offset = 0; ; offset += FILE_PIECE) {
      const length = Math.min(FILE_PIECE, size - offset);
      const last = offset + length >= size;
      const batch = this.building;
      batch.sources.set(batch.ops.length, { member, size, offset, file });
      batch.ops.push({ path: file, offset, length, last, pad: last ? pad : 0 });
      batch.size += length + (last ? pad : 0);
      this.maybeSeal();
      if (last) return;
    }
  }

  /** Whether `flow()` has something to do: a batch to send or a reply to hand on. */
  get ready(): boolean {
    return this.unsent.length > 0 || this.inFlight[0]?.settled === true;
  }

  /**
   * The tar bytes ready so far, in order. Waits only when the read-ahead is full;
   * with `all`, waits for everything appended.
   */
  async *flow(all = false): AsyncGenerator<Buffer> {
    if (all) this.seal();
    for (;;) {
      while (this.unsent.length > 0 && this.inFlight.length < IN_FLIGHT) this.send(this.unsent.shift()!);
      const head = this.inFlight[0];
      if (!head) return;
      if (!all && !head.settled && this.unsent.length === 0) return;
      this.inFlight.shift();
      yield await head.reply!;
    }
  }

  /** Stops the worker after its current batch; what is pending never settles. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    Atomics.store(this.stop, 0, 1);
    this.waiting.clear();
    this.port?.close();
  }

  private maybeSeal(): void {
    if (this.building.size >= BATCH_BYTES || this.building.ops.length >= BATCH_OPS) this.seal();
  }

  private seal(): void {
    const b = this.building;
    if (b.ops.length === 0) return;
    this.unsent.push(b);
    this.building = newBatch(b.id + 1);
  }

  private send(batch: Batch): void {
    this.inFlight.push(batch);
    if (batch.sources.size === 0) {
      // Literal bytes only: nothing to read, no worker needed.
      batch.reply = Promise.resolve(batch.lit.length === 1 ? batch.lit[0]! : Buffer.concat(batch.lit, batch.size));
      batch.settled = true;
      return;
    }
    batch.reply = new Promise<Buffer>((resolve, reject) => {
      if (this.closed) return reject(new Error('TarPacker is closed'));
      if (this.failed) return reject(this.failed);
      this.waiting.set(batch.id, { batch, resolve, reject });
      this.port ??= this.open();
      // The port keeps the process alive only while a reply is due: a tar stream
      // that is dropped unfinished does not hold the event loop.
      if (this.waiting.size === 1) this.port.ref();
      const lit = Buffer.concat(batch.lit);
      // A Buffer from Node's shared pool cannot be moved; the clone copies it then.
      const owned = lit.byteOffset === 0 && lit.byteLength === lit.buffer.byteLength;
      this.port.postMessage({ id: batch.id, lit, ops: batch.ops, size: batch.size }, owned ? [lit.buffer as ArrayBuffer] : []);
    });
    // Rejections surface when the batch's turn comes (flow); until then they are held.
    batch.reply.then(
      () => (batch.settled = true),
      () => (batch.settled = true),
    );
    batch.lit = [];
  }

  private open(): MessagePort {
    const port = openChannel(PACK_PROGRAM, { stop: this.stop });
    port.on('message', (m: Reply | { fatal: string }) => {
      if ('fatal' in m) this.fail(new Error(`tar packer worker: ${m.fatal}`));
      else this.receive(m);
    });
    port.on('close', () => this.fail(new Error('tar packer worker stopped')));
    return port;
  }

  private receive(m: Reply): void {
    const w = this.waiting.get(m.id);
    if (!w) return;
    this.waiting.delete(m.id);
    if (this.waiting.size === 0) this.port?.unref();
    if (m.buf) {
      w.resolve(Buffer.from(m.buf.buffer, m.buf.byteOffset, m.buf.byteLength));
      return;
    }
    const e = m.error;
    const src = w.batch.sources.get(e.op)!;
    if (e.message !== undefined) {
      // Shaped like the error node:fs would have thrown for the same call.
      w.reject(Object.assign(new Error(e.message), { code: e.code, syscall: e.syscall, path: src.file }));
    } else {
      w.reject(sizeChanged(src.member, src.size, e.more ? src.size + 1 : src.offset + (e.got ?? 0)));
    }
  }

  private fail(err: Error): void {
    if (this.closed) return;
    this.failed = err;
    for (const w of this.waiting.values()) w.reject(err);
    this.waiting.clear();
    this.port?.unref();
  }
}

function newBatch(id: number): Batch {
  return { id, lit: [], ops: [], sources: new Map(), size: 0 };
}

// The worker's side of a channel (see fs-worker.ts). One reply per batch: its bytes,
// or the first error met. Batches arriving after close (the stop flag) are dropped.
const PACK_PROGRAM = `
const fs = require('node:fs');
const stop = data.stop;
const one = Buffer.alloc(1);
function readInto(op, view) {
  const fd = fs.openSync(op.path, 'r');
  try {
    let got = 0;
    while (got < op.length) {
      const n = fs.readSync(fd, view, got, op.length - got, op.offset + got);
      if (n === 0) break;
      got += n;
    }
    const more = op.last && got === op.length && fs.readSync(fd, one, 0, 1, op.offset + got) > 0;
    return { got, more };
  } finally {
    fs.closeSync(fd);
  }
}
port.on('message', (b) => {
  if (Atomics.load(stop, 0) === 1) return;
  // Not zero-filled: every byte is written below, padding included.
  const buf = Buffer.allocUnsafeSlow(b.size);
  let at = 0;
  let lit = 0;
  for (let k = 0; k < b.ops.length; k++) {
    const op = b.ops[k];
    if (typeof op === 'number') {
      buf.set(b.lit.subarray(lit, lit + op), at);
      lit += op;
      at += op;
      continue;
    }
    let r;
    try {
      r = readInto(op, buf.subarray(at, at + op.length));
    } catch (err) {
      port.postMessage({ id: b.id, error: { op: k, message: err.message, code: err.code, syscall: err.syscall } });
      return;
    }
    if (r.got < op.length || r.more) {
      port.postMessage({ id: b.id, error: { op: k, got: r.got, more: r.more } });
      return;
    }
    at += op.length;
    buf.fill(0, at, at + op.pad);
    at += op.pad;
  }
  port.postMessage({ id: b.id, buf }, [buf.buffer]);
});
port.on('close', () => Atomics.store(stop, 0, 1));
`;
