// Run by test/sandbox/run-userns.test.ts as an unprivileged user (setpriv --reuid):
// builds its own busybox rootfs and runs RUN steps without root, printing one JSON
// object per step on stdout. Argument: a scratch directory this user owns, and
// "overlay" or "copy".
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { runStep, StepFailedError } from '../../src/sandbox/run-step.js';
import { makeBusyboxRootfs, upperPaths } from './run-support.js';

const [dir, method] = process.argv.slice(2) as [string, 'overlay' | 'copy'];
const rootfs = join(dir, 'rootfs');
await makeBusyboxRootfs(rootfs, { uid: process.getuid!(), gid: process.getgid!() });
let n = 0;

async function step(name: string, run: string[], extra: { user?: string } = {}): Promise<void> {
  const d = join(dir, `step-${n++}`);
  await mkdir(d);
  let output = '';
  const warnings: string[] = [];
  try {
    const r = await runStep({
      lowers: [rootfs],
      dir: d,
      run,
      sourceDateEpoch: 1_700_000_000,
      sandbox: 'bwrap',
      overlay: method === 'copy' ? 'copy' : 'require',
      onOutput: (c) => (output += c.toString()),
      warn: (w) => warnings.push(w),
      ...extra,
    });
    console.log(JSON.stringify({ name, output, method: r.method, upper: r.upper, paths: await upperPaths(r.upper), warnings }));
  } catch (err) {
    const e = err as StepFailedError;
    console.log(JSON.stringify({ name, output, error: e.message, stepExitCode: e.stepExitCode ?? null, warnings }));
  }
}

await step('write', ['echo new > /hello', 'rm /srv/data/drop.txt', 'rm -rf /etc', 'mkdir /etc', 'echo x > /etc/hosts', 'id -u']);
await step('user', ['id -u; id -g', 'echo mine > /home/app/file'], { user: 'app' });
await step('network', ['ip -o link show | cut -d: -f2 | tr -d " "']);
await step('exit', ['echo before', 'exit 3']);
