// upperToEntries against a real overlay mount: a RUN step's worth of shell commands in
// the merged dir, the upper dir turned into a layer by the project's writer, and the
// base + new layer applied by umoci and by extractLayers must both give the tree the
// merged view showed. Then the refusals (redirect, metacopy, `.wh.` names) on
// hand-made upper dirs. As root, with mount, setcap and setfattr.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { chmod, link, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { OcibuildError } from '../../src/errors.js';
import { bytesContent } from '../../src/layer/content.js';
import { sortKey, type LayerEntry } from '../../src/layer/entry.js';
import { writeLayer } from '../../src/layer/write-layer.js';
import { storeLayer, type Layer } from '../../src/oci/image.js';
import { extractLayers } from '../../src/sandbox/extract.js';
import { lsetxattr, mknod } from '../../src/sandbox/native-fs.js';
import { rootfsFor } from '../../src/sandbox/rootfs.js';
import { dirInTree, MOUNTED_DIRS, upperToEntries } from '../../src/sandbox/upper.js';
import { Store } from '../../src/store/store.js';
import { scratchDirs } from '../support/scratch.js';
import { diffSnapshots, requireRoot, sh, snapshot, umociUnpack } from './support.js';

const scratch = await scratchDirs('upper');
const T = 1_650_000_000;
const EPOCH = 4_000_000_000; // later than any mtime the test makes: nothing is clamped

function dir(path: string, mode = 0o755, uid = 0, gid = 0): LayerEntry {
  return { type: 'directory', path, mode, uid, gid, mtime: T };
}
function file(path: string, text: string, mode = 0o644, xattrs?: Record<string, Buffer>): LayerEntry {
  const bytes = Buffer.from(text);
  return { type: 'file', path, mode, uid: 0, gid: 0, mtime: T + 1, size: bytes.length, content: bytesContent(bytes), ...(xattrs ? { xattrs } : {}) };
}

const BASE: LayerEntry[] = [
  dir('etc'),
  file('etc/keep', 'keep'),
  file('etc/keep2', 'renamed by the step'),
  file('etc/modify', 'old\n'),
  file('etc/delete-me', 'bye'),
  file('etc/was-file', 'a file the step turns into a directory'),
  file('etc/attr', 'lower xattr', 0o644, { 'user.origin': Buffer.from('base') }),
  dir('var'),
  dir('var/lib'),
  dir('var/lib/gone'),
  file('var/lib/gone/a', 'a'),
  dir('var/lib/gone/sub'),
  file('var/lib/gone/sub/b', 'b'),
  dir('opt'),
  dir('opt/app'),
  file('opt/app/old1', 'old1'),
  dir('opt/app/sub'),
  file('opt/app/sub/deep', 'deep'),
  dir('usr'),
  dir('usr/bin'),
  file('usr/bin/ping', 'pretend ping', 0o755),
  file('usr/bin/su-like', 'pretend su', 0o755),
  dir('home'),
  dir('home/user', 0o750, 1000, 1000),
  dir('srv'),
  dir('srv/moved-dir'),
  file('srv/moved-dir/f', 'moved'),
  dir('tmp', 0o1777),
  dir('run'),
];

// What a RUN step does, as a shell script run in the merged dir.
const STEP = `
set -e
echo new > etc/new-file
echo changed >> etc/modify
rm etc/delete-me
rm etc/was-file && mkdir etc/was-file && echo in > etc/was-file/in
rm -rf var/lib/gone
rm -rf opt/app && mkdir opt/app && echo fresh > opt/app/fresh
mkdir -p srv/newdir/inner && echo x > srv/newdir/inner/x
ln etc/new-file etc/new-file-link
ln usr/bin/su-like usr/bin/su-like-link
setcap cap_net_raw+ep usr/bin/ping
setfattr -n user.note -v hello etc/new-file
setfattr -n user.more -v added etc/attr
chmod u+s usr/bin/su-like
chown 1000:1000 etc/new-file
ln -s ../../etc/new-file home/user/link-to-new
mkfifo home/user/fifo
mv srv/moved-dir srv/renamed
mv etc/keep2 etc/renamed-file
echo tmp > tmp/junk
mkdir run/lock && echo run > run/lock/junk
`;

for (const ns of ['trusted', 'user'] as const) {
  test(`a RUN step on an overlay (${ns === 'trusted' ? 'as root' : 'userxattr'} mount) becomes a layer: umoci and extractLayers give the merged view`, async () => {
    requireRoot();
    const r = spawnSync('setcap', ['-h'], { encoding: 'utf8' });
    assert.ok(!r.error, 'setcap is missing: apt-get install libcap2-bin');
    const work = await scratch(`overlay-${ns}`);
    const store = new Store(join(work, 'store'));
    const base = storeLayer(store, await writeLayer(BASE, { store, compression: 'gzip', sourceDateEpoch: EPOCH }));
    const lower = (await rootfsFor(store, [base])).path;

    const [upper, workdir, merged] = ['upper', 'work', 'merged'].map((d) => join(work, d)) as [string, string, string];
    for (const d of [upper, workdir, merged]) mkdirSync(d);
    // Kernel overlayfs.rst: redirect_dir and metacopy off, so the upper dir is
    // self-contained (userxattr implies both).
    const options = `lowerdir=${lower},upperdir=${upper},workdir=${workdir},${ns === 'user' ? 'userxattr' : 'redirect_dir=off,metacopy=off'}`;
    sh('mount', ['-t', 'overlay', 'overlay', '-o', options, merged]);
    let mergedView: Map<string, string>;
    try {
      sh('sh', ['-c', STEP], { cwd: merged });
      mergedView = snapshot(merged, { exclude: MOUNTED_DIRS, dirMtimes: true });
    } finally {
      sh('umount', [merged]);
    }

    const entries = await upperToEntries(upper, dirInTree(lower), { overlayXattrs: ns });
    const byPath = new Map(entries.map((e) => [e.path, e]));
    const paths = entries.map((e) => e.path);
    assert.deepEqual(paths, [...paths].sort((a, b) => Buffer.compare(sortKey(a), sortKey(b))), 'in layer order');
    for (const p of ['etc/.wh.delete-me', 'etc/.wh.keep2', 'var/lib/.wh.gone', 'srv/.wh.moved-dir', 'opt/app/.wh..wh..opq']) {
      assert.equal(byPath.get(p)?.type, 'file', `${p} is in the layer`);
    }
    assert.ok(!byPath.has('etc/was-file/.wh..wh..opq'), 'no opaque marker where no lower layer had a directory');
    assert.equal(byPath.get('etc/was-file')?.type, 'directory');
    assert.deepEqual(paths.filter((p) => MOUNTED_DIRS.includes(p.split('/')[0]!)), [], 'nothing under tmp or run');
    for (const e of entries) {
      const names = Object.keys((e as { xattrs?: Record<string, Buffer> }).xattrs ?? {});
      assert.deepEqual(names.filter((n) => n.includes('.overlay.')), [], `${e.path} carries no overlay xattr`);
    }
    const ping = byPath.get('usr/bin/ping') as Extract<LayerEntry, { type: 'file' }>;
    assert.equal(ping.xattrs?.['security.capability']?.subarray(0, 4).toString('hex'), '01000002', 'a v2 file capability');
    const su = [byPath.get('usr/bin/su-like')!, byPath.get('usr/bin/su-like-link')!].map((e) => e.type).sort();
    assert.deepEqual(su, ['file', 'hardlink']);
    assert.equal(byPath.get('etc/keep'), undefined, 'untouched lower files are not in the layer');

    const layer = storeLayer(store, await writeLayer(entries, { store, compression: 'gzip', sourceDateEpoch: EPOCH }));
    const layers: Layer[] = [base, layer];
    const ours = join(work, 'ours');
    await extractLayers(layers, ours);
    const ourView = snapshot(ours, { exclude: MOUNTED_DIRS, dirMtimes: true });
    const umociView = snapshot(await umociUnpack(layers, join(work, 'umoci')), { exclude: MOUNTED_DIRS, dirMtimes: true });

    assert.deepEqual(diffSnapshots(mergedView, umociView, ['merged', 'umoci']), []);
    assert.deepEqual(diffSnapshots(mergedView, ourView, ['merged', 'extractLayers']), []);
    // The comparison saw what matters.
    assert.match(mergedView.get('usr/bin/ping')!, /security\.capability:01000002/);
    assert.match(mergedView.get('etc/new-file')!, /owner=1000:1000 .*user\.note:68656c6c6f links=etc\/new-file\|etc\/new-file-link/);
    assert.match(mergedView.get('usr/bin/su-like')!, /mode=4755 .*links=/);
    assert.match(mergedView.get('etc/attr')!, /user\.more:.*user\.origin:/);
    assert.equal(mergedView.get('opt/app/old1'), undefined);
    assert.ok(mergedView.has('srv/renamed/f') && !mergedView.has('srv/moved-dir'));
  });
}

test('refused: an overlay redirect, a metacopy file, a file named .wh.*', async () => {
  requireRoot();
  const cases: Array<[string, (upper: string) => Promise<void>, RegExp]> = [
    ['redirect', async (u) => {
      await mkdir(join(u, 'renamed'));
      lsetxattr(join(u, 'renamed'), 'trusted.overlay.redirect', Buffer.from('/old'));
    }, /\/renamed is an overlayfs redirect/],
    ['metacopy', async (u) => {
      await writeFile(join(u, 'big'), '');
      lsetxattr(join(u, 'big'), 'trusted.overlay.metacopy', Buffer.alloc(0));
    }, /\/big is an overlayfs metacopy file/],
    ['whiteout name', async (u) => {
      await writeFile(join(u, '.wh.sneaky'), 'x');
    }, /\/\.wh\.sneaky: a file named \.wh\.\* cannot be stored/],
  ];
  for (const [name, make, message] of cases) {
    const upper = await scratch(name);
    await make(upper);
    await assert.rejects(upperToEntries(upper, () => true), (err: unknown) => {
      assert.ok(err instanceof OcibuildError, String(err));
      assert.match(err.message, message);
      assert.equal(err.where, upper);
      return true;
    });
  }
});

test('opaque markers follow the mount’s xattr namespace and the lower tree', async () => {
  requireRoot();
  const upper = await scratch('opaque');
  for (const d of ['a', 'b', 'c']) {
    await mkdir(join(upper, d));
  }
  lsetxattr(join(upper, 'a'), 'trusted.overlay.opaque', Buffer.from('y'));
  lsetxattr(join(upper, 'b'), 'user.overlay.opaque', Buffer.from('y'));
  lsetxattr(join(upper, 'c'), 'trusted.overlay.opaque', Buffer.from('x'));
  mknod(join(upper, 'a/gone'), 0o020000, 0, 0);
  const lowerHas = (p: string): boolean => p !== 'nope';
  const paths = async (ns: 'trusted' | 'user') => (await upperToEntries(upper, lowerHas, { overlayXattrs: ns })).map((e) => e.path);
  assert.deepEqual(await paths('trusted'), ['a', 'a/.wh..wh..opq', 'a/.wh.gone', 'b', 'c']);
  assert.deepEqual(await paths('user'), ['a', 'a/.wh.gone', 'b', 'b/.wh..wh..opq', 'c']);
  assert.deepEqual((await upperToEntries(upper, () => false)).map((e) => e.path), ['a', 'a/.wh.gone', 'b', 'c']);
});

test('a hard link whose first name is under an excluded directory stands on its own', async () => {
  requireRoot();
  const upper = await scratch('excluded-link');
  await mkdir(join(upper, 'aaa'));
  await mkdir(join(upper, 'tmp'));
  await writeFile(join(upper, 'tmp/first'), 'shared');
  await link(join(upper, 'tmp/first'), join(upper, 'aaa/second'));
  await link(join(upper, 'tmp/first'), join(upper, 'aaa/third'));
  const entries = await upperToEntries(upper, () => false, { exclude: ['tmp'] });
  const types = Object.fromEntries(entries.map((e) => [e.path, e.type === 'hardlink' ? `hardlink->${e.target}` : e.type]));
  // walkTree may meet either name first; one holds the bytes, the other links to it.
  const kinds = [types['aaa/second'], types['aaa/third']].sort();
  assert.ok(
    (kinds[0] === 'file' && (kinds[1] === 'hardlink->aaa/second' || kinds[1] === 'hardlink->aaa/third')),
    JSON.stringify(types),
  );
  assert.equal(entries.length, 3);
});

test('an upper dir with .wh. files for whiteouts (the copy fallback where devices are refused)', async () => {
  requireRoot();
  const upper = await scratch('wh-files');
  await mkdir(join(upper, 'etc'));
  await writeFile(join(upper, 'etc/.wh.gone'), '');
  await writeFile(join(upper, 'etc/kept'), 'k');
  await chmod(join(upper, 'etc'), 0o755);
  await chmod(join(upper, 'etc/kept'), 0o600);
  mknod(join(upper, 'etc/gone-too'), 0o020000, 0, 0);
  const entries = await upperToEntries(upper, () => true, { whiteoutFormat: 'wh-files' });
  assert.deepEqual(entries.map((e) => [e.path, e.type, e.mode, e.mtime]), [
    ['etc', 'directory', 0o755, entries[0]!.mtime],
    ['etc/.wh.gone', 'file', 0o644, 0],
    ['etc/.wh.gone-too', 'file', 0o644, 0],
    ['etc/kept', 'file', 0o600, entries[3]!.mtime],
  ]);
  // The same dir read as an overlay upper: a .wh. file is an error, not a whiteout.
  await assert.rejects(upperToEntries(upper, () => true), /a file named \.wh\.\* cannot be stored/);
});
