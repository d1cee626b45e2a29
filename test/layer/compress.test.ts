// Pinned layer compression: the bytes depend on the input alone — not on how it is
// chunked, how many threads run, the machine or the Node version (known digests) —
// and the real gzip and zstd tools read them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { CompressStream } from 'zstd-napi';
import { compressor, ZSTD_LEVEL, ZSTD_WORKERS, type CompressorOptions } from '../../src/layer/compress.js';

const sha = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Deterministic, compressible bytes (an LCG picking words). */
function pseudoText(n: number, seed: number): Buffer {
  const words = ['layer', 'tar', 'oci', 'deb', 'usr', 'lib', 'python3', '\n', 'zstd', 'gzip', '\0\0\0\0\0\0\0\0', 'Depends:'];
  const out = Buffer.alloc(n);
  let x = seed >>> 0;
  let o = 0;
  while (o < n) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    o += out.write(`${words[x % words.length]}${x & 0x100 ? String(x % 977) : ''} `, o);
  }
  return out;
}

async function compress(kind: 'gzip' | 'zstd' | 'none', data: Buffer, chunk: number, opts: CompressorOptions = {}): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let i = 0; i < data.length; i += chunk) parts.push(data.subarray(i, i + chunk));
  const out: Buffer[] = [];
  for await (const c of Readable.from(parts).pipe(compressor(kind, opts))) out.push(c as Buffer);
  return Buffer.concat(out);
}

function run(cmd: string, args: string[], input: Buffer): Buffer {
  const r = spawnSync(cmd, args, { input, maxBuffer: 1 << 28 });
  if (r.error) throw new Error(`${cmd} could not run: ${r.error.message}`);
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr.toString()}`);
  return r.stdout;
}

const INPUT = pseudoText(1_300_000, 42); // 2 gzip members of 1 MiB, the last one short

// Any change of libdeflate (the npm package's wasm), libzstd, a level or a parameter
// changes these. They were the same on Node 20.20.2 and 22.23.3 (bench/RESULTS.md).
const KNOWN_GZIP = 'sha256:88bca8fb44300c5c65a80e5b21ddb6fda4c34151e010edf3cf7b2e23b1247f03';
const KNOWN_ZSTD = 'sha256:a3ca6ecc2c5b34813a45c9e5d75f895202afbe79f392f09f2d4bdec7d1d50acc';

test('gzip: RFC 1952 header without name or time, OS 3; CRC and size trailer; readable by gzip and zlib', async () => {
  const gz = await compress('gzip', INPUT, 65536);
  assert.deepEqual([...gz.subarray(0, 10)], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
  // The last member's ISIZE: its own block's length (each 1 MiB block is a member).
  assert.equal(gz.readUInt32LE(gz.length - 4), INPUT.length % (1024 * 1024));
  assert.deepEqual(run('gzip', ['-dc'], gz), INPUT);
  assert.deepEqual(gunzipSync(gz), INPUT);
  assert.equal(sha(gz), KNOWN_GZIP);
});

test('gzip: same bytes whatever the chunking and the number of threads', async () => {
  const ref = await compress('gzip', INPUT, 65536);
  for (const [chunk, threads] of [
    [1000, 1],
    [256 * 1024, 2],
    [3_000_000, 3],
    [77_777, 4],
  ] as const) {
    assert.equal(sha(await compress('gzip', INPUT, chunk, { threads })), sha(ref), `chunk ${chunk}, ${threads} threads`);
  }
});

/** Incompressible bytes (a hash chain) between text: deflate emits stored blocks here. */
function mixed(size: number): Buffer {
  const out = Buffer.alloc(size);
  let h = createHash('sha256').update('seed').digest();
  for (let o = 0; o < size; o += 32) {
    if ((o >> 16) % 3 === 1) out.write('text that compresses well, ', o, 'latin1');
    else h.copy(out, o);
    h = createHash('sha256').update(h).digest();
  }
  return out;
}

test('gzip: incompressible data (stored blocks) and large inputs decompress exactly', async () => {
  // Regression: chaining blocks through fflate's sync flush (before libdeflate) once
  // corrupted such data.
  const data = mixed(3 * 1024 * 1024 + 12345);
  for (const threads of [1, 2]) {
    const gz = await compress('gzip', data, 100_000, { threads });
    assert.deepEqual(run('gzip', ['-dc'], gz), data, `${threads} threads`);
    assert.deepEqual(gunzipSync(gz), data);
  }
});

test('gzip: empty input and exact multiples of the block size', async () => {
  for (const data of [Buffer.alloc(0), pseudoText(512 * 1024, 3), Buffer.alloc(10)]) {
    const gz = await compress('gzip', data, 4096);
    assert.deepEqual(run('gzip', ['-dc'], gz), data, `${data.length} bytes`);
  }
});

test('zstd: frame without content size, with checksum; readable by zstd', async () => {
  const zst = await compress('zstd', INPUT, 65536);
  assert.equal(zst.readUInt32LE(0), 0xfd2fb528, 'zstd magic');
  const fhd = zst[4]!; // RFC 8878 §3.1.1.1.1 Frame_Header_Descriptor
  assert.equal(fhd & 0xc0, 0, 'Frame_Content_Size_flag 0');
  assert.equal(fhd & 0x20, 0, 'not Single_Segment (which would carry the size)');
  assert.equal(fhd & 0x04, 0x04, 'Content_Checksum_flag');
  assert.equal(fhd & 0x03, 0, 'no Dictionary_ID');
  assert.deepEqual(run('zstd', ['-dc'], zst), INPUT);
  assert.equal(sha(zst), KNOWN_ZSTD);
});

test('zstd: same bytes whatever the chunking, and for any libzstd worker count ≥ 1', async () => {
  // Large enough for several multi-threaded jobs (level 3: 2 MiB window, 8 MiB jobs).
  const big = pseudoText(24_000_000, 9);
  const ref = sha(await compress('zstd', big, 65536));
  for (const chunk of [1000, 5_000_000]) assert.equal(sha(await compress('zstd', big, chunk)), ref, `chunk ${chunk}`);
  for (const nbWorkers of [1, 4]) {
    const raw = new CompressStream({ compressionLevel: ZSTD_LEVEL, checksumFlag: true, contentSizeFlag: false, dictIDFlag: false, nbWorkers });
    const out: Buffer[] = [];
    const parts: Buffer[] = [];
    for (let i = 0; i < big.length; i += 131072) parts.push(big.subarray(i, i + 131072));
    for await (const c of Readable.from(parts).pipe(raw)) out.push(c as Buffer);
    assert.equal(sha(Buffer.concat(out)), ref, `nbWorkers ${nbWorkers} vs ${ZSTD_WORKERS}`);
  }
  assert.equal(sha(run('zstd', ['-dc'], await compress('zstd', big, 1 << 20))), sha(big));
});

test('zstd: empty input', async () => {
  const zst = await compress('zstd', Buffer.alloc(0), 1);
  assert.deepEqual(run('zstd', ['-dc'], zst), Buffer.alloc(0));
});

test('none: identity', async () => {
  assert.deepEqual(await compress('none', INPUT, 9999), INPUT);
});
