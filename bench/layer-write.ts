// Layer writing, side by side with GNU tar piped into gzip / zstd on the same tree.
//
//   node --import tsx bench/layer-write.ts [DIR ...] [--runs N] [--kinds none,gzip,zstd]
//
// For each DIR (default /usr/share/locale): ocibuild walks the tree (src/layer/tree.ts:
// lstat, hard links by dev+ino, in a worker thread), writes the deterministic tar (file
// contents read by the tar packer's worker), hashes it, compresses it and stores the
// blob (fsynced) in a temporary store; the reference is `tar --sort=name -C DIR -cf - .
// | gzip -6` (resp. `| zstd -T0 -3`) written to a file on the same filesystem. The page
// cache is warmed first; each figure is the median of --runs runs (default 3).
// Throughput is the uncompressed tar size over wall time. CPU is user + system time of
// every thread (ocibuild: this process, worker threads included; reference: the shell
// and the tar, gzip/zstd and sync it waited for), the figure to compare on a machine
// shared with other jobs. xattrs are not read here
// (Node has no xattr API); the layer writer's cost for them is nil on this tree.
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Compression } from '../src/layer/compress.js';
import { walkTree } from '../src/layer/tree.js';
import { writeLayer } from '../src/layer/write-layer.js';
import { Store } from '../src/store/store.js';

const SOURCE_DATE_EPOCH = 1_700_000_000;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function sh(script: string): void {
  const r = spawnSync('bash', ['-c', `set -o pipefail; ${script}`], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.error || r.status !== 0) throw new Error(`failed: ${script}`);
}

/** Runs `script` under /usr/bin/time: [wall, user + system of it and its children]. */
function timed(script: string): [number, number] {
  const r = spawnSync('/usr/bin/time', ['-f', '%e %U %S', 'bash', '-c', `set -o pipefail; ${script}`], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const last = r.stderr.toString().trim().split('\n').pop() ?? '';
  const [wall, user, sys] = last.split(' ').map(Number);
  if (r.error || r.status !== 0 || wall === undefined || user === undefined || sys === undefined) {
    throw new Error(`failed: ${script}: ${r.stderr.toString()}`);
  }
  return [wall, user + sys];
}

function sizeOf(file: string): number {
  const r = spawnSync('stat', ['-c', '%s', file]);
  return Number(r.stdout.toString().trim());
}

interface Row {
  what: string;
  seconds: number;
  cpu: number;
  compressed: number;
}

/** User + system seconds of this process, all threads. */
function ownCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function benchDir(dir: string, runs: number, kinds: string[], work: string): Promise<void> {
  sh(`tar --sort=name -C '${dir}' -cf - . > /dev/null`); // warm the page cache
  sh(`tar --sort=name -C '${dir}' -cf '${work}/ref.tar' .`);
  const refTar = sizeOf(`${work}/ref.tar`);
  await rm(`${work}/ref.tar`);

  let tarSize = 0;
  const ours = async (compression: Compression): Promise<Row> => {
    const times: number[] = [];
    const cpu: number[] = [];
    let size = 0;
    for (let i = 0; i < runs; i++) {
      const storeDir = await mkdtemp(join(work, 'store-'));
      const c0 = ownCpu();
      const t0 = process.hrtime.bigint();
      const entries = await walkTree(dir);
      const layer = await writeLayer(entries, { store: new Store(storeDir), compression, sourceDateEpoch: SOURCE_DATE_EPOCH });
      times.push(Number(process.hrtime.bigint() - t0) / 1e9);
      cpu.push(ownCpu() - c0);
      size = layer.size;
      if (compression === 'none') tarSize = layer.size;
      await rm(storeDir, { recursive: true });
    }
    return { what: `ocibuild ${compression}`, seconds: median(times), cpu: median(cpu), compressed: size };
  };
  const theirs = (what: string, pipe: string): Row => {
    const times: number[] = [];
    const cpu: number[] = [];
    const out = `${work}/out`;
    for (let i = 0; i < runs; i++) {
      const [wall, used] = timed(`tar --sort=name -C '${dir}' -cf - . ${pipe} > '${out}' && sync '${out}'`);
      times.push(wall);
      cpu.push(used);
    }
    const compressed = sizeOf(out);
    return { what, seconds: median(times), cpu: median(cpu), compressed };
  };

  const rows: Row[] = [];
  // 'none' always runs: its size is the tar size the MB/s figures divide.
  rows.push(await ours('none'));
  rows.push(theirs('tar', ''));
  if (kinds.includes('gzip')) {
    rows.push(await ours('gzip'));
    rows.push(theirs('tar | gzip -6', '| gzip -6'));
  }
  if (kinds.includes('zstd')) {
    rows.push(await ours('zstd'));
    rows.push(theirs('tar | zstd -T0 -3', '| zstd -q -T0 -3'));
  }

  const mb = tarSize / 1e6;
  console.log(`\n${dir}: ocibuild tar ${(tarSize / 1e6).toFixed(1)} MB, GNU tar ${(refTar / 1e6).toFixed(1)} MB; median of ${runs}`);
  console.log('| | wall | MB/s | CPU | compressed/tar | of the reference, wall | of the reference, CPU |');
  console.log('|---|---|---|---|---|---|---|');
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i]!;
    const ref = i % 2 === 0 ? rows[i + 1]! : undefined;
    const wall = ref ? `${((ref.seconds / r.seconds) * 100).toFixed(0)} %` : '';
    const cpu = ref ? `${((ref.cpu / r.cpu) * 100).toFixed(0)} %` : '';
    const name = r.what.replaceAll('|', '\\|');
    console.log(
      `| ${name} | ${r.seconds.toFixed(2)} s | ${(mb / r.seconds).toFixed(1)} | ${r.cpu.toFixed(2)} s | ${(r.compressed / tarSize).toFixed(3)} | ${wall} | ${cpu} |`,
    );
  }
}

const args = process.argv.slice(2);
let runs = 3;
let kinds = ['none', 'gzip', 'zstd'];
const dirs: string[] = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--runs') runs = Number(args[++i]);
  else if (args[i] === '--kinds') kinds = args[++i]!.split(',');
  else dirs.push(args[i]!);
}
if (dirs.length === 0) dirs.push('/usr/share/locale');
console.log(`Node ${process.version}, ${availableParallelism()} CPUs (${cpus()[0]?.model ?? '?'}), ${new Date().toISOString()}, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
const work = await mkdtemp(join(tmpdir(), 'ocibuild-bench-layer-'));
try {
  for (const d of dirs) await benchDir(d, runs, kinds, work);
  console.log(`\nload average at the end: ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
} finally {
  await rm(work, { recursive: true, force: true });
}
