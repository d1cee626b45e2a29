// Content sources: `fileContent` (read by the tar packer's worker thread, in batches
// and pieces) and `bytesContent` give the same tar bytes as a plain stream per file, and a
// file that changed or vanished is reported, whichever piece notices it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { appendFile, mkdir, readdir, readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { extract } from 'tar-stream';
import { OcibuildError } from '../../src/errors.js';
import { bytesContent, fileContent, type Content } from '../../src/layer/content.js';
import type { LayerEntry } from '../../src/layer/entry.js';
import { FILE_PIECE, TarPacker } from '../../src/layer/tar-packer.js';
import { writeTar } from '../../src/layer/tar-writer.js';
import { writeLayer } from '../../src/layer/write-layer.js';
import { Store } from '../../src/store/store.js';
import { scratchDirs } from '../support/scratch.js';

const scratch = await scratchDirs('layer-content');
const EPOCH = 1_700_000_000;
const MiB = 1024 * 1024;
const sha = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Deterministic bytes: a sha256 chain, so that every piece of a big file differs. */
function bytes(n: number, seed: string): Buffer {
  const out = Buffer.alloc(n);
  let h = createHash('sha256').update(seed).digest();
  for (let o = 0; o < n; o += 32) {
    h.copy(out, o);
    h = createHash('sha256').update(h).digest();
  }
  return out;
}

async function collect(r: AsyncIterable<unknown>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

type Kind = 'stream' | 'file' | 'bytes';

/**
 * Sizes around the writer's boundaries: empty, one byte, 512 (no padding), the read
 * piece (1 MiB) and the output chunk (256 KiB) ± 1, several pieces; then enough small
 * files to pass the read-ahead bounds (1 024 pieces, 8 MiB) many times over.
 */
const SIZES = [0, 1, 511, 512, 513, 256 * 1024 - 1, 256 * 1024 + 1, MiB - 1, MiB, MiB + 1, 2 * MiB + 12345, 3 * MiB];
const SMALL_FILES = 2500;

async function makeTree(): Promise<{ root: string; files: Array<{ path: string; data: Buffer }> }> {
  const root = await scratch('tree');
  const files: Array<{ path: string; data: Buffer }> = [];
  await mkdir(join(root, 'big'));
  for (const [i, size] of SIZES.entries()) files.push({ path: `big/f${String(i).padStart(2, '0')}-${size}`, data: bytes(size, `big${i}`) });
  await mkdir(join(root, 'small'));
  for (let i = 0; i < SMALL_FILES; i++) files.push({ path: `small/s${String(i).padStart(4, '0')}`, data: bytes((i * 7919) % 9000, `s${i}`) });
  files.push({ path: 'small/caf\u00e9 \u00fcml', data: Buffer.from('non-ASCII name\n') });
  for (const f of files) await writeFile(join(root, f.path), f.data);
  return { root, files };
}

function entries(root: string, files: Array<{ path: string; data: Buffer }>, kind: (i: number) => Kind): LayerEntry[] {
  const meta = { mode: 0o644, uid: 0, gid: 0, mtime: 1_600_000_000 };
  const out: LayerEntry[] = [
    { type: 'directory', path: 'big', ...meta, mode: 0o755 },
    { type: 'directory', path: 'small', ...meta, mode: 0o755 },
  ];
  for (const [i, f] of files.entries()) {
    const abs = join(root, f.path);
    const content: Content =
      kind(i) === 'file' ? fileContent(abs) : kind(i) === 'bytes' ? bytesContent(f.data) : () => createReadStream(abs);
    out.push({ type: 'file', path: f.path, ...meta, size: f.data.length, content });
  }
  return out;
}

const tree = makeTree();

test('fileContent, bytesContent and a stream per file give the same tar, mixed or not', async () => {
  const { root, files } = await tree;
  const kinds: Array<[string, (i: number) => Kind]> = [
    ['stream', () => 'stream'],
    ['file', () => 'file'],
    ['bytes', () => 'bytes'],
    ['mixed', (i) => (['file', 'stream', 'file', 'bytes'] as const)[i % 4]!],
  ];
  const digests = new Map<string, string>();
  for (const [name, kind] of kinds) {
    digests.set(name, sha(await collect(writeTar(entries(root, files, kind), { sourceDateEpoch: EPOCH }))));
  }
  assert.equal(new Set(digests.values()).size, 1, JSON.stringify(Object.fromEntries(digests)));

  // And the bytes are the files': read back with tar-stream.
  const tar = await collect(writeTar(entries(root, files, () => 'file'), { sourceDateEpoch: EPOCH }));
  const ex = extract();
  Readable.from([tar]).pipe(ex);
  const got = new Map<string, Buffer>();
  for await (const e of ex) got.set(e.header.name, await collect(e));
  for (const f of files) assert.ok(got.get(f.path)?.equals(f.data), f.path);
  assert.equal(got.size, files.length + 2);
});

test('fileContent: a file that grew, shrank or vanished is an error naming it', async () => {
  const dir = await scratch('changed');
  const meta = { mode: 0o644, uid: 0, gid: 0, mtime: 1 };
  const one = async (name: string, declared: number, actual: Buffer | undefined): Promise<unknown> => {
    const abs = join(dir, name);
    if (actual) await writeFile(abs, actual);
    const list: LayerEntry[] = [
      // A few files before it, so the read is batched with others.
      ...[0, 1, 2].map((i): LayerEntry => ({ type: 'file', path: `a${i}`, ...meta, size: 3, content: bytesContent(Buffer.from('abc')) })),
      { type: 'file', path: name, ...meta, size: declared, content: fileContent(abs) },
    ];
    return collect(writeTar(list, { sourceDateEpoch: EPOCH })).then(
      () => assert.fail(`${name}: no error`),
      (err: unknown) => err,
    );
  };
  const cases: Array<[string, number, Buffer, RegExp]> = [
    ['grew', 5, Buffer.from('123456'), /grew: expected 5 bytes, read more/],
    ['shrank', 9, Buffer.from('12345'), /shrank: expected 9 bytes, read 5/],
    ['grew-empty', 0, Buffer.from('x'), /grew-empty: expected 0 bytes, read more/],
    // Big files are read in 1 MiB pieces: the change shows in the first, a middle or the last one.
    ['big-shrank-first', 3 * MiB, bytes(1000, 'x'), /big-shrank-first: expected 3145728 bytes, read 1000/],
    ['big-shrank-middle', 3 * MiB, bytes(MiB + 7, 'x'), /big-shrank-middle: expected 3145728 bytes, read 1048583/],
    ['big-shrank-piece', 3 * MiB, bytes(2 * MiB, 'x'), /big-shrank-piece: expected 3145728 bytes, read 2097152/],
    ['big-grew', 2 * MiB, bytes(2 * MiB + 1, 'x'), /big-grew: expected 2097152 bytes, read more/],
  ];
  for (const [name, declared, actual, re] of cases) {
    const err = await one(name, declared, actual);
    assert.ok(err instanceof OcibuildError, `${name}: ${String(err)}`);
    assert.match(err.message, re);
    assert.equal(err.where, name);
  }
  const gone = (await one('gone', 10, undefined)) as NodeJS.ErrnoException;
  assert.equal(gone.code, 'ENOENT');
  assert.equal(gone.path, join(dir, 'gone'));
  assert.match(gone.message, /ENOENT/);
});

test('bytesContent of the wrong size is an error', async () => {
  const list: LayerEntry[] = [{ type: 'file', path: 'x', mode: 0o644, uid: 0, gid: 0, mtime: 1, size: 4, content: bytesContent(Buffer.from('abc')) }];
  await assert.rejects(collect(writeTar(list, { sourceDateEpoch: EPOCH })), /x: expected 4 bytes, read 3/);
});

test('writeLayer from fileContent entries: a file that changed stores nothing; the stream stops early', async () => {
  const { root, files } = await tree;
  const store = new Store(await scratch('store'));
  const list = entries(root, files, () => 'file');
  const good = await writeLayer(list, { store, compression: 'gzip', sourceDateEpoch: EPOCH });
  const ref = sha(await collect(writeTar(entries(root, files, () => 'stream'), { sourceDateEpoch: EPOCH })));
  assert.equal(good.diffId, ref);

  const dir = await scratch('changing');
  const small = join(dir, 'small');
  await writeFile(small, 'abc');
  const bad: LayerEntry[] = [
    ...list,
    { type: 'directory', path: 'z', mode: 0o755, uid: 0, gid: 0, mtime: 1 },
    { type: 'file', path: 'z/small', mode: 0o644, uid: 0, gid: 0, mtime: 1, size: 3, content: fileContent(small) },
  ];
  await appendFile(small, 'd');
  await assert.rejects(writeLayer(bad, { store, compression: 'zstd', sourceDateEpoch: EPOCH }), /z\/small: expected 3 bytes, read more/);
  await truncate(small, 3);
  assert.deepEqual(await readdir(join(store.root, 'tmp')), []);

  // A consumer that stops after the first chunk: the reader must not keep the test
  // process alive (a leaked worker would hang this file's run).
  const stream = writeTar(list, { sourceDateEpoch: EPOCH });
  for await (const chunk of stream) {
    assert.ok((chunk as Buffer).length > 0);
    break;
  }
  assert.ok(stream.destroyed);
});

test('two layers written at once from one tree (one shared reader worker) give the same bytes', async () => {
  const { root, files } = await tree;
  const [a, b] = await Promise.all([
    collect(writeTar(entries(root, files, () => 'file'), { sourceDateEpoch: EPOCH })),
    collect(writeTar(entries(root, files, (i) => (i % 2 ? 'file' : 'bytes')), { sourceDateEpoch: EPOCH })),
  ]);
  assert.equal(sha(a), sha(b));
});

test('a tar stream dropped unfinished (neither read to the end nor destroyed) lets the process exit', async () => {
  const { root } = await tree;
  const dir = await scratch('dropped');
  const script = join(dir, 'dropped.mts');
  const src = (f: string): string => JSON.stringify(pathToFileURL(join(import.meta.dirname, '../../src/layer', f)).href);
  await writeFile(
    script,
    `import { walkTree } from ${src('tree.ts')};
import { writeTar } from ${src('tar-writer.ts')};
const s = writeTar(await walkTree(${JSON.stringify(root)}), { sourceDateEpoch: 1 });
s.once('data', (c) => {
  s.pause();
  console.log('first chunk', c.length > 0);
});
`,
  );
  // The timeout only keeps a regression from hanging the suite; a hang fails below.
  const r = spawnSync(process.execPath, ['--import', 'tsx', script], { cwd: join(import.meta.dirname, '../..'), timeout: 120_000 });
  assert.equal(r.signal, null, 'the process had to be killed: something kept it alive');
  assert.equal(r.status, 0, r.stderr.toString());
  assert.equal(r.stdout.toString().trim(), 'first chunk true');
});

test('TarPacker: literal bytes and file ranges in order, padding, fs errors with code and path', async () => {
  const dir = await scratch('packer');
  const data = bytes(FILE_PIECE * 2 + 100, 'p');
  const file = join(dir, 'f');
  await writeFile(file, data);
  const packer = new TarPacker();
  try {
    packer.literal(Buffer.from('head'));
    packer.file('member/f', file, data.length, 3);
    packer.literal(Buffer.from('tail'));
    packer.file('member/empty', file, 0, 0); // not empty on disk: the size check fails below
    const out = await collect(packer.flow(true)).catch((err: unknown) => err);
    assert.ok(out instanceof OcibuildError, String(out));
    assert.match(out.message, /member\/empty: expected 0 bytes, read more/);
  } finally {
    packer.close();
  }

  const ok = new TarPacker();
  try {
    ok.literal(Buffer.from('head'));
    ok.file('member/f', file, data.length, 3);
    ok.literal(Buffer.from('tail'));
    const out = await collect(ok.flow(true));
    assert.ok(out.equals(Buffer.concat([Buffer.from('head'), data, Buffer.alloc(3), Buffer.from('tail')])));
  } finally {
    ok.close();
  }

  const bad = new TarPacker();
  try {
    bad.file('member/dir', dir, 10, 0);
    const err = (await collect(bad.flow(true)).catch((e: unknown) => e)) as NodeJS.ErrnoException;
    assert.equal(err.code, 'EISDIR');
    assert.equal(err.path, dir);
  } finally {
    bad.close();
  }
  // Closed: nothing more is read.
  bad.file('member/f', file, data.length, 0);
  await assert.rejects(collect(bad.flow(true)), /closed/);
  assert.deepEqual(await readFile(file), data);
});
