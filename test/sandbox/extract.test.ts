// extractLayers: three stacked layers (gzip, zstd, plain) with whiteouts, opaque
// directories, replaced kinds, hard links, devices, setuid bits, owners and binary
// xattrs, judged by umoci unpacking the same layers; hostile layers that try to write
// outside the root; and what a failure leaves behind. As root.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, lstatSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { OcibuildError } from '../../src/errors.js';
import { bytesContent } from '../../src/layer/content.js';
import type { LayerEntry } from '../../src/layer/entry.js';
import type { Layer } from '../../src/oci/image.js';
import { extractLayers, extractTar } from '../../src/sandbox/extract.js';
import { lgetxattr } from '../../src/sandbox/native-fs.js';
import { scratchDirs } from '../support/scratch.js';
import { diffSnapshots, entriesTar, memoryLayer, rawTar, requireRoot, sh, snapshot, umociUnpack, type RawMember } from './support.js';

const scratch = await scratchDirs('extract');

/** security.capability v2: effective, permitted cap_setuid (7, a byte ≥ 0x80) + cap_net_raw (13). */
const CAPS = Buffer.from([0x01, 0, 0, 0x02, 0x80, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
const T = 1_650_000_000;

function dir(path: string, mode = 0o755, uid = 0, gid = 0, xattrs?: Record<string, Buffer>): LayerEntry {
  return { type: 'directory', path, mode, uid, gid, mtime: T, ...(xattrs ? { xattrs } : {}) };
}
function file(path: string, text: string, mode = 0o644, uid = 0, gid = 0, xattrs?: Record<string, Buffer>): LayerEntry {
  const bytes = Buffer.from(text);
  return { type: 'file', path, mode, uid, gid, mtime: T + 1, size: bytes.length, content: bytesContent(bytes), ...(xattrs ? { xattrs } : {}) };
}
function symlink(path: string, target: string): LayerEntry {
  return { type: 'symlink', path, target, mode: 0o777, uid: 0, gid: 0, mtime: T + 2 };
}
function hardlink(path: string, target: string): LayerEntry {
  return { type: 'hardlink', path, target, mode: 0, uid: 0, gid: 0, mtime: 0 };
}
const whiteout = (path: string): LayerEntry => file(path, '');

function stack(): LayerEntry[][] {
  const l1: LayerEntry[] = [
    dir('bin'),
    file('bin/tool', 'tool v1\n', 0o4755, 0, 0, { 'security.capability': CAPS }),
    hardlink('bin/tool-link', 'bin/tool'),
    dir('etc'),
    file('etc/conf', 'conf v1\n', 0o640, 1000, 1000, { 'user.note': Buffer.from('hello') }),
    dir('scratch', 0o1777),
    dir('shared', 0o2775, 0, 50, { 'user.dir': Buffer.from('d') }),
    file('shared/s1', 's1'),
    dir('data'),
    file('data/a', 'a'),
    dir('data/sub'),
    file('data/sub/b', 'b'),
    dir('gone'),
    file('gone/x', 'x'),
    dir('gone/deep'),
    file('gone/deep/y', 'y'),
    file('replaced', 'a file, then a directory'),
    dir('dir2link'),
    file('dir2link/f', 'f'),
    symlink('link', '../etc/conf'),
    dir('dev'),
    { type: 'char', path: 'dev/null', mode: 0o666, uid: 0, gid: 0, mtime: T, devmajor: 1, devminor: 3 },
    { type: 'block', path: 'dev/loop0', mode: 0o660, uid: 0, gid: 6, mtime: T, devmajor: 7, devminor: 0 },
    { type: 'fifo', path: 'dev/fifo', mode: 0o600, uid: 0, gid: 0, mtime: T, devmajor: 0, devminor: 0 },
    symlink('lib', 'usr/lib'),
    dir('usr'),
    dir('usr/lib'),
    file('usr/lib/libx.so', 'libx'),
    file('usr/lib/liby.so', 'liby'),
  ];
  const l2: LayerEntry[] = [
    dir('data', 0o750),
    // '-' sorts before '.', so this entry comes before the opaque marker: an opaque
    // directory keeps its own layer's entries whichever order they come in.
    file('data/-early', 'early'),
    whiteout('data/.wh..wh..opq'),
    file('data/new', 'new'),
    whiteout('.wh.gone'),
    dir('etc'),
    whiteout('etc/.wh.conf'),
    dir('replaced', 0o700),
    file('replaced/inner', 'inner'),
    symlink('dir2link', 'bin'),
    dir('bin'),
    // A new file over a hard-linked one: the link keeps the old inode and contents.
    file('bin/tool', 'tool v2\n', 0o755),
  ];
  const l3: LayerEntry[] = [
    dir('etc'),
    file('etc/conf', 'conf v3\n', 0o600, 0, 0),
    dir('data', 0o750),
    whiteout('data/.wh.new'),
    whiteout('.wh.dir2link'),
    dir('dir2link', 0o711),
    file('dir2link/again', 'again'),
    dir('shared', 0o2775, 0, 50),
    whiteout('shared/.wh..wh..opq'),
    dir('usr'),
    dir('usr/lib'),
    whiteout('usr/lib/.wh.libx.so'),
  ];
  return [l1, l2, l3];
}

/** The stack as gzip, zstd and plain layers (umoci 0.4 reads no zstd: `gzip` gives it gzip only). */
async function stackLayers(gzip = false): Promise<Layer[]> {
  const [l1, l2, l3] = stack();
  return [
    memoryLayer(await entriesTar(l1!), 'gzip'),
    memoryLayer(await entriesTar(l2!), gzip ? 'gzip' : 'zstd'),
    memoryLayer(await entriesTar(l3!), gzip ? 'gzip' : 'none'),
  ];
}

function tree(root: string): string[] {
  const out: string[] = [];
  const visit = (rel: string): void => {
    for (const name of readdirSync(rel ? join(root, rel) : root).sort()) {
      const p = rel ? `${rel}/${name}` : name;
      out.push(p);
      if (lstatSync(join(root, p)).isDirectory()) visit(p);
    }
  };
  visit('');
  return out;
}

test('three layers: whiteouts, opaque directories, replaced kinds; the same tree umoci unpacks', async () => {
  requireRoot();
  const work = await scratch('stack');
  const layers = await stackLayers();
  const root = join(work, 'rootfs');
  await extractLayers(layers, root);

  assert.deepEqual(tree(root), [
    'bin',
    'bin/tool',
    'bin/tool-link',
    'data',
    'data/-early',
    'dev',
    'dev/fifo',
    'dev/loop0',
    'dev/null',
    'dir2link',
    'dir2link/again',
    'etc',
    'etc/conf',
    'lib',
    'link',
    'replaced',
    'replaced/inner',
    'scratch',
    'shared',
    'usr',
    'usr/lib',
    'usr/lib/liby.so',
  ]);
  const st = (p: string) => lstatSync(join(root, p));
  assert.equal(readFileSync(join(root, 'bin/tool'), 'utf8'), 'tool v2\n');
  assert.equal(readFileSync(join(root, 'bin/tool-link'), 'utf8'), 'tool v1\n');
  assert.equal(st('bin/tool-link').mode & 0o7777, 0o4755);
  assert.deepEqual(lgetxattr(join(root, 'bin/tool-link'), 'security.capability'), CAPS);
  assert.equal(lgetxattr(join(root, 'bin/tool'), 'security.capability'), undefined);
  assert.equal(readFileSync(join(root, 'etc/conf'), 'utf8'), 'conf v3\n');
  assert.equal(lgetxattr(join(root, 'etc/conf'), 'user.note'), undefined, 'the recreated file has none of the old one’s xattrs');
  assert.equal(st('scratch').mode & 0o7777, 0o1777);
  assert.equal(st('shared').mode & 0o7777, 0o2775);
  assert.equal(st('shared').gid, 50);
  assert.equal(lgetxattr(join(root, 'shared'), 'user.dir'), undefined, 'a directory entry replaces the attributes');
  assert.equal(st('data').mode & 0o7777, 0o750);
  assert.equal(st('dir2link').mode & 0o7777, 0o711);
  assert.ok(st('dev/null').isCharacterDevice());
  assert.equal(st('dev/null').rdev, 0x103);
  assert.ok(st('dev/loop0').isBlockDevice());
  assert.ok(st('dev/fifo').isFIFO());
  assert.equal(st('etc/conf').mtime.getTime() / 1000, T + 1);
  assert.equal(st('usr/lib').mtime.getTime() / 1000, T, 'directory mtimes are set after their contents');
  assert.equal(statSync(root).mode & 0o777, 0o755);

  const ours = snapshot(root, { dirMtimes: true });
  const umoci = snapshot(await umociUnpack(await stackLayers(true), join(work, 'umoci')), { dirMtimes: true });
  assert.deepEqual(diffSnapshots(ours, umoci, ['ocibuild', 'umoci']), []);
  assert.ok(ours.get('bin/tool-link')?.includes('security.capability:01000002802'), 'the judge saw the binary capability too');
});

test('plain, gzip and zstd layers give the same tree; the diffId is checked', async () => {
  requireRoot();
  const work = await scratch('compression');
  const [l1] = stack();
  const raw = await entriesTar(l1!);
  const snaps = [];
  for (const c of ['none', 'gzip', 'zstd'] as const) {
    const out = join(work, c);
    await extractLayers([memoryLayer(raw, c)], out);
    snaps.push(snapshot(out));
  }
  assert.deepEqual(diffSnapshots(snaps[0]!, snaps[1]!), []);
  assert.deepEqual(diffSnapshots(snaps[0]!, snaps[2]!), []);

  const lying = { ...memoryLayer(raw, 'gzip'), diffId: `sha256:${'0'.repeat(64)}` };
  const out = join(work, 'lying');
  await assert.rejects(extractLayers([lying], out), (err: unknown) => {
    assert.ok(err instanceof OcibuildError);
    assert.equal(err.where, `layer ${lying.digest}`);
    assert.match(err.message, /not its diffId sha256:0000/);
    return true;
  });
  assert.deepEqual(leftovers(work, 'lying'), []);
});

/** What a failed extraction into `<work>/<name>` left: the tree or its temp sibling. */
function leftovers(work: string, name: string): string[] {
  return readdirSync(work).filter((n) => n === name || n.startsWith(`${name}.tmp-`));
}

interface Hostile {
  name: string;
  /** Layers bottom first; `outside` is an absolute path outside the root. */
  layers: (outside: string) => RawMember[][];
  /** The entry the error must name. */
  entry: string;
  reason: RegExp;
}

const HOSTILE: Hostile[] = [
  {
    name: 'a ../ name',
    layers: () => [[{ header: { name: 'ok/' , type: 'directory' } }, { header: { name: 'ok/../../escape' }, body: 'x' }]],
    entry: 'ok/../../escape',
    reason: /'\.\.' in/,
  },
  {
    name: 'a symlink to outside, then a file below it (same layer)',
    layers: (outside) => [[{ header: { name: 'link', type: 'symlink', linkname: outside } }, { header: { name: 'link/pwned' }, body: 'x' }]],
    entry: 'link/pwned',
    reason: /parent "link" is a symlink/,
  },
  {
    name: 'a relative symlink climbing out, planted by a lower layer',
    layers: () => [[{ header: { name: 'up', type: 'symlink', linkname: '../../../../../../../../..' } }], [{ header: { name: 'up/tmp/pwned' }, body: 'x' }]],
    entry: 'up/tmp/pwned',
    reason: /parent "up" is a symlink/,
  },
  {
    name: 'a directory symlink planted below, then a new directory through it',
    layers: (outside) => [[{ header: { name: 'a/', type: 'directory' } }, { header: { name: 'a/b', type: 'symlink', linkname: outside } }], [{ header: { name: 'a/b/c/', type: 'directory' } }]],
    entry: 'a/b/c/',
    reason: /parent "a\/b" is a symlink/,
  },
  {
    name: 'a hard link to a file outside by ..',
    layers: () => [[{ header: { name: 'passwd', type: 'link', linkname: '../../../../../../../../etc/passwd' } }]],
    entry: 'passwd',
    reason: /'\.\.' in/,
  },
  {
    name: 'a hard link to /etc/passwd (absolute: read under the root, where there is none)',
    layers: () => [[{ header: { name: 'passwd', type: 'link', linkname: '/etc/passwd' } }]],
    entry: 'passwd',
    reason: /target "\/etc\/passwd" does not exist/,
  },
  {
    name: 'a hard link through a symlinked directory to a file outside',
    layers: (outside) => [[{ header: { name: 'link', type: 'symlink', linkname: outside } }], [{ header: { name: 'stolen', type: 'link', linkname: 'link/keep' } }]],
    entry: 'stolen',
    reason: /parent "link" is a symlink/,
  },
  {
    name: 'a whiteout through a symlinked directory',
    layers: (outside) => [[{ header: { name: 'link', type: 'symlink', linkname: outside } }], [{ header: { name: 'link/.wh.keep' }, body: '' }]],
    entry: 'link/.wh.keep',
    reason: /parent "link" is a symlink/,
  },
  {
    name: 'an opaque marker through a symlinked directory',
    layers: (outside) => [[{ header: { name: 'link', type: 'symlink', linkname: outside } }], [{ header: { name: 'link/.wh..wh..opq' }, body: '' }]],
    entry: 'link/.wh..wh..opq',
    reason: /parent "link" is a symlink/,
  },
  {
    name: 'a whiteout of ..',
    layers: () => [[{ header: { name: 'd/', type: 'directory' } }, { header: { name: 'd/.wh...' }, body: '' }]],
    entry: 'd/.wh...',
    reason: /whiteout of "\.\."/,
  },
];

for (const h of HOSTILE) {
  test(`hostile layer refused: ${h.name}`, async () => {
    requireRoot();
    const work = await scratch('hostile');
    const outside = join(work, 'outside');
    await mkdir(outside);
    await writeFile(join(outside, 'keep'), 'precious');
    const passwdLinks = statSync('/etc/passwd').nlink;
    const layers: Layer[] = [];
    for (const members of h.layers(outside)) layers.push(memoryLayer(await rawTar(members)));
    const root = join(work, 'root');
    await assert.rejects(extractLayers(layers, root), (err: unknown) => {
      assert.ok(err instanceof OcibuildError, `an OcibuildError, got ${String(err)}`);
      assert.equal(err.where, `layer ${layers.at(-1)!.digest}`);
      assert.ok(err.message.includes(`entry ${JSON.stringify(h.entry)}`), err.message);
      assert.match(err.message, h.reason);
      return true;
    });
    assert.deepEqual(await readdir(outside), ['keep'], 'nothing was created outside');
    assert.equal(readFileSync(join(outside, 'keep'), 'utf8'), 'precious');
    assert.equal(statSync(join(outside, 'keep')).nlink, 1);
    assert.equal(statSync('/etc/passwd').nlink, passwdLinks);
    assert.ok(!existsSync('/tmp/pwned'));
    assert.deepEqual(leftovers(work, 'root'), [], 'no tree, finished or not');
  });
}

test('absolute names land under the root; a planted symlink is replaced, not written through', async () => {
  requireRoot();
  const work = await scratch('contained');
  const outside = join(work, 'outside');
  await mkdir(outside);
  await writeFile(join(outside, 'target'), 'precious');
  const l1 = memoryLayer(await rawTar([
    { header: { name: '/abs/', type: 'directory' } },
    { header: { name: '/abs/file' }, body: 'inside' },
    { header: { name: './dot/./file' }, body: 'dot' },
    { header: { name: 'f', type: 'symlink', linkname: join(outside, 'target') } },
    { header: { name: 'd', type: 'symlink', linkname: outside } },
  ]));
  const l2 = memoryLayer(await rawTar([
    { header: { name: 'f' }, body: 'replaced' },
    { header: { name: 'd/', type: 'directory' } },
    { header: { name: 'd/x' }, body: 'in a real directory now' },
  ]));
  const root = join(work, 'root');
  await extractLayers([l1, l2], root);
  assert.equal(readFileSync(join(root, 'abs/file'), 'utf8'), 'inside');
  assert.equal(readFileSync(join(root, 'dot/file'), 'utf8'), 'dot');
  assert.ok(lstatSync(join(root, 'f')).isFile());
  assert.equal(readFileSync(join(root, 'f'), 'utf8'), 'replaced');
  assert.ok(lstatSync(join(root, 'd')).isDirectory());
  assert.equal(readFileSync(join(outside, 'target'), 'utf8'), 'precious');
  assert.deepEqual(await readdir(outside), ['target']);
});

test('a truncated layer fails with the layer and leaves nothing', async () => {
  requireRoot();
  const work = await scratch('truncated');
  const raw = await entriesTar(stack()[0]!);
  const cut = memoryLayer(raw.subarray(0, 1024 + 100), 'gzip');
  await assert.rejects(extractLayers([cut], join(work, 'root')), (err: unknown) => {
    assert.ok(err instanceof OcibuildError);
    assert.equal(err.where, `layer ${cut.digest}`);
    assert.match(err.message, /truncated/);
    return true;
  });
  assert.deepEqual(leftovers(work, 'root'), []);
});

test('extractTar: a tar stream gives the tree extractLayers gives; a hostile one is refused, naming it, and leaves nothing', async () => {
  requireRoot();
  const work = await scratch('extract-tar');
  const raw = await entriesTar(stack()[0]!);
  await extractLayers([memoryLayer(raw, 'none')], join(work, 'from-layer'));
  await extractTar(Readable.from([raw]), join(work, 'from-tar'), 'a test tar');
  assert.deepEqual(tree(join(work, 'from-tar')), tree(join(work, 'from-layer')));

  const outside = join(work, 'outside');
  await mkdir(outside);
  const hostile = await rawTar([{ header: { name: 'link', type: 'symlink', linkname: outside } }, { header: { name: 'link/pwned' }, body: 'x' }]);
  await assert.rejects(extractTar(Readable.from([hostile]), join(work, 'root'), 'a test tar'), (err: unknown) => {
    assert.ok(err instanceof OcibuildError, String(err));
    assert.equal(err.where, 'a test tar');
    assert.match(err.message, /entry "link\/pwned".*parent "link" is a symlink/);
    return true;
  });
  assert.deepEqual(await readdir(outside), []);
  assert.deepEqual(leftovers(work, 'root'), []);
});

test('an abort stops between layers and leaves nothing', async () => {
  requireRoot();
  const work = await scratch('abort');
  const layers = await stackLayers();
  const ac = new AbortController();
  await assert.rejects(
    extractLayers(layers, join(work, 'root'), { signal: ac.signal, onLayer: (i) => i === 0 && ac.abort() }),
    { name: 'AbortError' },
  );
  assert.deepEqual(leftovers(work, 'root'), []);
});

test('layers written by GNU tar (gnu and posix formats: long names, binary xattrs) extract to the tree they came from', async () => {
  requireRoot();
  const work = await scratch('gnu-tar');
  const src = join(work, 'src');
  const long = `${'d'.repeat(120)}/${'e'.repeat(120)}`;
  sh('sh', ['-c', `set -e
    mkdir -p src/${long} src/bin
    echo long > src/${long}/${'f'.repeat(150)}
    ln -s ${'t'.repeat(200)} src/longlink
    echo cap > src/bin/ping && chmod 4755 src/bin/ping
    setcap cap_setuid,cap_net_raw+ep src/bin/ping
    setfattr -n user.x -v 'a b' src/bin/ping
    ln src/bin/ping src/bin/ping2
    mkfifo src/fifo
    chown -R 123:456 src/${'d'.repeat(120)}
    touch -h -d @1600000000 src/longlink
    find src -mindepth 1 -depth -exec touch -h -d @1600000001 {} +
  `], { cwd: work });
  for (const format of ['gnu', 'posix']) {
    const tarFile = join(work, `${format}.tar`);
    // GNU tar stores xattrs in pax records only.
    const xattrs = format === 'posix';
    sh('tar', [...(xattrs ? ['--xattrs', '--xattrs-include=*'] : []), `--format=${format}`, '-cf', tarFile, '-C', src, '.']);
    const out = join(work, `out-${format}`);
    await extractLayers([memoryLayer(readFileSync(tarFile), 'gzip')], out);
    const opts = { dirMtimes: true, xattrs };
    assert.deepEqual(diffSnapshots(snapshot(src, opts), snapshot(out, opts), ['source', format]), []);
  }
  assert.match(snapshot(src).get('bin/ping')!, /security\.capability:010000028020/);
});
