// walkTree: a directory tree on disk → layer entries, judged by writing the layer and
// having GNU tar extract it (as root) next to the original, then comparing the two
// trees with lstat, readlink and the file bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, chown, link, lstat, lutimes, mkdir, readdir, readFile, readlink, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { LayerEntry } from '../../src/layer/entry.js';
import { walkTree } from '../../src/layer/tree.js';
import { writeTar } from '../../src/layer/tar-writer.js';
import { scratchDirs } from '../support/scratch.js';

const scratch = await scratchDirs('layer-tree');
const EPOCH = 1_700_000_000;

function run(cmd: string, args: string[], input?: Buffer): Buffer {
  const r = spawnSync(cmd, args, { input, maxBuffer: 1 << 28 });
  if (r.error) throw new Error(`${cmd} could not run: ${r.error.message}`);
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr.toString()}`);
  return r.stdout;
}

async function collect(r: AsyncIterable<unknown>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** Every path under `root`, relative, sorted. */
async function paths(root: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const name of await readdir(join(root, rel))) {
    const p = rel ? `${rel}/${name}` : name;
    out.push(p);
    if ((await lstat(join(root, p))).isDirectory()) out.push(...(await paths(root, p)));
  }
  return out.sort();
}

async function makeTree(root: string): Promise<void> {
  await mkdir(join(root, 'bin'));
  await mkdir(join(root, 'tmp'));
  await chmod(join(root, 'tmp'), 0o1777);
  await mkdir(join(root, 'home/user/empty'), { recursive: true });
  await chown(join(root, 'home/user'), 1000, 1000);
  await chmod(join(root, 'home/user'), 0o2750);
  await writeFile(join(root, 'bin/tool'), 'tool bytes\n'.repeat(5000));
  await chmod(join(root, 'bin/tool'), 0o4755);
  await link(join(root, 'bin/tool'), join(root, 'bin/tool-link'));
  await link(join(root, 'bin/tool'), join(root, 'home/user/also-tool'));
  await writeFile(join(root, 'home/user/notes caf\u00e9.txt'), 'notes\n');
  await chown(join(root, 'home/user/notes caf\u00e9.txt'), 1000, 1000);
  await writeFile(join(root, 'home/user/empty-file'), '');
  await symlink('../bin/tool', join(root, 'home/tool'));
  await symlink('nowhere', join(root, 'home/dangling'));
  run('mkfifo', [join(root, 'home/fifo')]);
  run('mknod', [join(root, 'home/null'), 'c', '1', '3']);
  run('mknod', [join(root, 'home/loop9'), 'b', '7', '9']);
  // A socket: not a layer entry (DESIGN.md, "no sockets").
  run('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', join(root, 'home/sock')]);
  // Deepest first, so that setting a child's time does not touch its parent's after.
  for (const p of (await paths(root)).reverse()) await lutimes(join(root, p), 1_500_000_000, 1_600_000_000 + p.length);
}

test('walkTree: the tree GNU tar extracts from the layer is the tree on disk', async () => {
  const work = await scratch('roundtrip');
  const root = join(work, 'root');
  await mkdir(root);
  await makeTree(root);
  const entries = await walkTree(root);

  const types = Object.fromEntries(entries.map((e) => [e.path, e.type]));
  assert.equal(types['home/sock'], undefined, 'sockets are dropped');
  assert.equal(types['home/fifo'], 'fifo');
  assert.equal(types['home/null'], 'char');
  assert.equal(types['home/loop9'], 'block');
  const hardlinks = entries.filter((e): e is Extract<LayerEntry, { type: 'hardlink' }> => e.type === 'hardlink');
  assert.equal(hardlinks.length, 2, 'three names of one inode: one file, two links');
  const dev = entries.find((e) => e.path === 'home/loop9') as Extract<LayerEntry, { devmajor: number }>;
  assert.deepEqual([dev.devmajor, dev.devminor], [7, 9]);

  const tarPath = join(work, 'layer.tar');
  await writeFile(tarPath, await collect(writeTar(entries, { sourceDateEpoch: EPOCH })));
  const out = join(work, 'out');
  await mkdir(out);
  run('tar', ['--numeric-owner', '-xpf', tarPath, '-C', out]);

  const expected = (await paths(root)).filter((p) => p !== 'home/sock');
  assert.deepEqual(await paths(out), expected);
  for (const p of expected) {
    const a = await lstat(join(root, p));
    const b = await lstat(join(out, p));
    assert.equal(b.mode, a.mode, `${p} mode and type`);
    assert.equal(b.uid, a.uid, `${p} uid`);
    assert.equal(b.gid, a.gid, `${p} gid`);
    assert.equal(b.mtimeMs, Math.floor(a.mtimeMs / 1000) * 1000, `${p} mtime`);
    assert.equal(b.rdev, a.rdev, `${p} rdev`);
    assert.equal(b.nlink, a.nlink, `${p} nlink`);
    if (a.isFile()) assert.ok((await readFile(join(out, p))).equals(await readFile(join(root, p))), `${p} bytes`);
    if (a.isSymbolicLink()) assert.equal(await readlink(join(out, p)), await readlink(join(root, p)));
  }
  assert.equal((await lstat(join(out, 'bin/tool-link'))).ino, (await lstat(join(out, 'home/user/also-tool'))).ino);
});

test('walkTree: a missing root is the fs error, with its code and path', async () => {
  const missing = join(await scratch('missing'), 'nope');
  await assert.rejects(walkTree(missing), (err: NodeJS.ErrnoException) => {
    assert.equal(err.code, 'ENOENT');
    assert.equal(err.path, missing);
    return true;
  });
});
