// The xz decoders of src/deb/xz.ts (native/ on the system liblzma, and the lzma-native
// fallback) against the xz CLI: round trips over sizes, block and stream layouts,
// checks and chunkings; errors for corrupt, truncated and foreign input; many
// decoders at once; abort and destroy mid-stream freeing liblzma's memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { Readable, Writable, type Duplex } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { readDeb } from '../../src/deb/deb.js';
import { decompressor } from '../../src/deb/decompress.js';
import { ADDON_PATH, createLzmaNativeDecoder, nativeXz, nativeXzLoadError, NativeXzStream } from '../../src/deb/xz.js';
import { OcibuildError } from '../../src/errors.js';
import { buildDeb } from '../support/deb.js';

const native = nativeXz();
const NO_NATIVE = 'the native addon is not built (npm run build:native); the lzma-native fallback is tested';

// ---------------------------------------------------------------------------
// helpers

function xz(args: string[], input: Buffer): { status: number | null; stdout: Buffer; stderr: string } {
  const r = spawnSync('xz', args, { input, maxBuffer: 1 << 30 });
  // xz may stop reading early on bad input: EPIPE then, and a failure status.
  if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'EPIPE') return { status: r.status ?? 1, stdout: r.stdout, stderr: r.stderr.toString() };
  assert.ifError(r.error); // xz-utils is needed
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}

function compress(args: string[], data: Buffer): Buffer {
  const r = xz(['-c', ...args], data);
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

/** Deterministic bytes that compress like binaries do (a xorshift stream). */
function noise(size: number, seed: number): Buffer {
  const out = Buffer.alloc(size);
  let x = seed | 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

function text(size: number): Buffer {
  const lines: string[] = [];
  let n = 0;
  for (let i = 0; n < size; i++) {
    const line = `${i}: the quick brown fox ${(i * 7919) % 1000} jumps over the lazy dog ${'z'.repeat(i % 13)}\n`;
    lines.push(line);
    n += line.length;
  }
  return Buffer.from(lines.join('')).subarray(0, size);
}

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function chunked(data: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < data.length; at += size) out.push(data.subarray(at, at + size));
  return out;
}

async function decode(decoder: Duplex, input: Buffer[] | Buffer): Promise<Buffer> {
  const parts: Buffer[] = [];
  await pipeline(Readable.from(Array.isArray(input) ? input : [input]), decoder, new Writable({
    write(chunk: Buffer, _e, cb) {
      parts.push(chunk);
      cb();
    },
  }));
  return Buffer.concat(parts);
}

type Decoders = Array<[string, () => Duplex]>;
const decoders: Decoders = [
  ...(native ? [['native', () => new NativeXzStream(native)] as [string, () => Duplex]] : []),
  ['lzma-native', () => createLzmaNativeDecoder()],
];

// ---------------------------------------------------------------------------
// the addon itself

test('the native xz decoder loads (a failure when OCIBUILD_REQUIRE_NATIVE=1)', (t) => {
  if (!native) {
    if (process.env.OCIBUILD_REQUIRE_NATIVE === '1') {
      assert.fail(`OCIBUILD_REQUIRE_NATIVE=1 but ${ADDON_PATH} does not load: ${String(nativeXzLoadError())}`);
    }
    t.skip(NO_NATIVE);
    return;
  }
  assert.match(native.liblzmaVersion, /^5\.\d+\.\d+/);
  // What readDeb decodes data.tar.xz with.
  const d = decompressor('xz');
  assert.ok(d instanceof NativeXzStream);
  d.destroy();
});

test('without the addon, decoding falls back to lzma-native with a note only under NODE_DEBUG', () => {
  const data = text(200_000);
  const packed = compress(['-6'], data);
  const script = `
    const { createXzDecoder } = await import(${JSON.stringify(new URL('../../src/deb/xz.ts', import.meta.url).href)});
    const { createHash } = await import('node:crypto');
    const d = createXzDecoder();
    const h = createHash('sha256');
    d.on('data', (c) => h.update(c));
    d.on('end', () => process.stdout.write(d.constructor.name + ' ' + h.digest('hex')));
    d.end(Buffer.from(${JSON.stringify(packed.toString('base64'))}, 'base64'));`;
  const run = (env: Record<string, string>): { stdout: string; stderr: string } => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      env: { ...process.env, NODE_DEBUG: '', ...env },
      encoding: 'utf8',
    });
    assert.equal(r.status, 0, r.stderr);
    return { stdout: r.stdout, stderr: r.stderr };
  };
  const quiet = run({ OCIBUILD_SKIP_NATIVE: '1' });
  assert.equal(quiet.stderr, '');
  assert.notEqual(quiet.stdout.split(' ')[0], 'NativeXzStream');
  assert.equal(quiet.stdout.split(' ')[1], sha(data));
  const noisy = run({ OCIBUILD_SKIP_NATIVE: '1', NODE_DEBUG: 'ocibuild' });
  assert.match(noisy.stderr, /^OCIBUILD \d+: native xz decoder not loaded \(OCIBUILD_SKIP_NATIVE=1\); decoding with lzma-native\n$/);
  assert.equal(noisy.stdout, quiet.stdout);
});

// ---------------------------------------------------------------------------
// round trips

interface Case { name: string; data: Buffer; packed: Buffer }
const BLOCKS = '3.3 MB mixed, 256 KiB blocks';
const THREADS = '3.3 MB mixed, xz -T2 -1 (the multi-threaded encoder)';

let made: Case[] | undefined;

/** The round-trip cases, compressed once for the tests that share them. */
function cases(): Case[] {
  made ??= makeCases();
  return made;
}

function makeCases(): Case[] {
  // 3.3 MB: several 1 MiB output buffers, and two blocks with xz -T2 -1 (3 MiB blocks).
  const mixed = Buffer.concat([text(1_000_000), noise(700_000, 7), Buffer.alloc(1_200_000), text(300_000), noise(100_000, 11)]);
  const plain = (name: string, data: Buffer, args: string[]): Case => ({ name, data, packed: compress(args, data) });
  const two = [text(700_000), noise(300_000, 3)] as const;
  return [
    plain('empty input, xz -6', Buffer.alloc(0), ['-6']),
    plain('one byte', Buffer.from('x'), ['-6']),
    plain('300 KB of text, xz -9e', text(300_000), ['-9e']),
    plain('3.3 MB mixed, xz -6', mixed, ['-6']),
    plain(BLOCKS, mixed, ['-6', '--block-size=262144']),
    plain(THREADS, mixed, ['-T2', '-1']),
    plain('check sha256', text(100_000), ['--check=sha256']),
    plain('check none', text(100_000), ['--check=none']),
    plain('check crc32', noise(100_000, 5), ['--check=crc32']),
    plain('legacy .lzma', mixed.subarray(0, 1_000_000), ['--format=lzma']),
    {
      name: 'two concatenated streams with stream padding',
      data: Buffer.concat(two),
      packed: Buffer.concat([compress(['-6'], two[0]), Buffer.alloc(8), compress(['-1'], two[1])]),
    },
    plain('32 MiB of zeros (ratio 7000:1)', Buffer.alloc(32 << 20), ['-6']),
  ];
}

test('round trips: every decoder gives what was compressed, as `xz -dc` does, in any chunking', async () => {
  for (const c of cases()) {
    // The oracle agrees with the input (the case is what it claims to be).
    assert.equal(sha(xz(['-dc'], c.packed).stdout), sha(c.data), c.name);
    const chunkings: Array<[string, Buffer[]]> = [
      ['one write', [c.packed]],
      ['7 KiB writes', chunked(c.packed, 7 * 1024)],
      ['64 KiB writes', chunked(c.packed, 64 * 1024)],
    ];
    // Byte by byte only for small inputs (every header split at every offset).
    if (c.packed.length <= 20_000) chunkings.push(['1 byte writes', chunked(c.packed, 1)]);
    for (const [how, chunks] of chunkings) {
      for (const [name, make] of decoders) {
        const out = await decode(make(), chunks);
        assert.equal(out.length, c.data.length, `${c.name}, ${how}, ${name}`);
        assert.ok(out.equals(c.data), `${c.name}, ${how}, ${name}`);
      }
    }
  }
});

test('xz -T2 and --block-size really made several blocks (the round trips rely on it)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ocibuild-xz-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  for (const name of [BLOCKS, THREADS]) {
    const file = join(dir, 'x.xz');
    await writeFile(file, cases().find((c) => c.name === name)!.packed);
    // xz --robot -l reads only files; one "block" line per block.
    const r = spawnSync('xz', ['--robot', '-lv', file], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const blocks = r.stdout.split('\n').filter((l) => l.startsWith('block\t')).length;
    assert.ok(blocks > 1, `${name}: ${blocks} block(s)`);
  }
});

// ---------------------------------------------------------------------------
// errors

test('errors: corrupt, truncated, empty, foreign, trailing data and the memory limit', async (t) => {
  if (!native) {
    t.skip(NO_NATIVE);
    return;
  }
  const data = Buffer.concat([text(400_000), noise(400_000, 13)]);
  const good = compress(['-6'], data);
  const corrupt = Buffer.from(good);
  corrupt.fill(0x55, 5000, 5040);
  const badCheck = Buffer.from(good);
  const at = badCheck.length - 40; // in the check and index area, after all data
  badCheck.writeUInt8(badCheck.readUInt8(at) ^ 0xff, at);
  const lzmaAlone = compress(['--format=lzma'], text(10_000));
  // The last column is false where lzma-native accepts the input: it ignores what
  // follows a .lzma stream.
  const table: Array<[string, Buffer, string, RegExp, boolean?]> = [
    ['corrupt data', corrupt, 'LZMA_DATA_ERROR', /^xz: compressed data is corrupt \(LZMA_DATA_ERROR\)$/],
    ['a damaged index or check', badCheck, 'LZMA_DATA_ERROR', /corrupt/],
    ['truncated', good.subarray(0, good.length - 10), 'LZMA_BUF_ERROR', /^xz: unexpected end of input \(the compressed data is truncated\) \(LZMA_BUF_ERROR\)$/],
    ['cut in the middle', good.subarray(0, good.length >> 1), 'LZMA_BUF_ERROR', /unexpected end of input/],
    ['only a stream header', good.subarray(0, 12), 'LZMA_BUF_ERROR', /unexpected end of input/],
    ['empty input', Buffer.alloc(0), 'LZMA_BUF_ERROR', /unexpected end of input/],
    ['not compressed', Buffer.from('hello, this is not xz\n'), 'LZMA_FORMAT_ERROR', /^xz: file format not recognized \(LZMA_FORMAT_ERROR\)$/],
    ['garbage after a stream', Buffer.concat([good, Buffer.from('garbage and more garbage')]), 'LZMA_DATA_ERROR', /corrupt/],
    ['data after a .lzma stream', Buffer.concat([lzmaAlone, Buffer.from('x')]), 'LZMA_DATA_ERROR', /^xz: compressed data is corrupt \(LZMA_DATA_ERROR\)$/, false],
  ];
  for (const [what, input, code, message, fallbackRefuses = true] of table) {
    // The oracle refuses it too.
    assert.notEqual(xz(['-dc'], input).status, 0, `xz -dc accepts "${what}"`);
    const chunkings: Buffer[][] = [[input], chunked(input, 4096)];
    for (const chunking of chunkings) {
      const err: unknown = await decode(new NativeXzStream(native), chunking).then(() => undefined, (e: unknown) => e);
      assert.ok(err instanceof Error, `${what}: expected an error`);
      assert.equal((err as NodeJS.ErrnoException).code, code, `${what}: ${err.message}`);
      assert.match(err.message, message, what);
    }
    // lzma-native refuses it as well (its own messages).
    if (fallbackRefuses) await assert.rejects(decode(createLzmaNativeDecoder(), [input]), what);
  }

  // xz -9 needs a 64 MiB dictionary.
  const big = compress(['-9'], text(50_000));
  const err = await decode(new NativeXzStream(native, { memlimit: 8 << 20 }), [big]).then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof Error);
  assert.equal((err as NodeJS.ErrnoException).code, 'LZMA_MEMLIMIT_ERROR');
  assert.match(err.message, /^xz: decoding needs 65 MiB of memory, more than the limit of 8 MiB \(LZMA_MEMLIMIT_ERROR\)$/);
  assert.ok((await decode(new NativeXzStream(native, { memlimit: 80 << 20 }), [big])).equals(text(50_000)));
  assert.throws(() => new NativeXzStream(native, { memlimit: 0 }), RangeError);
  assert.equal(native.liveStreams(), 0, 'failed decoders freed their liblzma streams');
});

test('readDeb: a corrupt data.tar.xz names the liblzma error', async (t) => {
  if (!native) {
    t.skip(NO_NATIVE);
    return;
  }
  const good = await buildDeb({ name: 'p', version: '1', dataCompression: 'xz', controlCompression: 'gz', files: { '/usr/share/p/a': noise(100_000, 3) } });
  const at = good.indexOf('data.tar.xz');
  const corrupt = Buffer.from(good);
  corrupt.fill(0x55, at + 300, at + 340);
  const err = await readDeb(Readable.from([corrupt]), 'p.deb', async () => undefined).then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof OcibuildError);
  assert.equal(err.where, 'p.deb');
  assert.match(err.message, /^cannot read data\.tar\.xz: xz: compressed data is corrupt \(LZMA_DATA_ERROR\)$/);
});

// ---------------------------------------------------------------------------
// concurrency, back-pressure, cleanup

test('sixteen decoders at once, each with its own input', async () => {
  const inputs = Array.from({ length: 16 }, (_, i) => Buffer.concat([text(100_000 + i * 30_000), noise(50_000 + i * 10_000, i + 1), Buffer.alloc(i * 200_000)]));
  const packed = inputs.map((d, i) => compress([`-${i % 7}`], d));
  for (const [name, make] of decoders) {
    const outs = await Promise.all(packed.map((p, i) => decode(make(), chunked(p, 16_384 + i * 1000))));
    outs.forEach((o, i) => assert.ok(o.equals(inputs[i]!), `${name}: decoder ${i}`));
  }
  if (native) assert.equal(native.liveStreams(), 0);
});

test('back-pressure: a slow reader holds the decoder to about two output buffers', async (t) => {
  if (!native) {
    t.skip(NO_NATIVE);
    return;
  }
  // 32 MiB of zeros compress to ~5 KB: one write gives the decoder all of it.
  const packed = compress(['-6'], Buffer.alloc(32 << 20));
  const d = new NativeXzStream(native);
  d.end(packed);
  let total = 0;
  let most = 0;
  // Each read takes all that is buffered: what the decoder ran ahead by.
  for await (const chunk of d) {
    total += (chunk as Buffer).length;
    most = Math.max(most, (chunk as Buffer).length);
    await new Promise((resolve) => setTimeout(resolve, 20)); // a reader slower than liblzma
  }
  assert.equal(total, 32 << 20);
  assert.ok(most <= 3 << 20, `the decoder ran ${most} bytes ahead of its reader`);
});

test('abort and destroy mid-stream: the error surfaces and liblzma memory is freed before close', async (t) => {
  const data = Buffer.concat([noise(1_500_000, 21), text(2_500_000)]);
  const packed = compress(['-6'], data);
  for (const [name, make] of decoders) {
    // Abort through pipeline's signal after the first output chunk.
    const ac = new AbortController();
    const d = make();
    let seen = 0;
    const walk = pipeline(Readable.from(chunked(packed, 65536)), d, new Writable({
      write(chunk: Buffer, _e, cb) {
        seen += chunk.length;
        ac.abort();
        cb();
      },
    }), { signal: ac.signal });
    await assert.rejects(walk, { name: 'AbortError' }, name);
    await finished(d).catch(() => undefined);
    assert.ok(d.destroyed, name);
    assert.ok(seen > 0 && seen < data.length, `${name}: ${seen} bytes before the abort`);
  }
  if (!native) {
    t.skip(NO_NATIVE);
    return;
  }
  assert.equal(native.liveStreams(), 0, 'aborted decoders freed their streams');

  // destroy() while a job runs: the job finishes on the pool, then 'close' comes.
  for (let i = 0; i < 20; i++) {
    const d = new NativeXzStream(native);
    d.write(packed);
    const first = await new Promise<Buffer>((resolve) => d.once('data', resolve));
    assert.ok(first.length > 0);
    const closed = new Promise<void>((resolve) => d.once('close', resolve));
    d.destroy();
    await closed;
    assert.equal(native.liveStreams(), 0, `after close ${i}`);
  }
  // And a decoder never written to, destroyed at once.
  const idle = new NativeXzStream(native);
  assert.equal(native.liveStreams(), 1);
  idle.destroy();
  await finished(idle).catch(() => undefined);
  assert.equal(native.liveStreams(), 0);
});

test('a decoder ends its liblzma stream as soon as the output ends', async (t) => {
  if (!native) {
    t.skip(NO_NATIVE);
    return;
  }
  const d = new NativeXzStream(native);
  const out = await decode(d, [compress(['-6'], text(10_000))]);
  assert.equal(out.length, 10_000);
  assert.equal(native.liveStreams(), 0);
});

test('output chunks stay intact after their decoder is gone, the heap is collected and other decoders run', async (t) => {
  if (!native) {
    t.skip(NO_NATIVE);
    return;
  }
  // Chunks live in the addon's mapped blocks: they must stay mapped while any view is alive.
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const data = Buffer.concat([noise(2_500_000, 31), text(2_500_000)]);
  const packed = compress(['-6'], data);
  const kept: Buffer[] = [];
  const d = new NativeXzStream(native);
  d.on('data', (chunk: Buffer) => kept.push(chunk.subarray(0, 100), chunk));
  await pipeline(Readable.from([packed]), d);
  const views = kept.filter((_, i) => i % 2 === 1);
  for (let i = 0; i < 3; i++) {
    gc();
    await decode(new NativeXzStream(native), [compress(['-1'], noise(3_000_000, 40 + i))]);
  }
  assert.ok(Buffer.concat(views).equals(data));
  assert.ok(kept[0]!.equals(data.subarray(0, 100)));
});
