// Streaming reader for the ar archives that hold a .deb (deb(5), ar(5)): the common
// subset of the BSD and System V formats that dpkg writes and reads. Members are
// streamed to the caller; nothing but one 60-byte header is ever buffered.
import { Readable } from 'node:stream';
import { OcibuildError } from '../errors.js';

const MAGIC = '!<arch>\n';
const HEADER_SIZE = 60;
const HINT = 'the file is damaged or not a Debian package; delete it from the store and download it again';

export interface ArMember {
  /** The member name, trailing spaces and a GNU-style trailing '/' removed. */
  name: string;
  /** Size of the body in bytes, as the header says. */
  size: number;
  /** Seconds since the epoch, from the header (0 when the field is empty). */
  mtime: number;
  /** The octal mode field, e.g. 0o100644 (0 when the field is empty or not octal). */
  mode: number;
  /** The member's bytes. Read it (or destroy it) before asking for the next member;
   *  whatever is left unread is skipped when the iteration moves on. */
  body: Readable;
}

/** Pulls exact byte counts out of a chunked source without copying chunks it can pass on. */
class ChunkReader {
  private head: Buffer = Buffer.alloc(0);
  private ended = false;
  /** Bytes consumed so far: used in error messages. */
  offset = 0;

  constructor(private readonly source: AsyncIterator<Buffer | string>) {}

  private async fill(): Promise<boolean> {
    if (this.ended) return false;
    const r = await this.source.next();
    if (r.done) {
      this.ended = true;
      return false;
    }
    const chunk = typeof r.value === 'string' ? Buffer.from(r.value) : r.value;
    this.head = this.head.length === 0 ? chunk : Buffer.concat([this.head, chunk]);
    return true;
  }

  /** Up to n bytes: fewer only at the end of the source. */
  async read(n: number): Promise<Buffer> {
    while (this.head.length < n && (await this.fill()));
    const out = this.head.subarray(0, n);
    this.head = this.head.subarray(out.length);
    this.offset += out.length;
    return out;
  }

  /** The next chunk of at most n bytes (n > 0), or an empty buffer at the end of the source. */
  async chunk(n: number): Promise<Buffer> {
    if (this.head.length === 0 && !(await this.fill())) return Buffer.alloc(0);
    const out = this.head.subarray(0, n);
    this.head = this.head.subarray(out.length);
    this.offset += out.length;
    return out;
  }
}

function field(header: Buffer, start: number, length: number): string {
  return header.toString('latin1', start, start + length).replace(/ +$/, '');
}

/** ar(5): decimal fields padded with spaces; an empty field means 0. */
function decimal(text: string): number | undefined {
  if (text === '') return 0;
  return /^[0-9]+$/.test(text) ? Number(text) : undefined;
}

/**
 * Iterates over the members of an ar archive read from `src`. `where` names the
 * archive in errors (the .deb file or package). Errors a user can meet (bad magic,
 * truncation, malformed headers) are OcibuildErrors naming `where`.
 */
export async function* readAr(src: Readable, where: string, signal?: AbortSignal): AsyncGenerator<ArMember, void, undefined> {
  const fail = (message: string): OcibuildError => new OcibuildError(message, { where, hint: HINT });
  const reader = new ChunkReader(src[Symbol.asyncIterator]() as AsyncIterator<Buffer | string>);

  const magic = await reader.read(MAGIC.length);
  if (magic.toString('latin1') !== MAGIC) throw fail('not an ar archive (bad magic): a .deb starts with "!<arch>\\n"');

  for (;;) {
    signal?.throwIfAborted();
    const at = reader.offset;
    const header = await reader.read(HEADER_SIZE);
    if (header.length === 0) return;
    if (header.length < HEADER_SIZE) throw fail(`truncated ar header at byte ${at} (${header.length} of ${HEADER_SIZE} bytes)`);
    if (header.toString('latin1', 58, 60) !== '`\n') throw fail(`malformed ar header at byte ${at} (no "\`\\n" terminator)`);

    const rawName = field(header, 0, 16);
    // GNU ar ends names with '/'; dpkg accepts both spellings.
    const name = rawName.endsWith('/') && rawName !== '/' ? rawName.slice(0, -1) : rawName;
    const sizeText = field(header, 48, 10);
    const size = decimal(sizeText);
    if (size === undefined || sizeText === '') throw fail(`ar member "${name}" at byte ${at}: size "${sizeText}" is not a number`);
    const mtime = decimal(field(header, 16, 12)) ?? 0;
    const modeText = field(header, 40, 8);
    const mode = /^[0-7]+$/.test(modeText) ? parseInt(modeText, 8) : 0;

    // Shared between the body stream and this generator, so that the generator can skip
    // what the caller left unread without racing a read the body still has in flight.
    const state: { remaining: number; inflight: Promise<Buffer> | undefined; abandoned: boolean } = { remaining: size, inflight: undefined, abandoned: false };
    const take = async (): Promise<Buffer> => {
      const chunk = await reader.chunk(Math.min(state.remaining, 1 << 20));
      if (chunk.length === 0) throw fail(`ar member "${name}" is truncated: ${size - state.remaining} of ${size} bytes present`);
      state.remaining -= chunk.length;
      return chunk;
    };
    const pull = async function* (): AsyncGenerator<Buffer> {
      while (state.remaining > 0 && !state.abandoned) {
        state.inflight = take();
        const chunk = await state.inflight;
        state.inflight = undefined;
        yield chunk;
      }
    };
    const body = Readable.from(pull(), { objectMode: false });
    yield { name, size, mtime, mode, body };

    state.abandoned = true;
    if (state.remaining > 0) {
      if (!body.destroyed) body.destroy();
      if (state.inflight) await state.inflight;
      while (state.remaining > 0) await take();
    }
    // ar(5): each member starts on an even offset; a '\n' pads odd sizes. A missing pad at
    // the very end of the file is tolerated, as binutils and dpkg do.
    if (size % 2 === 1) await reader.read(1);
  }
}
