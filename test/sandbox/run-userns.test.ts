// RUN steps without root: overlayfs mounted inside a user namespace (`userxattr`),
// bwrap inside it, and the copy fallback. The test runner is root, so the steps run in
// a child process switched to uid/gid 65534 with setpriv.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { chmod, chown, lstat, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { scratchDirs } from '../support/scratch.js';

const NOBODY = 65534;
const scratch = await scratchDirs('run-userns');

interface StepReport {
  name: string;
  output: string;
  method?: string;
  upper?: string;
  paths?: string[];
  warnings: string[];
  error?: string;
  stepExitCode?: number | null;
}

async function asNobody(method: 'overlay' | 'copy'): Promise<Map<string, StepReport>> {
  const dir = await scratch(method);
  // The scratch root is 0700 root; the unprivileged child must reach its own directory.
  for (let d = dir; d !== '/' && d.includes('ocibuild-run-userns'); d = join(d, '..')) await chmod(d, 0o755);
  await chown(dir, NOBODY, NOBODY);
  const out = await new Promise<string>((resolve, reject) =>
    execFile(
      'setpriv',
      [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--', process.execPath, '--import', 'tsx', join(import.meta.dirname, 'run-userns-child.ts'), dir, method],
      { cwd: join(import.meta.dirname, '../..'), env: { PATH: process.env.PATH, HOME: dir }, maxBuffer: 1 << 24 },
      (err, stdout, stderr) => (err ? reject(new Error(`the unprivileged child failed: ${err.message}\n${stderr}`)) : resolve(stdout)),
    ),
  );
  const reports = out.trim().split('\n').map((l) => JSON.parse(l) as StepReport);
  return new Map(reports.map((r) => [r.name, r]));
}

test('without root: overlayfs in a user namespace, changes in the upper directory owned by the caller', async () => {
  const r = await asNobody('overlay');
  const write = r.get('write')!;
  assert.equal(write.error, undefined, write.error);
  assert.equal(write.method, 'overlay');
  assert.equal(write.output, '0\n', 'root inside the namespace');
  assert.deepEqual(write.paths, ['etc', 'etc/hosts', 'hello', 'srv', 'srv/data', 'srv/data/drop.txt (whiteout)']);
  // userxattr: overlayfs marks the recreated directory with user.overlay.opaque.
  const attrs = execFileSync('getfattr', ['--absolute-names', '-d', '-m', '-', join(write.upper!, 'etc')]).toString();
  assert.match(attrs, /user\.overlay\.opaque="y"/);
  assert.doesNotMatch(attrs, /trusted\./);
  assert.equal((await stat(join(write.upper!, 'hello'))).uid, NOBODY);

  const user = r.get('user')!;
  assert.equal(user.error, undefined, user.error);
  assert.equal(user.output, '1000\n1000\n', 'the step sees uid 1000');
  assert.deepEqual(user.paths, ['home', 'home/app', 'home/app/file']);
  assert.equal((await lstat(join(user.upper!, 'home/app/file'))).uid, NOBODY, 'but writes as the one mapped id, the caller');

  assert.equal(r.get('network')!.output, 'lo\n');
  const exit = r.get('exit')!;
  assert.equal(exit.stepExitCode, 3);
  assert.match(exit.error!, /exit code 3; its last output:\n  \| before$/);
});

test('without root: the copy fallback gives the same changes', async () => {
  const r = await asNobody('copy');
  const write = r.get('write')!;
  assert.equal(write.error, undefined, write.error);
  assert.equal(write.method, 'copy');
  // The recreated /etc is written as a directory whose old entries are whited out.
  assert.deepEqual(write.paths, ['etc', 'etc/group (whiteout)', 'etc/hosts', 'etc/motd (whiteout)', 'etc/passwd (whiteout)', 'hello', 'srv', 'srv/data', 'srv/data/drop.txt (whiteout)']);
  assert.equal((await lstat(join(write.upper!, 'srv/data/drop.txt'))).rdev, 0);
  assert.equal(r.get('user')!.output, '1000\n1000\n');
  assert.equal(r.get('network')!.output, 'lo\n');
  assert.equal(r.get('exit')!.stepExitCode, 3);
  assert.deepEqual((await readdir(join(write.upper!, '..'))).sort(), ['upper'], 'the copy is gone');
});
