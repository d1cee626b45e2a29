// Layer writing, side by side with GNU tar piped into gzip / zstd on the same tree.
//
//   node --import tsx bench/layer-write.ts [DIR ...] [--runs N]
//
// For each DIR (default /usr/share/locale): ocibuild walks the tree (lstat, hard links
// by dev+ino), writes the deterministic tar, hashes it, compresses it and stores the
// blob (fsynced) in a temporary store; the reference is `tar --sort=name -C DIR -cf - .
// | gzip -6` (resp. `| zstd -T0 -3`) written to a file on the same filesystem. The page
// cache is warmed first; each figure is the median of --runs runs (default 3).
// Throughput is the uncompressed tar size over wall time. xattrs are not read here
// (Node has no xattr API); the layer writer's cost for them is nil on this tree.
import { spawnSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { lstat, mkdtemp, readdir, readlink, rm } from 'node:fs/promises';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LayerEntry } from '../src/layer/entry.js';
import type { Compression } from '../src/layer/compress.js';
import { writeLayer } from '../src/layer/write-layer.js';
import { Store } from '../src/store/store.js';

const SOURCE_DATE_EPOCH = 1_700_000_000;

async function walk(root: string): Promise<LayerEntry[]> {
  const out: LayerEntry[] = [];
  const inodes = new Map<string, string>();
  async function visit(rel: string): Promise<void> {
    const names = await readdir(join(root, rel));
    for (const name of names) {
      const path = rel ? `${rel}/${name}` : name;
      const abs = join(root, path);
      const st = await lstat(abs);
      const meta = { path, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: Math.floor(st.mtimeMs / 1000) };
      if (st.isDirectory()) {
        out.push({ type: 'directory', ...meta });
        await visit(path);
      } else if (st.isSymbolicLink()) {
        out.push({ type: 'symlink', ...meta, target: await readlink(abs) });
      } else if (st.isFile()) {
        const id = `${st.dev}:${st.ino}`;
        const first = st.nlink > 1 ? inodes.get(id) : undefined;
        if (first !== undefined) out.push({ type: 'hardlink', ...meta, target: first });
        else {
          if (st.nlink > 1) inodes.set(id, path);
          out.push({ type: 'file', ...meta, size: st.size, content: () => createReadStream(abs) });
        }
      }
    }
  }
  await visit('');
  return out;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function sh(script: string): void {
  const r = spawnSync('bash', ['-c', `set -o pipefail; ${script}`], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.error || r.status !== 0) throw new Error(`failed: ${script}`);
}

function sizeOf(file: string): number {
  const r = spawnSync('stat', ['-c', '%s', file]);
  return Number(r.stdout.toString().trim());
}

interface Row {
  what: string;
  seconds: number;
  compressed: number;
}

async function benchDir(dir: string, runs: number, work: string): Promise<void> {
  sh(`tar --sort=name -C '${dir}' -cf - . > /dev/null`); // warm the page cache
  sh(`tar --sort=name -C '${dir}' -cf '${work}/ref.tar' .`);
  const refTar = sizeOf(`${work}/ref.tar`);
  await rm(`${work}/ref.tar`);

  let tarSize = 0;
  const ours = async (compression: Compression): Promise<Row> => {
    const times: number[] = [];
    let size = 0;
    for (let i = 0; i < runs; i++) {
      const storeDir = await mkdtemp(join(work, 'store-'));
      const t0 = process.hrtime.bigint();
      const entries = await walk(dir);
      const layer = await writeLayer(entries, { store: new Store(storeDir), compression, sourceDateEpoch: SOURCE_DATE_EPOCH });
      times.push(Number(process.hrtime.bigint() - t0) / 1e9);
      size = layer.size;
      if (compression === 'none') tarSize = layer.size;
      await rm(storeDir, { recursive: true });
    }
    return { what: `ocibuild ${compression}`, seconds: median(times), compressed: size };
  };
  const theirs = (what: string, pipe: string): Row => {
    const times: number[] = [];
    const out = `${work}/out`;
    for (let i = 0; i < runs; i++) {
      const t0 = process.hrtime.bigint();
      sh(`tar --sort=name -C '${dir}' -cf - . ${pipe} > '${out}' && sync '${out}'`);
      times.push(Number(process.hrtime.bigint() - t0) / 1e9);
    }
    const compressed = sizeOf(out);
    return { what, seconds: median(times), compressed };
  };

  const rows: Row[] = [];
  rows.push(await ours('none'));
  rows.push(theirs('tar', ''));
  rows.push(await ours('gzip'));
  rows.push(theirs('tar | gzip -6', '| gzip -6'));
  rows.push(await ours('zstd'));
  rows.push(theirs('tar | zstd -T0 -3', '| zstd -q -T0 -3'));

  const mb = tarSize / 1e6;
  console.log(`\n${dir}: ocibuild tar ${(tarSize / 1e6).toFixed(1)} MB, GNU tar ${(refTar / 1e6).toFixed(1)} MB; median of ${runs}`);
  console.log('| | time | MB/s | compressed/tar | vs. reference |');
  console.log('|---|---|---|---|---|');
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i]!;
    const ref = i % 2 === 0 ? rows[i + 1]! : undefined;
    const vs = ref ? `${((ref.seconds / r.seconds) * 100).toFixed(0)}% of its speed` : '';
    console.log(`| ${r.what} | ${r.seconds.toFixed(2)} s | ${(mb / r.seconds).toFixed(1)} | ${(r.compressed / tarSize).toFixed(3)} | ${vs} |`);
  }
}

const args = process.argv.slice(2);
let runs = 3;
const dirs: string[] = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--runs') runs = Number(args[++i]);
  else dirs.push(args[i]!);
}
if (dirs.length === 0) dirs.push('/usr/share/locale');
console.log(`Node ${process.version}, ${availableParallelism()} CPUs (${cpus()[0]?.model ?? '?'}), ${new Date().toISOString()}`);
const work = await mkdtemp(join(tmpdir(), 'ocibuild-bench-layer-'));
try {
  for (const d of dirs) await benchDir(d, runs, work);
} finally {
  await rm(work, { recursive: true, force: true });
}
