// The native file-system addon (native/xattr.c): extended attributes that never follow
// symlinks, binary values intact, node:fs-shaped errors, mknod; and the error a user
// gets when the addon is not built. Needs root (trusted.* xattrs, device nodes).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { constants, lstatSync } from 'node:fs';
import { symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { OcibuildError } from '../../src/errors.js';
import {
  lgetxattr,
  lgetxattrs,
  llistxattr,
  loadFsAddon,
  lremovexattr,
  lsetxattr,
  mknod,
  XATTR_CREATE,
  XATTR_REPLACE,
} from '../../src/sandbox/native-fs.js';
import { scratchDirs } from '../support/scratch.js';
import { requireRoot } from './support.js';

const scratch = await scratchDirs('native-fs');

test('set, list, get and remove xattrs; binary values come back byte for byte', async () => {
  const dir = await scratch('xattr');
  const f = join(dir, 'f');
  await writeFile(f, 'x');
  assert.deepEqual(llistxattr(f), []);
  const binary = Buffer.from([0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, 0x00]);
  lsetxattr(f, 'user.bin', binary);
  lsetxattr(f, 'user.empty', Buffer.alloc(0));
  lsetxattr(f, 'user.big', Buffer.alloc(3000, 0xab));
  assert.deepEqual(llistxattr(f).sort(), ['user.big', 'user.bin', 'user.empty']);
  assert.deepEqual(lgetxattr(f, 'user.bin'), binary);
  assert.deepEqual(lgetxattr(f, 'user.empty'), Buffer.alloc(0));
  assert.deepEqual(lgetxattr(f, 'user.big'), Buffer.alloc(3000, 0xab));
  assert.equal(lgetxattr(f, 'user.none'), undefined);
  // What getfattr (attr package) sees is what we set.
  const r = spawnSync('getfattr', ['--absolute-names', '-e', 'hex', '-n', 'user.bin', f], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /user\.bin=0x00017f80feff00/);

  assert.throws(() => lsetxattr(f, 'user.bin', Buffer.from('y'), XATTR_CREATE), { code: 'EEXIST', syscall: 'lsetxattr', path: f });
  assert.throws(() => lsetxattr(f, 'user.other', Buffer.from('y'), XATTR_REPLACE), { code: 'ENODATA' });
  lremovexattr(f, 'user.bin');
  assert.equal(lgetxattr(f, 'user.bin'), undefined);
  assert.throws(() => lremovexattr(f, 'user.bin'), { code: 'ENODATA', syscall: 'lremovexattr' });
  assert.deepEqual([...lgetxattrs(f).keys()].sort(), ['user.big', 'user.empty']);
});

test('the l* calls act on a symlink itself, never on its target', async () => {
  requireRoot();
  const dir = await scratch('symlink');
  const target = join(dir, 'target');
  const link = join(dir, 'link');
  await writeFile(target, 'x');
  await symlink('target', link);
  // user.* is not allowed on symlinks; trusted.* is (as root).
  lsetxattr(link, 'trusted.on-link', Buffer.from('L'));
  assert.deepEqual(lgetxattr(link, 'trusted.on-link'), Buffer.from('L'));
  assert.equal(lgetxattr(target, 'trusted.on-link'), undefined);
  assert.ok(!llistxattr(target).includes('trusted.on-link'));
  assert.throws(() => lsetxattr(link, 'user.x', Buffer.from('y')), { code: 'EPERM' });
});

test('errors read like node:fs errors', () => {
  const missing = '/nonexistent-ocibuild/x';
  assert.throws(() => llistxattr(missing), (err: NodeJS.ErrnoException) => {
    assert.equal(err.code, 'ENOENT');
    assert.equal(err.errno, -2);
    assert.equal(err.syscall, 'llistxattr');
    assert.equal(err.path, missing);
    assert.match(err.message, /^ENOENT: llistxattr: No such file or directory \(\/nonexistent-ocibuild\/x\)/);
    return true;
  });
  assert.throws(() => lgetxattr(missing, 'user.x'), { code: 'ENOENT', syscall: 'lgetxattr' });
  assert.throws(() => lsetxattr('/tmp', 'user.x', 'nope' as unknown as Buffer), TypeError);
  assert.throws(() => llistxattr('a\0b'), TypeError);
});

test('mknod makes FIFOs and device nodes with the given numbers', async () => {
  requireRoot();
  const dir = await scratch('mknod');
  mknod(join(dir, 'fifo'), constants.S_IFIFO | 0o644, 0, 0);
  mknod(join(dir, 'null'), constants.S_IFCHR | 0o666, 1, 3);
  mknod(join(dir, 'blk'), constants.S_IFBLK | 0o600, 259, 70000);
  assert.ok(lstatSync(join(dir, 'fifo')).isFIFO());
  const chr = lstatSync(join(dir, 'null'));
  assert.ok(chr.isCharacterDevice());
  assert.equal(chr.rdev, (1 << 8) | 3);
  const blk = lstatSync(join(dir, 'blk'));
  assert.ok(blk.isBlockDevice());
  // glibc makedev: minor's low 8 bits, major's 12, minor's upper bits above.
  const ls = spawnSync('stat', ['-c', '%Hr %Lr', join(dir, 'blk')], { encoding: 'utf8' });
  assert.equal(ls.stdout.trim(), '259 70000');
  assert.throws(() => mknod(join(dir, 'fifo'), constants.S_IFIFO | 0o644, 0, 0), { code: 'EEXIST', syscall: 'mknod' });
});

test('an addon that is not built is an OcibuildError that says how to build it', () => {
  assert.throws(() => loadFsAddon('/nonexistent-ocibuild/ocibuild_fs.node'), (err: unknown) => {
    assert.ok(err instanceof OcibuildError);
    assert.match(err.message, /native file-system addon .* is not loaded/);
    assert.equal(err.where, '/nonexistent-ocibuild/ocibuild_fs.node');
    assert.match(err.hint ?? '', /npm run build:native/);
    return true;
  });
});
