// The overlay mount itself: stacked lowers with whiteouts, the plain-diff options the
// kernel took, no mount left anywhere after a step, and what happens where overlayfs
// cannot be used (an upper directory on overlayfs, which the kernel refuses): a clear
// error naming the reason, or the copy fallback with a warning.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { OverlayUnavailableError, probeOverlay } from '../../src/sandbox/overlay.js';
import { runStep } from '../../src/sandbox/run-step.js';
import { scratchDirs } from '../support/scratch.js';
import { makeBusyboxRootfs, upperPaths } from './run-support.js';

const scratch = await scratchDirs('run-overlay');
const rootfs = join(await scratch('rootfs'), 'root');
await makeBusyboxRootfs(rootfs);
const EPOCH = 1_700_000_000;

async function run(lowers: string[], lines: string[], extra: Partial<Parameters<typeof runStep>[0]> = {}): Promise<{ upper: string; output: string; method: string; whiteouts: string; warnings: string[] }> {
  const dir = extra.dir ?? (await scratch('step'));
  let output = '';
  const warnings: string[] = [];
  const r = await runStep({ lowers, dir, run: lines, sourceDateEpoch: EPOCH, sandbox: 'bwrap', onOutput: (c) => (output += c.toString()), warn: (w) => warnings.push(w), ...extra });
  return { upper: r.upper, output, method: r.method, whiteouts: r.whiteouts, warnings };
}

test('overlay: the kernel takes every plain-diff option here', async () => {
  const flavor = await probeOverlay(await scratch('probe'), false);
  assert.deepEqual(flavor, { userns: false, options: ['redirect_dir=nofollow', 'metacopy=off', 'index=off', 'xino=off'] });
});

test('overlay: a second step sees the first one stacked on the rootfs, whiteouts included', async () => {
  const first = await run([rootfs], ['rm /etc/motd', 'mkdir /data', 'echo 1 > /data/one', 'rm -rf /srv/data', 'mkdir /srv/data', 'echo n > /srv/data/new']);
  const second = await run([first.upper, rootfs], ['ls /etc', 'ls /data', 'ls /srv/data', 'echo 2 > /data/two']);
  assert.equal(second.output, 'group\npasswd\none\nnew\n');
  assert.deepEqual(await upperPaths(second.upper), ['data', 'data/two']);
});

test('the copy fallback reads an overlayfs upper directory: whiteouts and opaque directories', async () => {
  const first = await run([rootfs], ['rm /etc/motd', 'rm -rf /srv/data', 'mkdir /srv/data', 'echo n > /srv/data/new'], { overlay: 'require' });
  assert.match(execFileSync('getfattr', ['--absolute-names', '-d', '-m', '-', join(first.upper, 'srv/data')]).toString(), /trusted\.overlay\.opaque="y"/);
  const second = await run([first.upper, rootfs], ['ls /etc /srv/data'], { overlay: 'copy' });
  assert.equal(second.output, '/etc:\ngroup\npasswd\n\n/srv/data:\nnew\n');
});

test('overlay: the mount exists only in the holder namespace, and no namespace keeps it after the step', async () => {
  const dir = await scratch('mounts');
  let hostTableDuringStep = '';
  await run([rootfs], ['echo running', 'echo x > /x'], {
    dir,
    onOutput: (c) => {
      if (c.toString().includes('running')) hostTableDuringStep = readFileSync('/proc/self/mountinfo', 'utf8');
    },
  });
  assert.ok(hostTableDuringStep.length > 0);
  assert.ok(!hostTableDuringStep.includes(dir), 'never in the host mount table');
  assert.deepEqual(await mountersOf(dir), [], 'no process has a mount under the step directory');
  assert.deepEqual((await readdir(dir)).sort(), ['upper']);
});

test('overlay: a failing step unmounts and leaves nothing', async () => {
  const dir = await scratch('failing');
  await assert.rejects(run([rootfs], ['exit 7'], { dir }), /exit code 7/);
  assert.deepEqual(await mountersOf(dir), []);
  assert.deepEqual(await readdir(dir), []);
});

/** Pids whose mount table has something under `dir`. */
async function mountersOf(dir: string): Promise<number[]> {
  const out: number[] = [];
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const table = await readFile(`/proc/${pid}/mountinfo`, 'utf8').catch(() => '');
    if (table.includes(dir)) out.push(Number(pid));
  }
  return out;
}

test('overlay: unavailable (upper directory on overlayfs) is a clear error, or the copy fallback with a warning', async (t) => {
  // A directory on overlayfs, which the kernel refuses as an upper directory.
  const base = await scratch('ovl-on-ovl');
  for (const d of ['l', 'u', 'w', 'm']) await mkdir(join(base, d));
  execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${base}/l,upperdir=${base}/u,workdir=${base}/w`, `${base}/m`]);
  const unmount = (): void => {
    try {
      execFileSync('umount', [`${base}/m`]);
    } catch {
      // already gone
    }
  };
  after(unmount);
  t.after(unmount);
  const inside = join(base, 'm');

  await mkdir(join(inside, 'req'));
  await assert.rejects(run([rootfs], ['true'], { dir: join(inside, 'req'), overlay: 'require' }), (e: unknown) => {
    assert.ok(e instanceof OverlayUnavailableError);
    assert.match(e.message, /overlayfs is not usable: the build directory .* is itself on overlayfs/);
    assert.match(e.hint ?? '', /real filesystem/);
    return true;
  });

  await mkdir(join(inside, 'auto'));
  const r = await run([rootfs], ['echo fallback > /hello', 'rm /etc/motd'], { dir: join(inside, 'auto') });
  assert.equal(r.method, 'copy');
  assert.match(r.warnings[0]!, /overlayfs is not usable: .*; falling back to copying the rootfs/);
  // overlayfs refuses whiteout devices too, so the deletion is an OCI-style marker.
  assert.equal(r.whiteouts, 'wh-files');
  assert.match(r.warnings[1]!, /refuses whiteout devices .*\.wh\.NAME files/);
  assert.equal(r.warnings.length, 2);
  assert.deepEqual(await upperPaths(r.upper), ['etc', 'etc/.wh.motd', 'hello']);
  assert.equal((await stat(join(r.upper, 'etc/.wh.motd'))).size, 0);
  // And a later step (on the same filesystem, so the fallback again) reads that form.
  await mkdir(join(inside, 'second'));
  const second = await run([r.upper, rootfs], ['ls /etc', 'cat /hello'], { dir: join(inside, 'second') });
  assert.equal(second.output, 'group\npasswd\nfallback\n');
});
