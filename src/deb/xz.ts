// xz decoding for the .deb members (data.tar.xz, control.tar.xz): the native/ addon on
// the system liblzma when it is built, lzma-native otherwise. Both decode .xz
// (concatenated streams too) and legacy .lzma, as `xz -dc` does, so the bytes out are
// the same either way and no digest depends on which one ran. The addon exists for
// speed: lzma-native's bundled liblzma is compiled without optimization, and fresh
// output memory costs more than decoding into it unless it sits on huge pages
// (bench/RESULTS.md, "xz decoding" and "xz decoding, native").
import { createRequire } from 'node:module';
import { Duplex, type DuplexOptions, type Transform } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { debuglog } from 'node:util';

/** native/xz.c's XzDecoder: one liblzma stream, one job at a time on the libuv pool. */
interface NativeDecoder {
  /** Decodes from `input` into `output` until the input is used up or the output is
   *  full (with `finish`: until the end of the stream), off the JS thread. */
  code(input: Uint8Array, output: Uint8Array, finish: boolean, done: (err: Error | null, inputUsed: number, outputUsed: number, streamEnd: boolean) => void): void;
  /** Frees liblzma's memory now, or when the running job completes. */
  end(): void;
}

export interface XzAddon {
  XzDecoder: new (memlimit?: number) => NativeDecoder;
  /** The liblzma the addon runs on, e.g. '5.4.1'. */
  liblzmaVersion: string;
  /** liblzma streams not yet ended in this process (for tests of cleanup). */
  liveStreams(): number;
  /** A Buffer of outputBlockSize (2 MiB) uninitialized bytes on transparent huge
   *  pages where the system has them: one page fault instead of 512 (native/xz.c). */
  outputBlock(): Buffer;
  outputBlockSize: number;
}

interface LzmaNative {
  createDecompressor(options?: Record<string, unknown>): Transform;
}

const require = createRequire(import.meta.url);
const debug = debuglog('ocibuild');
/** Built by native/build.mjs; the same relative path from src/deb and dist/deb. */
export const ADDON_PATH = fileURLToPath(new URL('../../native/build/Release/ocibuild_xz.node', import.meta.url));

let addon: XzAddon | null | undefined;
let addonError: unknown;
let lzma: LzmaNative | undefined;

/** The native addon, or undefined when it is not built, does not load, or
 *  OCIBUILD_SKIP_NATIVE=1 (which native/build.mjs also obeys). */
export function nativeXz(): XzAddon | undefined {
  if (addon === undefined) {
    try {
      if (process.env.OCIBUILD_SKIP_NATIVE === '1') throw new Error('OCIBUILD_SKIP_NATIVE=1');
      addon = require(ADDON_PATH) as XzAddon;
    } catch (err) {
      addon = null;
      addonError = err;
      debug('native xz decoder not loaded (%s); decoding with lzma-native', (err as Error).message.split('\n')[0]);
    }
  }
  return addon ?? undefined;
}

/** Why nativeXz() is undefined, for error messages. */
export function nativeXzLoadError(): unknown {
  nativeXz();
  return addonError;
}

/** A stream decoding .xz or .lzma: the native decoder when built, else lzma-native. */
export function createXzDecoder(): Duplex {
  const native = nativeXz();
  if (native) return new NativeXzStream(native);
  return createLzmaNativeDecoder();
}

/** lzma-native's decoder (the fallback). Its default 64 KiB output buffer costs one
 *  event-loop hop per 64 KiB; 1 MiB made the readDeb walk 10-15% faster. Each output
 *  is copied to an exact-size Buffer, so the larger scratch buffer retains no memory. */
export function createLzmaNativeDecoder(): Transform {
  // lzma-native ships no type declarations (see the interface above).
  lzma ??= require('lzma-native') as LzmaNative;
  return lzma.createDecompressor({ bufsize: 1 << 20 });
}

export interface NativeXzOptions extends DuplexOptions {
  /** liblzma's memory limit in bytes; beyond it decoding fails with LZMA_MEMLIMIT_ERROR.
   *  Default: none, as `xz -dc` (xz -9 needs 65 MiB, the format allows 1.5 GiB+). */
  memlimit?: number;
  /** Bytes of output one job produces at most (default 1 MiB). */
  outputSize?: number;
}

/** One job fills up to this much output, so a job is ~10 ms of CPU and the JS thread
 *  sees one callback per MiB decoded. */
const OUTPUT_SIZE = 1 << 20;
/** A new block is started when less than this is left in the current one. */
const OUTPUT_MIN_FREE = 64 * 1024;
/** Compressed input accepted ahead of the decoder before writes wait. */
const INPUT_AHEAD = 1 << 20;

/**
 * The native decoder as a stream. Jobs run on the libuv pool, one at a time per
 * stream; the next job starts before the previous output is pushed, so decoding (on
 * the pool) overlaps with whatever the reader does with the output (on the JS
 * thread). Back-pressure: when push() says the reader is full, no further job starts
 * until _read(); writes wait while more than INPUT_AHEAD bytes are queued.
 * Output chunks are slices of 2 MiB blocks that are filled in order, so no byte is
 * copied and little memory is wasted (as node:zlib does with its 16 KiB buffers).
 * A destroyed stream emits 'close' only after liblzma's memory is freed.
 */
export class NativeXzStream extends Duplex {
  private readonly decoder: NativeDecoder;
  private readonly outputSize: number;
  private newOutput: () => Buffer;
  private queue: Buffer[] = [];
  /** Bytes written and not yet consumed by the decoder (input plus queue). */
  private pendingBytes = 0;
  private input: Buffer = Buffer.alloc(0);
  private inputAt = 0;
  private output: Buffer = Buffer.alloc(0);
  private outputAt = 0;
  /** The last job filled its output: liblzma may have more before it needs input. */
  private outputWasFull = false;
  private running = false;
  private readerFull = false;
  private finishing = false;
  private streamEnded = false;
  private done = false;
  private writeWaiting: ((err?: Error | null) => void) | undefined;
  private finalWaiting: ((err?: Error | null) => void) | undefined;
  private destroyWaiting: (() => void) | undefined;

  constructor(addon: XzAddon, opts: NativeXzOptions = {}) {
    const { memlimit, outputSize, ...streamOpts } = opts;
    const size = outputSize ?? OUTPUT_SIZE;
    super({ readableHighWaterMark: size, ...streamOpts });
    this.outputSize = size;
    this.decoder = new addon.XzDecoder(memlimit);
    // Jobs write into the addon's 2 MiB blocks one after another.
    const plain = (): Buffer => Buffer.allocUnsafe(Math.max(size, addon.outputBlockSize));
    this.newOutput = (): Buffer => {
      try {
        return addon.outputBlock();
      } catch {
        // A runtime without external buffers, or no address space left for a mapping.
        this.newOutput = plain;
        return plain();
      }
    };
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (chunk.length > 0) {
      this.queue.push(chunk);
      this.pendingBytes += chunk.length;
    }
    if (this.pendingBytes < INPUT_AHEAD) callback();
    else this.writeWaiting = callback;
    this.pump();
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.finishing = true;
    this.finalWaiting = callback;
    this.pump();
  }

  override _read(): void {
    this.readerFull = false;
    this.pump();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.decoder.end();
    this.queue = [];
    if (this.running) this.destroyWaiting = () => callback(err);
    else callback(err);
  }

  /** Starts the next job if there is something to do and nothing stops it. */
  private pump(): void {
    if (this.running || this.destroyed || this.readableEnded || this.done) return;
    if (this.inputAt >= this.input.length && this.queue.length > 0) {
      // Small writes (64 KiB file reads) are joined so that one job fills its output.
      this.input = this.queue.length === 1 ? this.queue[0]! : Buffer.concat(this.queue);
      this.inputAt = 0;
      this.queue = [];
    }
    // With LZMA_CONCATENATED liblzma ends the stream only under LZMA_FINISH, so after
    // the end there is no input left (what follows a .lzma stream is LZMA_DATA_ERROR).
    if (this.streamEnded) {
      this.end_();
      return;
    }
    if (this.readerFull) return;
    const hasInput = this.inputAt < this.input.length;
    const finish = this.finishing && this.queue.length === 0;
    if (!hasInput && !this.outputWasFull && !finish) return;
    if (this.output.length - this.outputAt < OUTPUT_MIN_FREE) {
      this.output = this.newOutput();
      this.outputAt = 0;
    }
    const out = this.output.subarray(this.outputAt, this.outputAt + this.outputSize);
    this.running = true;
    this.decoder.code(this.input.subarray(this.inputAt), out, finish, (err, inputUsed, outputUsed, streamEnd) => {
      this.running = false;
      try {
        this.settle(err, inputUsed, outputUsed, streamEnd, out);
      } catch (e) {
        this.destroy(e as Error);
      }
    });
  }

  private settle(err: Error | null, inputUsed: number, outputUsed: number, streamEnd: boolean, out: Buffer): void {
    if (this.destroyed) {
      const waiting = this.destroyWaiting;
      this.destroyWaiting = undefined;
      waiting?.();
      return;
    }
    if (err) {
      this.destroy(err);
      return;
    }
    this.inputAt += inputUsed;
    this.pendingBytes -= inputUsed;
    const chunk = out.subarray(0, outputUsed);
    this.outputAt += outputUsed;
    this.outputWasFull = outputUsed === out.length;
    if (streamEnd) this.streamEnded = true;

    // The next job starts before push(), so it decodes while the reader works on this
    // chunk; at the end of the stream the chunk goes first, then the end.
    if (!this.streamEnded) this.pump();
    if (chunk.length > 0 && !this.push(chunk)) this.readerFull = true;
    if (this.streamEnded) this.pump();
    if (this.writeWaiting && this.pendingBytes < INPUT_AHEAD && !this.destroyed) {
      const waiting = this.writeWaiting;
      this.writeWaiting = undefined;
      waiting();
    }
  }

  /** The end of the stream, after LZMA_FINISH. */
  private end_(): void {
    this.done = true;
    this.decoder.end();
    this.push(null);
    const waiting = this.finalWaiting;
    this.finalWaiting = undefined;
    waiting?.();
  }
}
