/**
 * Where a file entry's bytes come from. Any `() => Readable` is a valid `content`;
 * the two constructors here also tell the tar writer where the bytes are, so it can
 * take them without a stream per file: `fileContent` lets it read the file itself (in
 * a worker thread, a batch of small files per message, each with one right-sized
 * read), `bytesContent` hands it the buffer. Either way the tar bytes are the same as
 * through the stream; only the cost differs (bench/RESULTS.md, "Layer writing:
 * libdeflate and batched reads").
 */
import { createReadStream } from 'node:fs';
import { resolve } from 'node:path';
import { Readable } from 'node:stream';

export interface Content {
  /** Opens the bytes as a stream: the general form, read once. */
  (): Readable;
  /** Absolute path of a regular file holding the bytes. */
  readonly file?: string;
  /** The bytes themselves. */
  readonly bytes?: Buffer;
}

/** The content of the regular file at `path` (made absolute now, against the cwd). */
export function fileContent(path: string): Content {
  const file = resolve(path);
  return Object.assign(() => createReadStream(file), { file });
}

/** Bytes already in memory. */
export function bytesContent(data: Uint8Array): Content {
  const bytes = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return Object.assign(() => Readable.from([bytes]), { bytes });
}
