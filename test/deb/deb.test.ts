// readDeb and readDebControl against real .debs (the fixture builder in every
// compression, and dpkg-deb --build itself), with dpkg-deb and GNU tar as judges;
// then hostile and broken archives, each refused with an error naming the .deb.
import { once } from 'node:events';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, chown, link, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createWriteStream } from 'node:fs';
import { readDeb, readDebControl, type DataEntry, type DebControl } from '../../src/deb/deb.js';
import { detectCompression } from '../../src/deb/decompress.js';
import { OcibuildError } from '../../src/errors.js';
import { buildDeb, type FixturePackage } from '../support/deb.js';
import { arBytes, debWith, tarBytes, type TarItem } from '../support/hostile-deb.js';

// ---------------------------------------------------------------------------
// helpers

function run(cmd: string, args: string[], opts: { cwd?: string; input?: Buffer } = {}): Buffer {
  const r = spawnSync(cmd, args, { cwd: opts.cwd, input: opts.input, maxBuffer: 1 << 28, env: { ...process.env, TZ: 'UTC', LC_ALL: 'C' } });
  assert.ifError(r.error); // a missing tool fails the test (dpkg, tar, xz-utils, zstd)
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr.toString()}`);
  return r.stdout;
}

async function tempDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ocibuild-deb-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

interface Read { control: DebControl; entries: DataEntry[]; bodies: Map<string, Buffer> }

async function readAllOf(src: string | Readable, where: string): Promise<Read> {
  const entries: DataEntry[] = [];
  const bodies = new Map<string, Buffer>();
  let early: DebControl | undefined;
  const control = await readDeb(src, where, async (e, body) => {
    assert.ok(early, 'the control callback runs before the first entry');
    entries.push(e);
    const chunks: Buffer[] = [];
    for await (const c of body) chunks.push(c as Buffer);
    if (e.type === 'file') bodies.set(e.path, Buffer.concat(chunks));
    else assert.equal(Buffer.concat(chunks).length, 0);
  }, { control: (c) => { early = c; } });
  assert.equal(control, early);
  return { control, entries, bodies };
}

function modeString(e: DataEntry): string {
  const kind = { file: '-', directory: 'd', symlink: 'l', hardlink: 'h', char: 'c', block: 'b', fifo: 'p' }[e.type];
  const m = e.mode;
  const rwx = (shift: number, special: boolean, s: string): string => {
    const x = (m >> shift) & 1;
    return ((m >> (shift + 2)) & 1 ? 'r' : '-') + ((m >> (shift + 1)) & 1 ? 'w' : '-') + (special ? (x ? s : s.toUpperCase()) : x ? 'x' : '-');
  };
  return kind + rwx(6, (m & 0o4000) !== 0, 's') + rwx(3, (m & 0o2000) !== 0, 's') + rwx(0, (m & 0o1000) !== 0, 't');
}

/** Our entries in the words of `tar -tv --numeric-owner --full-time` (TZ=UTC). */
function ourListing(entries: DataEntry[]): string[] {
  return entries.map((e) => {
    const date = new Date(e.mtime * 1000).toISOString().slice(0, 19).replace('T', ' ');
    const size = e.type === 'char' || e.type === 'block' ? `${e.devmajor},${e.devminor}` : String(e.size);
    const name = e.path + (e.type === 'directory' ? '/' : '');
    const link = e.type === 'symlink' ? ` -> ${e.linkname}` : e.type === 'hardlink' ? ` link to ${e.linkname}` : '';
    return `${modeString(e)} ${e.uid}/${e.gid} ${size} ${date} ${name}${link}`;
  });
}

/** GNU tar's listing of the data.tar dpkg-deb extracts, normalized like our paths. */
function tarListing(debPath: string): string[] {
  const tarBytes = run('dpkg-deb', ['--fsys-tarfile', debPath]);
  const text = run('tar', ['-tv', '--numeric-owner', '--full-time'], { input: tarBytes }).toString();
  const strip = (p: string): string => p.replace(/^\.\//, '');
  return text.trimEnd().split('\n').flatMap((line) => {
    const [perm, owner, size, day, time, ...rest] = line.split(/ +/);
    let name = rest.join(' ');
    let link = '';
    const sym = name.indexOf(' -> ');
    const hard = name.indexOf(' link to ');
    if (perm!.startsWith('l') && sym !== -1) [name, link] = [name.slice(0, sym), ` -> ${name.slice(sym + 4)}`];
    if (perm!.startsWith('h') && hard !== -1) [name, link] = [name.slice(0, hard), ` link to ${strip(name.slice(hard + 9))}`];
    name = strip(name);
    if (name === '' || name === './' || name === '.') return [];
    return [`${perm} ${owner} ${size} ${day} ${time} ${name}${link}`];
  });
}

/** Checks a .deb read by readDeb against dpkg-deb's view of the same file. */
async function judge(t: { after(fn: () => Promise<void>): void }, debPath: string, got: Read): Promise<void> {
  const expected = tarListing(debPath);
  assert.ok(expected.length >= 10, `GNU tar lists ${expected.length} entries`);
  assert.deepEqual(ourListing(got.entries), expected);

  // Control: the raw file, the fields as dpkg-deb -f prints them, and every control.tar member.
  assert.equal(got.control.controlText, run('dpkg-deb', ['--info', debPath, 'control']).toString());
  const fields = [...got.control.fields].map(([k, v]) => `${k}: ${v}\n`).join('');
  assert.equal(fields, run('dpkg-deb', ['-f', debPath]).toString());
  const dir = await tempDir(t);
  run('dpkg-deb', ['--control', debPath, join(dir, 'DEBIAN')]);
  const members = (await readdir(join(dir, 'DEBIAN'))).sort();
  const expectScripts = members.filter((m) => !['control', 'md5sums', 'conffiles'].includes(m));
  assert.deepEqual([...got.control.scripts.keys()], expectScripts);
  for (const name of expectScripts) assert.deepEqual(got.control.scripts.get(name), await readFile(join(dir, 'DEBIAN', name)), name);
  assert.equal(got.control.md5sums, members.includes('md5sums') ? await readFile(join(dir, 'DEBIAN', 'md5sums'), 'utf8') : undefined);
  const conffiles = members.includes('conffiles') ? (await readFile(join(dir, 'DEBIAN', 'conffiles'), 'utf8')).split('\n').filter((l) => l !== '') : [];
  assert.deepEqual(got.control.conffiles, conffiles);

  // File contents: what dpkg-deb -x writes.
  run('dpkg-deb', ['-x', debPath, join(dir, 'root')]);
  for (const [path, body] of got.bodies) {
    const disk = await readFile(join(dir, 'root', path));
    assert.equal(createHash('sha256').update(body).digest('hex'), createHash('sha256').update(disk).digest('hex'), path);
  }
  assert.equal(got.bodies.size, got.entries.filter((e) => e.type === 'file').length);
}

const LONG_DIR = '/usr/share/ocibuild-tests/' + 'a-rather-long-directory-name/'.repeat(4);

function fixture(data: 'gz' | 'xz' | 'zst' | 'none', control: 'gz' | 'xz' | 'none'): FixturePackage {
  return {
    name: 'hello', version: '1:2.10-3~deb12u1', depends: 'libc6 (>= 2.34)', dataCompression: data, controlCompression: control,
    description: 'says hello\nA longer description\n\nwith a paragraph break.',
    files: {
      '/usr/bin/hello': '#!/bin/sh\necho hello\n',
      '/usr/bin/hi': { hardlink: '/usr/bin/hello' },
      '/usr/bin/su-ish': { content: Buffer.alloc(3000, 7), mode: 0o4755 },
      '/usr/bin/group-ish': { content: 'g', mode: 0o2755, gid: 50 },
      '/usr/lib/hello/data.bin': Buffer.alloc(200_000, 0xab),
      '/home/user/owned': { content: 'mine', uid: 1000, gid: 1000 },
      '/tmp': { dir: true, mode: 0o1777 },
      '/var/empty': { dir: true },
      '/usr/share/doc/hello/changelog': { symlink: '../../../../etc/hello/changelog' },
      '/usr/bin/abs': { symlink: '/etc/alternatives/hello' },
      '/etc/hello.conf': 'greeting=hello\n',
      [`${LONG_DIR}file-with-a-long-name`]: 'deep\n',
    },
    scripts: { postinst: '#!/bin/sh\nset -e\n', prerm: '#!/bin/sh\n', config: '#!/bin/sh\n' },
    conffiles: ['/etc/hello.conf'],
  };
}

// ---------------------------------------------------------------------------
// well-formed packages

for (const [data, control] of [['gz', 'gz'], ['xz', 'xz'], ['zst', 'gz'], ['none', 'none']] as const) {
  test(`readDeb: data.tar.${data} / control.tar.${control} from the fixture builder matches dpkg-deb and GNU tar`, async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'hello.deb');
    await writeFile(path, await buildDeb(fixture(data, control)));
    const got = await readAllOf(path, 'hello.deb');
    await judge(t, path, got);
    assert.equal(got.control.fields.get('Version'), '1:2.10-3~deb12u1');
    assert.equal(got.control.fields.get('Description'), 'says hello\n A longer description\n .\n with a paragraph break.');
    const su = got.entries.find((e) => e.path === 'usr/bin/su-ish')!;
    assert.equal(su.mode, 0o4755);
    const hard = got.entries.find((e) => e.path === 'usr/bin/hi')!;
    assert.deepEqual([hard.type, hard.linkname], ['hardlink', 'usr/bin/hello']);
    const rel = got.entries.find((e) => e.path === 'usr/share/doc/hello/changelog')!;
    assert.deepEqual([rel.type, rel.linkname], ['symlink', '../../../../etc/hello/changelog']);
  });
}

test('readDeb: a package built by dpkg-deb --build itself, in each compression dpkg-deb writes', async (t) => {
  const dir = await tempDir(t);
  const tree = join(dir, 'tree');
  const put = async (rel: string, content: string | Buffer, mode = 0o644): Promise<void> => {
    await mkdir(dirname(join(tree, rel)), { recursive: true });
    await writeFile(join(tree, rel), content);
    await chmod(join(tree, rel), mode);
  };
  await put('DEBIAN/control', 'Package: tool\nVersion: 1.0-1\nArchitecture: all\nMaintainer: Test <t@example.invalid>\nDescription: a tool\n two lines\n');
  await put('DEBIAN/postinst', '#!/bin/sh\nexit 0\n', 0o755);
  await put('DEBIAN/triggers', 'interest-noawait /usr/share/tool\n');
  await put('DEBIAN/conffiles', '/etc/tool.conf\n');
  await put('etc/tool.conf', 'x=1\n');
  await put('usr/bin/tool', Buffer.alloc(5000, 1), 0o4755);
  await link(join(tree, 'usr/bin/tool'), join(tree, 'usr/bin/tool2'));
  await symlink('tool', join(tree, 'usr/bin/t'));
  await symlink('/etc/alternatives/tool', join(tree, 'usr/bin/alt'));
  await put('srv/owned', 'o', 0o640);
  await chown(join(tree, 'srv/owned'), 1000, 1001);
  await mkdir(join(tree, 'var/lib/tool/empty'), { recursive: true });
  await put(`usr/share/tool/${'long-component-name-'.repeat(6)}/${'x'.repeat(90)}`, 'long\n');
  run('mkfifo', [join(tree, 'srv/fifo')]);

  for (const z of ['xz', 'gzip', 'zstd', 'none']) {
    const deb = join(dir, `tool-${z}.deb`);
    run('dpkg-deb', [`-Z${z}`, '--build', tree, deb]);
    const members = run('ar', ['t', deb]).toString();
    const ext = ({ xz: '.xz', gzip: '.gz', zstd: '.zst', none: '' } as Record<string, string>)[z] ?? '?';
    assert.match(members, new RegExp(`^data\\.tar${ext.replace('.', '\\.')}$`, 'm'));
    const got = await readAllOf(Readable.from(await readFile(deb)), `tool-${z}.deb`);
    await judge(t, deb, got);
    const byPath = new Map(got.entries.map((e) => [e.path, e]));
    assert.equal(byPath.get('usr/bin/tool')!.mode, 0o4755);
    assert.equal(byPath.get('srv/fifo')!.type, 'fifo');
    assert.deepEqual([byPath.get('srv/owned')!.uid, byPath.get('srv/owned')!.gid], [1000, 1001]);
    assert.equal(byPath.get('usr/bin/alt')!.linkname, '/etc/alternatives/tool');
    assert.deepEqual([...got.control.scripts.keys()], ['postinst', 'triggers']);
  }
});

test('readDebControl reads only the control data', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'hello.deb');
  await writeFile(path, await buildDeb(fixture('xz', 'gz')));
  const control = await readDebControl(path, 'hello.deb');
  assert.equal(control.fields.get('Package'), 'hello');
  assert.deepEqual(control.conffiles, ['/etc/hello.conf']);
  assert.deepEqual([...control.scripts.keys()], ['config', 'postinst', 'prerm']);
  // From a stream, and with the data member cut off: control is all it needs.
  const bytes = await buildDeb(fixture('gz', 'gz'));
  const cut = bytes.subarray(0, bytes.indexOf('data.tar.gz') + 100);
  assert.equal((await readDebControl(Readable.from([cut]), 'cut.deb')).fields.get('Version'), '1:2.10-3~deb12u1');
});

test('readDeb: bodies the callback leaves unread are drained; callback errors pass through unchanged', async () => {
  const bytes = await buildDeb(fixture('xz', 'gz'));
  const paths: string[] = [];
  await readDeb(Readable.from([bytes]), 'hello.deb', async (e) => { paths.push(e.path); });
  assert.ok(paths.includes(`${LONG_DIR.slice(1)}file-with-a-long-name`));
  assert.equal(paths.length, new Set(paths).size);

  const mine = new Error('disk full');
  await assert.rejects(readDeb(Readable.from([bytes]), 'hello.deb', async (e, body) => {
    if (e.path === 'usr/lib/hello/data.bin') {
      body.destroy();
      throw mine;
    }
  }), (err) => err === mine);
});

test('readDeb: an aborted signal stops the walk with an AbortError', async () => {
  const bytes = await buildDeb(fixture('xz', 'gz'));
  const ac = new AbortController();
  await assert.rejects(readDeb(Readable.from([bytes]), 'hello.deb', async (e) => {
    if (e.path === 'usr/bin/hello') ac.abort();
  }, { signal: ac.signal }), { name: 'AbortError' });
});

// ---------------------------------------------------------------------------
// hostile and broken archives

/** Reads `deb` with a small real extractor writing into dir/root, expects an
 *  OcibuildError naming evil.deb, and checks that nothing landed outside the root. */
async function refused(t: { after(fn: () => Promise<void>): void }, deb: Buffer, message: RegExp): Promise<string[]> {
  const dir = await tempDir(t);
  const root = join(dir, 'root');
  await mkdir(root);
  const written: string[] = [];
  const err = await readDeb(Readable.from([deb]), 'evil.deb', async (e, body) => {
    written.push(e.path);
    const target = join(root, e.path);
    if (e.type === 'directory') await mkdir(target, { recursive: true });
    else if (e.type === 'file') await pipeline(body, createWriteStream(target));
    else if (e.type === 'symlink') await symlink(e.linkname!, target);
    else if (e.type === 'hardlink') await link(join(root, e.linkname!), target);
  }).then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof OcibuildError, `expected an OcibuildError, got ${String(err)}`);
  assert.equal(err.where, 'evil.deb');
  assert.match(err.message, message);
  assert.ok(err.hint);
  assert.deepEqual(await readdir(dir), ['root'], 'nothing is written outside the root');
  return written;
}

test('hostile data.tar entries are refused before anything is written for them', async (t) => {
  const cases: Array<[string, TarItem[], RegExp, string[]]> = [
    ['parent traversal', [{ name: './ok' }, { name: '../etc/passwd' }], /data\.tar entry "\.\.\/etc\/passwd" has a "\.\." component/, ['ok']],
    ['absolute path', [{ name: '/etc/passwd' }], /"\/etc\/passwd" is an absolute path/, []],
    ['traversal inside a path', [{ name: 'a/', type: 'directory' }, { name: 'a/../../x' }], /"a\/\.\.\/\.\.\/x" has a "\.\." component/, ['a']],
    ['harmless-looking dotdot', [{ name: 'a/../b' }], /"a\/\.\.\/b" has a "\.\." component/, []],
    ['hard link out of the root', [{ name: './x' }, { name: './l', type: 'link', linkname: '../x' }], /hard link whose target "\.\.\/x" has a "\.\." component/, ['x']],
    ['hard link to an absolute path', [{ name: './l', type: 'link', linkname: '/etc/shadow' }], /target "\/etc\/shadow" is an absolute path/, []],
    ['hard link to an unseen entry', [{ name: './l', type: 'link', linkname: './later' }, { name: './later' }], /hard link to "\.\/later", which the archive has not shown before/, []],
    ['file through a symlink of the archive', [{ name: './etc', type: 'symlink', linkname: '/etc' }, { name: './etc/passwd' }], /"\.\/etc\/passwd" lies under "etc", which this archive makes a symlink/, ['etc']],
    ['a path twice as different types', [{ name: './x' }, { name: './x', type: 'symlink', linkname: 'y' }], /appears twice in the archive \(as a file, then as a symlink\)/, ['x']],
    ['a file twice', [{ name: './x' }, { name: 'x' }], /appears twice/, ['x']],
    ['an empty symlink target', [{ name: './s', type: 'symlink', linkname: '' }], /symlink with an empty target/, []],
  ];
  for (const [what, items, message, before] of cases) {
    const written = await refused(t, await debWith(items), message);
    assert.deepEqual(written, before, what);
  }
});

test('a directory may appear twice; both entries are reported, the later one wins', async () => {
  const deb = await debWith([{ name: './d/', type: 'directory' }, { name: './d/f' }, { name: './d', type: 'directory' }]);
  const seen: string[] = [];
  await readDeb(Readable.from([deb]), 'dirs.deb', async (e) => { seen.push(`${e.type}:${e.path}`); });
  assert.deepEqual(seen, ['directory:d', 'file:d/f', 'directory:d']);
});

test('broken archives: each an OcibuildError naming the .deb', async (t) => {
  const good = await buildDeb(fixture('xz', 'gz'));
  const control = await tarBytes([{ name: './control', content: 'Package: p\nVersion: 1\n' }]);
  const data = await tarBytes([{ name: './f' }]);
  const dataAt = good.indexOf('data.tar.xz');
  const corrupt = Buffer.from(good);
  corrupt.fill(0x55, dataAt + 200, dataAt + 260);
  const cases: Array<[string, Buffer, RegExp]> = [
    ['bad magic', Buffer.from('<html>404 Not Found</html>\n'), /bad magic/],
    ['truncated data.tar.xz', good.subarray(0, good.length - 100), /ar member "data\.tar\.xz" is truncated/],
    ['cut inside a header', good.subarray(0, dataAt + 20), /truncated ar header/],
    ['corrupt xz data', corrupt, /cannot read data\.tar\.xz/],
    ['no debian-binary first', arBytes([['control.tar', control], ['data.tar', data]]), /first ar member is "control\.tar", not "debian-binary"/],
    ['format 3.0', arBytes([['debian-binary', Buffer.from('3.0\n')], ['control.tar', control], ['data.tar', data]]), /unsupported \.deb format version "3\.0"/],
    ['no control.tar', arBytes([['debian-binary', Buffer.from('2.0\n')], ['data.tar', data]]), /missing control\.tar member \(found "data\.tar"\)/],
    ['no data.tar', arBytes([['debian-binary', Buffer.from('2.0\n')], ['control.tar', control]]), /missing data\.tar member \(found the end of the archive\)/],
    ['unknown compression', arBytes([['debian-binary', Buffer.from('2.0\n')], ['control.tar', control], ['data.tar.lz4', data]]), /"data\.tar\.lz4" has an unknown compression suffix/],
    ['bzip2', arBytes([['debian-binary', Buffer.from('2.0\n')], ['control.tar', control], ['data.tar.bz2', data]]), /bzip2-compressed data\.tar is not supported/],
    ['not a tar', arBytes([['debian-binary', Buffer.from('2.0\n')], ['control.tar', control], ['data.tar', Buffer.alloc(1024, 0x41)]]), /cannot read data\.tar: /],
    ['control without Package', arBytes([['debian-binary', Buffer.from('2.0\n')], ['control.tar', await tarBytes([{ name: './control', content: 'Version: 1\n' }])], ['data.tar', data]]), /no Package field/],
    ['control.tar traversal', arBytes([['debian-binary', Buffer.from('2.0\n')], ['control.tar', await tarBytes([{ name: './control', content: 'Package: p\n' }, { name: '../postinst' }])], ['data.tar', data]]), /control\.tar entry "\.\.\/postinst" has a "\.\." component/],
    ['control.tar symlink', arBytes([['debian-binary', Buffer.from('2.0\n')], ['control.tar', await tarBytes([{ name: './control', content: 'Package: p\n' }, { name: './postinst', type: 'symlink', linkname: '/bin/sh' }])], ['data.tar', data]]), /control\.tar entry "\.\/postinst" is a symlink; only regular files belong there/],
    ['no control file', arBytes([['debian-binary', Buffer.from('2.0\n')], ['control.tar', await tarBytes([{ name: './md5sums' }])], ['data.tar', data]]), /control\.tar has no "control" file/],
  ];
  for (const [what, bytes, message] of cases) {
    const written = await refused(t, bytes, message).catch((err: unknown) => {
      throw new Error(`${what}: ${String(err)}`, { cause: err });
    });
    if (what !== 'truncated data.tar.xz' && what !== 'corrupt xz data') assert.deepEqual(written, [], what);
  }
  // A missing file is an error naming it.
  await assert.rejects(readDeb('/nonexistent/x.deb', 'x.deb', async () => undefined), (err) => err instanceof OcibuildError && /cannot read \/nonexistent\/x\.deb/.test(err.message));
});

test('detectCompression follows deb(5) member names', () => {
  const table: Array<[string, string | undefined]> = [
    ['data.tar', 'none'], ['data.tar.gz', 'gz'], ['data.tar.xz', 'xz'], ['data.tar.zst', 'zst'], ['data.tar.bz2', 'bz2'],
    ['control.tar.zst', 'zst'], ['data.tar.lzma', undefined], ['data.tar.xz.sig', undefined], ['data.tgz', undefined], ['.tar', undefined],
  ];
  for (const [name, kind] of table) assert.equal(detectCompression(name), kind, name);
});

// The timeout turns a regression (a walk that never moves on) into a failure, not a hang.
test('readDeb: a body destroyed unread or half-read is skipped, a slowly read body arrives whole, later entries still come', { timeout: 120_000 }, async () => {
  const big = Buffer.alloc(3_000_000);
  for (let i = 0; i < big.length; i++) big[i] = (i * 2654435761) >>> 24;
  const pkg: FixturePackage = {
    name: 'big', version: '1', dataCompression: 'xz', controlCompression: 'gz',
    files: { '/a/first.bin': big, '/a/zero.bin': big, '/b/second.bin': big, '/c/after': 'still here\n' },
  };
  const bytes = await buildDeb(pkg);
  const seen: string[] = [];
  let slowDigest = '';
  await readDeb(Readable.from([bytes]), 'big.deb', async (e, body) => {
    seen.push(e.path);
    if (e.path === 'a/first.bin') {
      // Read one chunk, then give up on the rest.
      for await (const _ of body) break;
      assert.ok(body.destroyed);
    } else if (e.path === 'a/zero.bin') {
      // Destroyed before any read, once its buffer is full (the entry paused).
      await once(body, 'readable');
      body.destroy();
    } else if (e.path === 'b/second.bin') {
      // A reader that yields to the event loop after every chunk (back-pressure upstream).
      const hash = createHash('sha256');
      await pipeline(body, async function* (source: AsyncIterable<Buffer>) {
        for await (const chunk of source) {
          hash.update(chunk);
          await new Promise((resolve) => setImmediate(resolve));
        }
        yield* [];
      });
      slowDigest = hash.digest('hex');
    }
  });
  assert.deepEqual(seen.filter((p) => p.includes('.') || p === 'c/after'), ['a/first.bin', 'a/zero.bin', 'b/second.bin', 'c/after']);
  assert.equal(slowDigest, createHash('sha256').update(big).digest('hex'));
});
