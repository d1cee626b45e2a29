// The layer tar writer, judged by tar-stream reading it back and by GNU tar extracting
// it as root (then lstat and getfattr on the result), plus known digests that pin the
// bytes of the tar, gzip and zstd outputs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstat, readFile, readdir, readlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { extract, type Header } from 'tar-stream';
import { OcibuildError } from '../../src/errors.js';
import type { LayerEntry } from '../../src/layer/entry.js';
import { sortKey } from '../../src/layer/entry.js';
import { compressor, type Compression } from '../../src/layer/compress.js';
import { encodeHeaders, writeTar } from '../../src/layer/tar-writer.js';
import { writeLayer } from '../../src/layer/write-layer.js';
import { Store } from '../../src/store/store.js';
import { scratchDirs } from '../support/scratch.js';

const scratch = await scratchDirs('layer-tar');
const EPOCH = 1_700_000_000;
const OLD = 1_600_000_000;
const NEW = 1_800_000_000;
const sha = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Deterministic text-like bytes (an LCG picking words): compressible, not trivial. */
function pseudoText(n: number, seed: number): Buffer {
  const words = ['layer', 'tar', 'oci', 'deb', 'usr', 'lib', 'python3', '\n', 'zstd', 'gzip', '0x1f8b', 'Depends:'];
  const out = Buffer.alloc(n);
  let x = seed >>> 0;
  let o = 0;
  while (o < n) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    o += out.write(`${words[x % words.length]} `, o);
  }
  return out;
}

/** Chunks of an awkward size, so the writer sees content in pieces. */
function chunked(data: Buffer, size = 7001): () => Readable {
  return () => {
    const parts: Buffer[] = [];
    for (let i = 0; i < data.length; i += size) parts.push(data.subarray(i, i + size));
    return Readable.from(parts);
  };
}

const base = { uid: 0, gid: 0, mtime: OLD };
const dir = (path: string, extra: Partial<LayerEntry> = {}): LayerEntry =>
  ({ type: 'directory', path, mode: 0o755, ...base, ...extra }) as LayerEntry;
const file = (path: string, data: Buffer, extra: Partial<LayerEntry> = {}): LayerEntry =>
  ({ type: 'file', path, mode: 0o644, ...base, size: data.length, content: chunked(data), ...extra }) as LayerEntry;
const symlink = (path: string, target: string): LayerEntry => ({ type: 'symlink', path, target, mode: 0o777, ...base });

// cap_net_raw+ep as a VFS_CAP_REVISION_2 security.capability value (linux/capability.h).
const CAP_NET_RAW = Buffer.from('0100000200200000000000000000000000000000', 'hex');
const LONG_DIR = `deep/${'d'.repeat(90)}`;
const LONG_FILE = `${LONG_DIR}/${'f'.repeat(40)}`; // 136 bytes: ustar prefix + name
const LONG_NAME = `deep/${'n'.repeat(120)}`; // a 120-byte component: PAX path
const LONG_TARGET = `../${'t'.repeat(150)}`;
const EDGE_XATTR = Buffer.from('e'.repeat(73)); // its PAX record is 101 bytes: the length rolls to 3 digits
const BIG = pseudoText(600_000, 7); // over 256 KiB: a stream the writer reads when reached, not ahead

function fixture(): LayerEntry[] {
  return [
    dir('bin'),
    file('bin/su', pseudoText(3000, 1), { mode: 0o4755 }),
    file('bin/wall', pseudoText(512, 2), { mode: 0o2755, gid: 5 }),
    file('bin/ping', pseudoText(1000, 3), { mode: 0o755, xattrs: { 'security.capability': CAP_NET_RAW } }),
    file('bin/python3.11', BIG, { mode: 0o755, mtime: NEW }),
    // declared as links to python3.11, but 'bin/python3' sorts first: it gets the bytes
    { type: 'hardlink', path: 'bin/python3', target: 'bin/python3.11', mode: 0, uid: 0, gid: 0, mtime: 0 },
    { type: 'hardlink', path: 'bin/z-python', target: 'bin/python3', mode: 0, uid: 0, gid: 0, mtime: 0 },
    dir('empty', { mode: 0o700, uid: 1000, gid: 1000 }),
    dir('tmp', { mode: 0o1777, mtime: NEW }),
    dir('etc', {
      xattrs: {
        'user.foo': Buffer.from('dir-value'),
        'trusted.overlay.opaque': Buffer.from('y'),
        'user.overlay.origin': Buffer.from('x'),
        'security.selinux': Buffer.from('system_u:object_r:etc_t:s0'),
      },
    }),
    file('etc/foo.conf', Buffer.from('foo=1\n'), {
      mtime: OLD + 0.75,
      xattrs: { 'user.foo': Buffer.from([0, 1, 2, 255]), 'user.edge': EDGE_XATTR },
    }),
    file('etc/.wh.removed', Buffer.alloc(0)),
    file('etc/empty', Buffer.alloc(0), { uid: 3_000_000, gid: 3_000_001 }),
    file('etc/caf\u00e9', Buffer.from('unicode name\n')),
    { type: 'char', path: 'etc/gone', devmajor: 0, devminor: 0, mode: 0, ...base },
    { type: 'char', path: 'etc/null', devmajor: 1, devminor: 3, mode: 0o666, ...base },
    { type: 'block', path: 'etc/loop0', devmajor: 7, devminor: 0, mode: 0o660, uid: 0, gid: 6, mtime: OLD },
    { type: 'fifo', path: 'etc/initctl', devmajor: 0, devminor: 0, mode: 0o600, ...base },
    dir('farm'),
    symlink('farm/su', '../bin/su'),
    symlink('farm/su2', 'su'),
    symlink('farm/passwd', '/etc/passwd'),
    symlink('farm/dangling', 'nowhere'),
    symlink('farm/long', LONG_TARGET),
    dir('farm.d'),
    file('farm.d/x', Buffer.from('x')),
    dir('deep'),
    dir(LONG_DIR),
    file(LONG_FILE, pseudoText(2000, 4)),
    file(LONG_NAME, pseudoText(100, 5)),
  ];
}

async function collect(r: AsyncIterable<unknown>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

interface ReadBack {
  header: Header;
  /** tar-stream decodes PAX values as UTF-8 strings. */
  pax: Record<string, string> | undefined;
  data: Buffer;
}

async function readTar(tar: Buffer): Promise<ReadBack[]> {
  const ex = extract();
  Readable.from([tar]).pipe(ex);
  const out: ReadBack[] = [];
  for await (const e of ex) {
    const pax = (e.header.pax ?? undefined) as Record<string, string> | undefined;
    out.push({ header: e.header, pax, data: await collect(e) });
  }
  return out;
}

/** Runs a judge; a missing tool fails the test. */
function run(cmd: string, args: string[], input?: Buffer): Buffer {
  const r = spawnSync(cmd, args, { input, maxBuffer: 1 << 28 });
  if (r.error) throw new Error(`${cmd} could not run (install it: see the report): ${r.error.message}`);
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed: ${r.stderr.toString()}`);
  return r.stdout;
}

// The order the writer promises: sortKey, parents first; directories with '/'.
function expectedNames(entries: LayerEntry[]): string[] {
  return [...entries]
    .sort((a, b) => Buffer.compare(sortKey(a.path), sortKey(b.path)))
    .map((e) => (e.type === 'directory' ? `${e.path}/` : e.path));
}

test('fixture read back with tar-stream: order, types, modes, ids, names, mtimes, xattrs, contents', async () => {
  const entries = fixture();
  const tar = await collect(writeTar(entries, { sourceDateEpoch: EPOCH }));
  assert.equal(tar.length % 512, 0);
  assert.ok(tar.subarray(-1024).every((b) => b === 0), 'ends with two zero blocks');
  const got = await readTar(tar);
  assert.deepEqual(
    got.map((g) => g.header.name),
    expectedNames(entries),
  );
  const by = new Map(got.map((g) => [g.header.name.replace(/\/$/, ''), g]));
  for (const g of got) {
    assert.equal(g.header.uname, '', `${g.header.name} uname`);
    assert.equal(g.header.gname, '', `${g.header.name} gname`);
  }
  const h = (p: string): Header => by.get(p)!.header;
  const pax = (p: string): Record<string, string> | undefined => by.get(p)!.pax;
  assert.equal(h('bin/su').mode, 0o4755);
  assert.equal(h('bin/wall').mode, 0o2755);
  assert.equal(h('bin/wall').gid, 5);
  assert.equal(h('tmp').mode, 0o1777);
  assert.equal(h('tmp').type, 'directory');
  assert.equal(h('empty').uid, 1000);
  // hard links: the first path in layer order carries the content
  assert.equal(h('bin/python3').type, 'file');
  assert.deepEqual(by.get('bin/python3')!.data, BIG);
  assert.equal(h('bin/python3.11').type, 'link');
  assert.equal(h('bin/python3.11').linkname, 'bin/python3');
  assert.equal(h('bin/z-python').type, 'link');
  assert.equal(h('bin/z-python').linkname, 'bin/python3');
  assert.equal(h('bin/z-python').mode, 0o755, 'links carry the inode metadata');
  // mtimes: clamped above the epoch, kept (floored) below
  assert.equal(h('bin/python3').mtime.getTime() / 1000, EPOCH);
  assert.equal(h('tmp').mtime.getTime() / 1000, EPOCH);
  assert.equal(h('bin/su').mtime.getTime() / 1000, OLD);
  assert.equal(h('etc/foo.conf').mtime.getTime() / 1000, OLD);
  // symlinks, devices
  assert.equal(h('farm/su2').type, 'symlink');
  assert.equal(h('farm/su2').linkname, 'su');
  assert.equal(h('farm/long').linkname, LONG_TARGET);
  assert.equal(h('etc/gone').type, 'character-device');
  assert.equal(h('etc/gone').devmajor, 0);
  assert.equal(h('etc/null').devminor, 3);
  assert.equal(h('etc/loop0').type, 'block-device');
  assert.equal(h('etc/loop0').devmajor, 7);
  assert.equal(h('etc/initctl').type, 'fifo');
  // long names, non-ASCII, big ids
  assert.ok(by.has(LONG_FILE) && by.has(LONG_NAME) && by.has('etc/caf\u00e9'));
  assert.equal(pax(LONG_FILE), undefined, 'ustar prefix/name split, no PAX');
  assert.equal(pax(LONG_NAME)?.path, LONG_NAME);
  assert.equal(pax('etc/empty')?.uid, '3000000');
  assert.equal(pax('etc/empty')?.gid, '3000001');
  // xattrs: kept and dropped
  assert.equal(pax('etc')?.['SCHILY.xattr.user.foo'], 'dir-value');
  assert.deepEqual(Object.keys(pax('etc') ?? {}), ['SCHILY.xattr.user.foo']);
  assert.ok(pax('bin/ping')?.['SCHILY.xattr.security.capability'] !== undefined);
  assert.equal(pax('etc/foo.conf')?.['SCHILY.xattr.user.edge'], EDGE_XATTR.toString());
  // contents
  for (const e of entries) {
    if (e.type !== 'file' || e.path === 'bin/python3.11') continue;
    assert.deepEqual(by.get(e.path)!.data, await collect(e.content()), e.path);
  }
  // PAX header names are stable and carry no pid or time
  const paxNames = [...tar.toString('latin1').matchAll(/PaxHeaders\/[^\0]{0,89}/g)].map((m) => m[0]);
  assert.ok(paxNames.length > 0);
  for (const n of paxNames) assert.doesNotMatch(n, /\d{3,}/, n);
});

test('GNU tar extracts the fixture as root with every property intact', async () => {
  const entries = fixture();
  const work = await scratch('gnu');
  const tarPath = join(work, 'layer.tar');
  await writeFile(tarPath, await collect(writeTar(entries, { sourceDateEpoch: EPOCH })));

  const listed = run('tar', ['-tf', tarPath]).toString().split('\n').filter(Boolean);
  assert.deepEqual(listed, expectedNames(entries));
  const verbose = run('tar', ['--numeric-owner', '-tvf', tarPath]).toString();
  assert.doesNotMatch(verbose, /root|daemon/, 'numeric ids only');

  const root = join(work, 'root');
  run('mkdir', [root]);
  run('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-xpf', tarPath, '-C', root]);

  for (const e of entries) {
    const p = join(root, e.path);
    const st = await lstat(p);
    const linked = e.type === 'hardlink' ? entries.find((x) => x.path === 'bin/python3.11')! : e;
    const mtime = Math.min(Math.floor(linked.mtime), EPOCH);
    assert.equal(st.mtimeMs / 1000, mtime, `${e.path} mtime`);
    if (e.type !== 'symlink') assert.equal(st.mode & 0o7777, linked.mode & 0o7777, `${e.path} mode`);
    assert.equal(st.uid, linked.uid, `${e.path} uid`);
    assert.equal(st.gid, linked.gid, `${e.path} gid`);
    switch (e.type) {
      case 'directory':
        assert.ok(st.isDirectory(), e.path);
        break;
      case 'file':
        assert.ok(st.isFile(), e.path);
        assert.deepEqual(await readFile(p), await collect(e.content()), e.path);
        break;
      case 'hardlink':
        assert.equal(st.ino, (await lstat(join(root, 'bin/python3.11'))).ino, `${e.path} shares the inode`);
        assert.equal(st.nlink, 3);
        break;
      case 'symlink':
        assert.ok(st.isSymbolicLink(), e.path);
        assert.equal(await readlink(p), e.target);
        break;
      case 'char':
      case 'block':
        assert.ok(e.type === 'char' ? st.isCharacterDevice() : st.isBlockDevice(), e.path);
        assert.equal((st.rdev >> 8) & 0xfff, e.devmajor, `${e.path} major`);
        assert.equal(st.rdev & 0xff, e.devminor, `${e.path} minor`);
        break;
      case 'fifo':
        assert.ok(st.isFIFO(), e.path);
        break;
    }
  }
  assert.deepEqual(await readdir(join(root, 'empty')), []);

  const xattrs = (p: string): Record<string, string> => {
    const out: Record<string, string> = {};
    const text = run('getfattr', ['--absolute-names', '-d', '-m', '-', '-e', 'hex', join(root, p)]).toString();
    for (const line of text.split('\n')) {
      const m = /^([^#=][^=]*)=0x([0-9a-f]*)$/.exec(line);
      if (m) out[m[1]!] = m[2]!;
    }
    return out;
  };
  assert.deepEqual(xattrs('bin/ping'), { 'security.capability': CAP_NET_RAW.toString('hex') });
  assert.deepEqual(xattrs('etc'), { 'user.foo': Buffer.from('dir-value').toString('hex') });
  assert.deepEqual(xattrs('etc/foo.conf'), { 'user.edge': EDGE_XATTR.toString('hex'), 'user.foo': '000102ff' });

  // GNU tar's own --sort=name over the extracted tree gives the writer's order.
  const again = run('tar', ['--sort=name', '-C', root, '-cf', '-', '.']);
  const names = run('tar', ['-tf', '-'], again)
    .toString()
    .split('\n')
    .filter((n) => n && n !== './')
    .map((n) => n.replace(/^\.\//, ''));
  assert.deepEqual(names, expectedNames(entries));
});

// Pinned bytes: any change in the tar layout or in the compressors' output (another
// libdeflate or libzstd, another level, another machine) changes these and fails here.
const KNOWN = {
  tar: 'sha256:1d07ece8c9b05cea3b818f4b3d2611ec7dd8495a3335a42faf15978c81f9d708',
  gzip: 'sha256:0d2e94024adc5b91acd1ed90b1edf004532ca9a5a044a2bf2688bd3852afec3c',
  zstd: 'sha256:78d6c89e80c117f69e553d4abf1f1c29865c2219e8b14a8b53e47e46c6d582fa',
};

test('known digests for the fixture: tar, gzip, zstd', async () => {
  const tar = await collect(writeTar(fixture(), { sourceDateEpoch: EPOCH }));
  const gz = await collect(Readable.from([tar]).pipe(compressor('gzip')));
  const zst = await collect(Readable.from([tar]).pipe(compressor('zstd')));
  assert.deepEqual({ tar: sha(tar), gzip: sha(gz), zstd: sha(zst) }, KNOWN);
});

test('entries in any order give the same bytes', async () => {
  const ref = sha(await collect(writeTar(fixture(), { sourceDateEpoch: EPOCH })));
  let x = 12345;
  for (let round = 0; round < 4; round++) {
    const shuffled = fixture();
    for (let i = shuffled.length - 1; i > 0; i--) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      const j = x % (i + 1);
      [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
    }
    async function* asAsync(): AsyncGenerator<LayerEntry> {
      yield* shuffled;
    }
    const src = round % 2 === 0 ? shuffled : asAsync();
    assert.equal(sha(await collect(writeTar(src, { sourceDateEpoch: EPOCH }))), ref, `round ${round}`);
  }
  // Which path the caller called "the file" of a hard-link group does not matter.
  const swapped = fixture().map((e): LayerEntry => {
    if (e.path === 'bin/python3.11') return { type: 'hardlink', path: e.path, target: 'bin/z-python', mode: 0, uid: 0, gid: 0, mtime: 0 };
    if (e.path === 'bin/z-python') return file('bin/z-python', BIG, { mode: 0o755, mtime: NEW });
    if (e.path === 'bin/python3') return { type: 'hardlink', path: e.path, target: 'bin/python3.11', mode: 0, uid: 0, gid: 0, mtime: 0 };
    return e;
  });
  assert.equal(sha(await collect(writeTar(swapped, { sourceDateEpoch: EPOCH }))), ref);
});

test('writeLayer: diffId, digest, size and media type match the stored blob and its decompression', async () => {
  const store = new Store(await scratch('store'));
  const tar = await collect(writeTar(fixture(), { sourceDateEpoch: EPOCH }));
  const decompress: Record<Compression, (b: Buffer) => Buffer> = {
    none: (b) => b,
    gzip: (b) => gunzipSync(b),
    zstd: (b) => run('zstd', ['-dc'], b),
  };
  const mediaTypes: Record<Compression, string> = {
    none: 'application/vnd.oci.image.layer.v1.tar',
    gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
    zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  };
  for (const compression of ['gzip', 'zstd', 'none'] as const) {
    const layer = await writeLayer(fixture(), { store, compression, sourceDateEpoch: EPOCH });
    const blob = await store.readBlob(layer.digest);
    assert.equal(layer.digest, sha(blob), compression);
    assert.equal(layer.size, blob.length, compression);
    assert.equal(layer.diffId, sha(decompress[compression](blob)), compression);
    assert.equal(layer.diffId, sha(tar), compression);
    assert.equal(layer.mediaType, mediaTypes[compression]);
    if (compression === 'none') assert.equal(layer.digest, layer.diffId);
  }
  assert.deepEqual(await readdir(join(store.root, 'tmp')), [], 'no temp files left');
});

test('writeLayer: a file that changes size fails with an OcibuildError and stores nothing', async () => {
  const store = new Store(await scratch('store-bad'));
  const entries = [dir('etc'), { ...file('etc/x', Buffer.from('12345')), size: 9 } as LayerEntry];
  await assert.rejects(writeLayer(entries, { store, compression: 'gzip', sourceDateEpoch: EPOCH }), (err: unknown) => {
    assert.ok(err instanceof OcibuildError);
    assert.match(err.message, /etc\/x: expected 9 bytes, read 5/);
    return true;
  });
  const longer = [dir('etc'), { ...file('etc/x', pseudoText(400_000, 9)), size: 10 } as LayerEntry];
  await assert.rejects(writeLayer(longer, { store, compression: 'zstd', sourceDateEpoch: EPOCH }), OcibuildError);
  assert.deepEqual(await readdir(join(store.root, 'tmp')), []);
  await assert.rejects(readdir(join(store.root, 'blobs')), { code: 'ENOENT' });
});

test('writeLayer honours an AbortSignal', async () => {
  const store = new Store(await scratch('store-abort'));
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(writeLayer(fixture(), { store, compression: 'gzip', sourceDateEpoch: EPOCH, signal: ac.signal }), {
    name: 'AbortError',
  });
});

test('caller bugs are errors: duplicates, missing or non-directory parents, bad paths, link cycles', async () => {
  const bad: Array<[string, LayerEntry[], RegExp]> = [
    ['duplicate', [dir('a'), dir('a')], /"a" given twice/],
    ['missing parent', [file('a/b', Buffer.from('x'))], /parent directory "a" missing/],
    ['parent is a symlink', [symlink('a', 'x'), file('a/b', Buffer.from('x'))], /parent "a" is a symlink/],
    ['leading slash', [dir('/a')], /absolute path/],
    ['dot-dot', [dir('a'), dir('a/..')], /'\.\.' path component/],
    ['trailing slash', [dir('a/')], /trailing slash/],
    ['dangling hard link', [{ type: 'hardlink', path: 'l', target: 'nope', mode: 0, ...base }], /not in the layer/],
    ['hard link to a directory', [dir('d'), { type: 'hardlink', path: 'l', target: 'd', mode: 0, ...base }], /points to directory/],
    [
      'hard link cycle',
      [
        { type: 'hardlink', path: 'l1', target: 'l2', mode: 0, ...base },
        { type: 'hardlink', path: 'l2', target: 'l1', mode: 0, ...base },
      ],
      /cycle/,
    ],
  ];
  for (const [what, entries, re] of bad) {
    await assert.rejects(collect(writeTar(entries, { sourceDateEpoch: EPOCH })), re, what);
  }
});

test('encodeHeaders: ustar layout and checksum (POSIX.1 ustar)', () => {
  const h = encodeHeaders({
    name: 'usr/bin/hello',
    typeflag: '0',
    mode: 0o104755, // type bits from st_mode are dropped
    uid: 0,
    gid: 0,
    size: 5,
    mtime: 1234,
    linkname: '',
    devmajor: 0,
    devminor: 0,
    xattrs: [],
  });
  assert.equal(h.length, 512);
  const field = (off: number, len: number): string => h.subarray(off, off + len).toString('latin1');
  assert.equal(field(0, 14), 'usr/bin/hello\0');
  assert.equal(field(100, 8), '0004755\0');
  assert.equal(field(124, 12), '00000000005\0');
  assert.equal(field(136, 12), '00000002322\0');
  assert.equal(field(257, 8), 'ustar\x0000');
  assert.equal(field(265, 64), '\0'.repeat(64), 'empty uname and gname');
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
  assert.equal(field(148, 8), `${sum.toString(8).padStart(6, '0')}\0 `);
});

test('gzip layer is readable by node:zlib and GNU gzip alike', async () => {
  const tar = await collect(writeTar(fixture(), { sourceDateEpoch: EPOCH }));
  const gz = await collect(Readable.from([tar]).pipe(compressor('gzip')));
  assert.deepEqual(run('gzip', ['-dc'], gz), tar);
  assert.deepEqual(gunzipSync(gz), tar);
});
