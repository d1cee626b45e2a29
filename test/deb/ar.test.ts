// The ar reader against hand-written archives, with binutils' `ar` as the judge of
// what a well-formed archive holds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { readAr, type ArMember } from '../../src/deb/ar.js';
import { OcibuildError } from '../../src/errors.js';

interface Member { name: string; data: Buffer; mtime?: number; mode?: string; gnuName?: boolean }

function arHeader(m: Member, size = m.data.length): Buffer {
  const h = Buffer.alloc(60, 0x20);
  h.write(m.gnuName ? `${m.name}/` : m.name, 0, 'latin1');
  h.write(String(m.mtime ?? 1700000000), 16, 'latin1');
  h.write('0', 28, 'latin1');
  h.write('0', 34, 'latin1');
  h.write(m.mode ?? '100644', 40, 'latin1');
  h.write(String(size), 48, 'latin1');
  h.write('`\n', 58, 'latin1');
  return h;
}

function arArchive(members: Member[]): Buffer {
  const parts: Buffer[] = [Buffer.from('!<arch>\n')];
  for (const m of members) {
    parts.push(arHeader(m), m.data);
    if (m.data.length % 2) parts.push(Buffer.from('\n'));
  }
  return Buffer.concat(parts);
}

/** Feeds `bytes` in small uneven chunks so that headers straddle chunk boundaries. */
function chunked(bytes: Buffer, size = 7): Readable {
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.subarray(i, i + size));
  return Readable.from(chunks);
}

async function readAll(member: ArMember): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of member.body) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function run(cmd: string, args: string[], cwd?: string): Buffer {
  const r = spawnSync(cmd, args, { cwd, maxBuffer: 1 << 26 });
  assert.ifError(r.error); // a missing tool fails the test (binutils)
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr.toString()}`);
  return r.stdout;
}

const MEMBERS: Member[] = [
  { name: 'debian-binary', data: Buffer.from('2.0\n') },
  { name: 'odd', data: Buffer.from('odd-sized body') .subarray(0, 13), mode: '100755', mtime: 1234567890 },
  { name: 'empty', data: Buffer.alloc(0) },
  { name: 'gnu-style', data: Buffer.alloc(70000, 0x61), gnuName: true },
  { name: 'last', data: Buffer.from('x') },
];

test('readAr: names, sizes, bodies and header fields match binutils ar', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ocibuild-ar-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const bytes = arArchive(MEMBERS);
  await writeFile(join(dir, 'a.ar'), bytes);

  const got: Array<{ name: string; size: number; mtime: number; mode: number; data: Buffer }> = [];
  for await (const m of readAr(chunked(bytes), 'a.ar')) got.push({ name: m.name, size: m.size, mtime: m.mtime, mode: m.mode, data: await readAll(m) });

  // binutils prints GNU-style names without their trailing '/', as dpkg reads them.
  const names = run('ar', ['t', join(dir, 'a.ar')]).toString().trim().split('\n');
  assert.deepEqual(got.map((m) => m.name), names);
  for (const m of got) {
    assert.equal(m.size, m.data.length);
    assert.deepEqual(m.data, run('ar', ['p', join(dir, 'a.ar'), m.name]), m.name);
  }
  assert.equal(got[1]!.mtime, 1234567890);
  assert.equal(got[1]!.mode, 0o100755);
});

test('readAr: unread or half-read bodies are skipped when iteration moves on', async () => {
  const bytes = arArchive(MEMBERS);
  const seen: string[] = [];
  let lastBody: Buffer | undefined;
  for await (const m of readAr(chunked(bytes, 1000), 'a.ar')) {
    seen.push(m.name);
    if (m.name === 'gnu-style') {
      // Read one chunk only, then move on.
      for await (const c of m.body) {
        assert.ok((c as Buffer).length > 0);
        break;
      }
    }
    if (m.name === 'last') lastBody = await readAll(m);
  }
  assert.deepEqual(seen, MEMBERS.map((m) => m.name));
  assert.deepEqual(lastBody, Buffer.from('x'));
});

async function failure(bytes: Buffer): Promise<OcibuildError> {
  try {
    for await (const m of readAr(chunked(bytes), 'broken.deb')) await readAll(m);
  } catch (err) {
    assert.ok(err instanceof OcibuildError, `expected an OcibuildError, got ${String(err)}`);
    assert.equal(err.where, 'broken.deb');
    assert.ok(err.hint);
    return err;
  }
  assert.fail('no error');
}

test('readAr: malformed archives are OcibuildErrors naming the archive', async () => {
  const good = arArchive(MEMBERS.slice(0, 2));
  const cases: Array<[string, Buffer, RegExp]> = [
    ['bad magic', Buffer.from('PK\x03\x04 not an ar archive at all'), /bad magic/],
    ['empty file', Buffer.alloc(0), /bad magic/],
    ['truncated header', Buffer.concat([Buffer.from('!<arch>\n'), arHeader(MEMBERS[0]!).subarray(0, 30)]), /truncated ar header at byte 8 \(30 of 60 bytes\)/],
    ['truncated member', good.subarray(0, good.length - 9), /ar member "odd" is truncated: 5 of 13 bytes present/],
    ['size not a number', Buffer.concat([Buffer.from('!<arch>\n'), arHeader(MEMBERS[0]!, 0).fill(0x20, 48, 58).fill(0x41, 48, 50), Buffer.from('2.0\n')]), /size "AA" is not a number/],
    ['empty size', Buffer.concat([Buffer.from('!<arch>\n'), arHeader(MEMBERS[0]!, 0).fill(0x20, 48, 58)]), /size "" is not a number/],
    ['no terminator', Buffer.concat([Buffer.from('!<arch>\n'), arHeader(MEMBERS[0]!).fill(0x20, 58, 60), Buffer.from('2.0\n')]), /malformed ar header at byte 8/],
  ];
  for (const [what, bytes, message] of cases) {
    const err = await failure(bytes);
    assert.match(err.message, message, what);
  }
});

test('readAr: a missing pad byte after the last member is tolerated', async () => {
  const bytes = arArchive([{ name: 'a', data: Buffer.from('abc') }]);
  const got: string[] = [];
  for await (const m of readAr(Readable.from([bytes.subarray(0, bytes.length - 1)]), 'a.ar')) got.push((await readAll(m)).toString());
  assert.deepEqual(got, ['abc']);
});
