// The semantics every sandbox backend (and the copy fallback) must give a RUN step,
// checked against a real busybox rootfs with the real bwrap / systemd-nspawn.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { chmod, chown, mkdir, readdir, readFile, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { runStep, StepFailedError, type RunStepOptions } from '../../src/sandbox/run-step.js';
import { scratchDirs } from '../support/scratch.js';
import { listTree, makeBusyboxRootfs, processesWithMarker, upperPaths } from './run-support.js';

const EPOCH = 1_700_000_000;

export interface SuiteOptions {
  sandbox: 'bwrap' | 'nspawn';
  overlay: 'require' | 'copy';
}

export async function backendSuite(s: SuiteOptions): Promise<void> {
  const label = `${s.sandbox}${s.overlay === 'copy' ? ' (copy fallback)' : ''}`;
  const scratch = await scratchDirs(`run-${s.sandbox}-${s.overlay}`);
  let rootfs: string;
  let server: Server;
  let port: number;

  before(async () => {
    rootfs = join(await scratch('rootfs'), 'root');
    await makeBusyboxRootfs(rootfs);
    server = createServer((_req, res) => res.end('hello from the host\n'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  async function step(run: string[], extra: Partial<RunStepOptions> = {}): Promise<{ upper: string; output: string; dir: string }> {
    const dir = await scratch('step');
    let output = '';
    const r = await runStep({
      lowers: [rootfs],
      dir,
      run,
      sourceDateEpoch: EPOCH,
      sandbox: s.sandbox,
      overlay: s.overlay,
      onOutput: (c) => (output += c.toString()),
      ...extra,
    });
    assert.equal(r.sandbox, s.sandbox);
    assert.equal(r.method, s.overlay === 'copy' ? 'copy' : 'overlay');
    return { upper: r.upper, output, dir };
  }

  async function failing(run: string[], extra: Partial<RunStepOptions> = {}): Promise<{ err: StepFailedError; dir: string; output: string }> {
    const dir = await scratch('failing');
    let output = '';
    const err = await runStep({ lowers: [rootfs], dir, run, sourceDateEpoch: EPOCH, sandbox: s.sandbox, overlay: s.overlay, onOutput: (c) => (output += c.toString()), ...extra }).then(
      () => assert.fail('the step should have failed'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof StepFailedError, `expected a StepFailedError, got ${String(err)}`);
    return { err, dir, output };
  }

  test(`${label}: what a step writes is in the upper directory only, the lower is unchanged`, async () => {
    const lowerBefore = await listTree(rootfs);
    const { upper, output } = await step([
      'echo new > /hello',
      'echo more >> /etc/motd',
      'rm /srv/data/drop.txt',
      'mkdir -p /opt/tool/bin',
      'echo tool > /opt/tool/bin/run',
      'ln /hello /hello-link',
      'echo scratch > /tmp/x',
      'mkdir -p /run/y',
      'cat /etc/motd',
    ]);
    assert.equal(output, 'welcome\nmore\n');
    assert.deepEqual(await upperPaths(upper), [
      'etc',
      'etc/motd',
      'hello',
      'hello-link',
      'opt',
      'opt/tool',
      'opt/tool/bin',
      'opt/tool/bin/run',
      'srv',
      'srv/data',
      'srv/data/drop.txt (whiteout)',
    ]);
    assert.equal(await readFile(join(upper, 'etc/motd'), 'utf8'), 'welcome\nmore\n');
    const up = await listTree(upper);
    assert.equal(up['hello']!.ino, up['hello-link']!.ino, 'a hard link made by the step stays one');
    assert.deepEqual(await listTree(rootfs), lowerBefore, 'the lower tree is untouched');
  });

  test(`${label}: a directory deleted and recreated hides everything the lower had in it`, async () => {
    const { upper } = await step(['rm -rf /srv/data', 'mkdir /srv/data', 'echo fresh > /srv/data/new.txt']);
    // Judged by what the next step sees through the stack, whatever the upper's format
    // (overlayfs writes an opaque directory, the copy fallback whiteouts).
    const dir = await scratch('stacked');
    let seen = '';
    await runStep({
      lowers: [upper, rootfs],
      dir,
      run: ['ls /srv/data'],
      sourceDateEpoch: EPOCH,
      sandbox: s.sandbox,
      overlay: s.overlay,
      onOutput: (c) => (seen += c.toString()),
    });
    assert.equal(seen, 'new.txt\n');
  });

  test(`${label}: the network is off unless asked for`, async () => {
    // (busybox 1.35's wget crashes with -T; a refused connection needs no timeout.)
    const off = await step(['ip -o link show | cut -d: -f2 | tr -d " "', `if wget -q -O - http://127.0.0.1:${port}/ 2>/dev/null; then echo reached; else echo unreachable; fi`]);
    assert.equal(off.output, 'lo\nunreachable\n');
    const on = await step([`wget -q -O - http://127.0.0.1:${port}/`], { network: true });
    assert.equal(on.output, 'hello from the host\n');
  });

  test(`${label}: /etc/resolv.conf comes from the host only with network, and never reaches the upper directory`, async () => {
    const hostResolv = await readFile('/etc/resolv.conf', 'utf8');
    const off = await step(['if [ -e /etc/resolv.conf ]; then echo present; else echo absent; fi']);
    assert.equal(off.output, 'absent\n');
    const on = await step(['cat /etc/resolv.conf', 'if (echo x >> /etc/resolv.conf) 2>/dev/null; then echo writable; else echo read-only; fi', 'echo > /etc/other'], {
      network: true,
    });
    assert.equal(on.output, `${hostResolv}read-only\n`);
    assert.deepEqual(await upperPaths(on.upper), ['etc', 'etc/other'], 'no resolv.conf mount point in the layer');
  });

  test(`${label}: an image whose resolv.conf is a symlink into /run gets the host's through it`, async () => {
    const img = join(await scratch('resolv-link'), 'top');
    await mkdir(join(img, 'etc'), { recursive: true });
    await symlink('../run/systemd/resolve/stub-resolv.conf', join(img, 'etc/resolv.conf'));
    const dir = await scratch('step');
    let out = '';
    const r = await runStep({ lowers: [img, rootfs], dir, run: ['cat /etc/resolv.conf'], network: true, sourceDateEpoch: EPOCH, sandbox: s.sandbox, overlay: s.overlay, onOutput: (c) => (out += c.toString()) });
    assert.equal(out, await readFile('/etc/resolv.conf', 'utf8'));
    assert.deepEqual(await upperPaths(r.upper), []);
  });

  test(`${label}: Env, WorkingDir and User from the image config; SOURCE_DATE_EPOCH and a fixed hostname`, async () => {
    const { upper, output } = await step(
      [
        'id -u; id -g; id -G',
        'pwd',
        'hostname',
        // The environment the step's programs get, without the shell's own PWD/SHLVL.
        "cat /proc/self/environ | tr '\\0' '\\n' | grep -v -e '^PWD=' -e '^SHLVL=' | sort",
        'echo mine > /home/app/file',
      ],
      { config: { Env: ['GREETING=hello world', 'PATH=/usr/bin:/bin:/usr/sbin:/sbin'], WorkingDir: '/work/dir', User: 'app' }, env: { STEP: '1' } },
    );
    assert.equal(
      output,
      ['1000', '1000', '1000 50', '/work/dir', 'ocibuild', 'GREETING=hello world', 'HOME=/home/app', 'PATH=/usr/bin:/bin:/usr/sbin:/sbin', `SOURCE_DATE_EPOCH=${EPOCH}`, 'STEP=1', ''].join('\n'),
    );
    // The missing working directory existed for the step but is not part of its layer.
    assert.deepEqual(await upperPaths(upper), ['home', 'home/app', 'home/app/file']);
    const st = await stat(join(upper, 'home/app/file'));
    assert.deepEqual([st.uid, st.gid], [1000, 1000], 'written as uid 1000 for real');
  });

  test(`${label}: User as uid:gid with no passwd entry`, async () => {
    const { output } = await step(['id -u; id -g; id -G', 'echo $HOME'], { config: { User: '4321:50' } });
    assert.equal(output, '4321\n50\n50\n/\n');
  });

  test(`${label}: LD_* variables of the image reach the step, not the host's uid-switching helper`, async () => {
    const { output } = await step(['echo "$LD_PRELOAD $LD_LIBRARY_PATH"; id -u'], { config: { Env: ['LD_PRELOAD=/nonexistent/preload.so', 'LD_LIBRARY_PATH=/nonexistent'], User: 'app' } });
    // A loader that saw LD_PRELOAD would have complained ("cannot be preloaded").
    assert.equal(output, '/nonexistent/preload.so /nonexistent\n1000\n');
  });

  test(`${label}: exit 3 fails the step with exit code 3 and the tail of its output, leaving nothing`, async () => {
    const { err, dir } = await failing(['for i in $(seq 1 50); do echo line $i; done', 'echo to stderr >&2', 'exit 3', 'echo never'], { tailLines: 5 });
    assert.equal(err.stepExitCode, 3);
    assert.equal(err.exitCode, 1);
    assert.deepEqual(err.outputTail.slice(-2), ['line 50', 'to stderr']);
    assert.equal(err.outputTail.length, 5);
    assert.match(err.message, /RUN failed with exit code 3; its last output:\n(  \| .*\n){4}  \| to stderr$/);
    assert.deepEqual(await readdir(dir), [], 'no upper, work, scaffold or merged directory left');
  });

  test(`${label}: set -e stops at the first failing line`, async () => {
    const { err, output } = await failing(['echo one', 'false', 'echo two']);
    assert.equal(err.stepExitCode, 1);
    assert.equal(output, 'one\n');
  });

  test(`${label}: bind mounts are visible, read-only unless asked, and absent from the upper directory`, async () => {
    const host = await scratch('host-files');
    await writeFile(join(host, 'token'), 's3cret\n');
    await mkdir(join(host, 'debs'));
    await writeFile(join(host, 'debs/a.deb'), 'not really a deb\n');
    await mkdir(join(host, 'cache'));
    const { upper, output } = await step(
      [
        'cat /run/secrets/token',
        'ls /var/cache/debs',
        'if touch /var/cache/debs/new 2>/dev/null; then echo writable; else echo read-only; fi',
        'if (echo x > /run/secrets/token) 2>/dev/null; then echo writable; else echo read-only; fi',
        'echo cached > /root/.cache/pip/entry',
        'echo done > /done',
      ],
      {
        mounts: [
          { source: join(host, 'token'), target: '/run/secrets/token' },
          { source: join(host, 'debs'), target: '/var/cache/debs' },
          { source: join(host, 'cache'), target: '/root/.cache/pip', readOnly: false },
        ],
      },
    );
    assert.equal(output, 's3cret\na.deb\nread-only\nread-only\n');
    assert.deepEqual(await upperPaths(upper), ['done'], 'no mount point, secret or cache content in the layer');
    assert.equal(await readFile(join(host, 'cache/entry'), 'utf8'), 'cached\n', 'the cache mount kept what the step wrote');
    assert.deepEqual(await readdir(join(host, 'debs')), ['a.deb']);
  });

  test(`${label}: a mount point an earlier layer deleted is made above it, with the image's attributes on its parents`, async () => {
    // An earlier step's upper directory: /srv (0750, 12:34) and a whiteout of /srv/data.
    const earlier = join(await scratch('earlier'), 'upper');
    await mkdir(join(earlier, 'srv'), { recursive: true });
    await chmod(join(earlier, 'srv'), 0o750);
    await chown(join(earlier, 'srv'), 12, 34);
    execFileSync('mknod', [join(earlier, 'srv/data'), 'c', '0', '0']);
    await utimes(join(earlier, 'srv'), 1_600_000_000, 1_600_000_000);
    const host = await scratch('host-dir');
    await writeFile(join(host, 'f'), 'from host\n');
    const dir = await scratch('step');
    let out = '';
    const r = await runStep({
      lowers: [earlier, rootfs],
      dir,
      run: ['ls /srv/data', 'cat /srv/data/in/f', 'echo y > /srv/y'],
      mounts: [{ source: host, target: '/srv/data/in' }],
      sourceDateEpoch: EPOCH,
      sandbox: s.sandbox,
      overlay: s.overlay,
      onOutput: (c) => (out += c.toString()),
    });
    assert.equal(out, 'in\nfrom host\n', 'the deleted directory stays empty but for the mount point');
    assert.deepEqual(await upperPaths(r.upper), ['srv', 'srv/y']);
    const st = await stat(join(r.upper, 'srv'));
    assert.deepEqual([st.mode & 0o7777, st.uid, st.gid], [0o750, 12, 34]);
  });

  test(`${label}: the step sees no host files`, async () => {
    const { output } = await step([`for p in /work /etc/hostname /usr/lib/os-release /root/.npm; do [ -e $p ] && echo "sees $p" || true; done`, 'ls /']);
    assert.doesNotMatch(output, /sees/);
  });

  // The timeout only turns a hang (a sandbox that survives its abort) into a failure.
  test(`${label}: abort kills a sleep 1000 step and everything in it`, { timeout: 120_000 }, async () => {
    const marker = `OCIBUILD_TEST_MARK=${randomBytes(8).toString('hex')}`;
    const ac = new AbortController();
    const dir = await scratch('abort');
    const p = runStep({
      lowers: [rootfs],
      dir,
      run: ['sleep 1000 &', 'echo started', 'sleep 1000'],
      env: { [marker.split('=')[0]!]: marker.split('=')[1]! },
      sourceDateEpoch: EPOCH,
      sandbox: s.sandbox,
      overlay: s.overlay,
      signal: ac.signal,
      onOutput: (c) => {
        if (c.toString().includes('started')) ac.abort();
      },
    });
    await assert.rejects(p, (e: Error) => e.name === 'AbortError');
    assert.deepEqual(await processesWithMarker(marker), [], 'no process of the step is left');
    assert.deepEqual(await readdir(dir), [], 'nothing left in the step directory');
  });
}
