// xz decoding throughput: the native/ decoder on the system liblzma (what
// src/deb/decompress.ts uses for data.tar.xz when it is built) and lzma-native (the
// fallback) against the `xz -dc` CLI on the same real data.tar.xz, plus the whole
// readDeb walk (with either decoder), four walks at once, and `dpkg-deb --fsys-tarfile`
// on a .deb holding it.
//
//   npm run build:native
//   node --import tsx bench/xz-decode.ts [--runs N] [--write-results]
//
// --write-results appends a dated "xz decoding, native" section to bench/RESULTS.md
// (or replaces the one of the same day).
// Needs tar, xz-utils and dpkg (Debian packages). The input is made once in
// bench/work/ (git-ignored): a tar of a few /usr/share trees (text, scripts, images,
// ~80 MB), compressed with `xz -6 -T1` as dpkg-deb's default preset does.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { createReadStream, existsSync } from 'node:fs';
import { appendFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { pipeline } from 'node:stream/promises';
import { readDeb } from '../src/deb/deb.js';
import { createLzmaNativeDecoder, nativeXz, NativeXzStream } from '../src/deb/xz.js';

const WORK = join(import.meta.dirname, 'work');
const TAR_XZ = join(WORK, 'data.tar.xz');
const DEB = join(WORK, 'xz-bench.deb');
const TREES = ['usr/share/perl', 'usr/share/vim', 'usr/share/icons'];

function sh(cmd: string): void {
  const r = spawnSync('sh', ['-c', cmd], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.error || r.status !== 0) throw new Error(`failed: ${cmd}`);
}

function arMember(name: string, data: Buffer): Buffer[] {
  const h = Buffer.alloc(60, 0x20);
  h.write(name, 0, 'latin1');
  h.write('0', 16, 'latin1');
  h.write('0', 28, 'latin1');
  h.write('0', 34, 'latin1');
  h.write('100644', 40, 'latin1');
  h.write(String(data.length), 48, 'latin1');
  h.write('`\n', 58, 'latin1');
  return data.length % 2 ? [h, data, Buffer.from('\n')] : [h, data];
}

async function prepare(): Promise<void> {
  await mkdir(WORK, { recursive: true });
  if (!existsSync(TAR_XZ)) {
    const present = TREES.filter((t) => existsSync(`/${t}`));
    console.error(`making ${TAR_XZ} from ${present.join(' ')} ...`);
    sh(`tar -C / -c --sort=name ${present.join(' ')} | xz -6 -T1 > ${TAR_XZ}.tmp && mv ${TAR_XZ}.tmp ${TAR_XZ}`);
  }
  if (!existsSync(DEB)) {
    // A .deb around the same data.tar.xz: a minimal control.tar.gz built by tar itself.
    sh(`d=$(mktemp -d) && printf 'Package: xz-bench\\nVersion: 1\\nArchitecture: all\\nMaintainer: bench <b@example.invalid>\\nDescription: xz bench\\n' > $d/control && tar -C $d -czf ${WORK}/control.tar.gz ./control && rm -r $d`);
    const control = await readFile(join(WORK, 'control.tar.gz'));
    // The .deb copies the data member; it is made once and kept in bench/work.
    const data = await readFile(TAR_XZ);
    await writeFile(DEB, Buffer.concat([Buffer.from('!<arch>\n'), ...arMember('debian-binary', Buffer.from('2.0\n')), ...arMember('control.tar.gz', control), ...arMember('data.tar.xz', data)]));
  }
}

interface Timing { wall: number; cpu: number }

/** Wall and CPU time (user + sys of the command, from bash's `time`) of a shell
 *  command whose output goes to /dev/null. CPU time is what stays comparable when
 *  other jobs share the machine. */
function timeShell(command: string): Timing {
  const start = process.hrtime.bigint();
  const r = spawnSync('bash', ['-c', `TIMEFORMAT='%U %S'; time (${command} > /dev/null)`], { encoding: 'utf8' });
  const wall = Number(process.hrtime.bigint() - start) / 1e6;
  if (r.error || r.status !== 0) throw new Error(`failed: ${command}: ${r.stderr}`);
  const [user, sys] = r.stderr.trim().split('\n').pop()!.split(' ').map(Number);
  return { wall, cpu: (user! + sys!) * 1000 };
}

/** The garbage collector, callable without --expose-gc on the command line. */
const gc = ((): (() => void) => {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
})();

/** Wall and CPU time of an in-process run; process.cpuUsage counts every thread of
 *  the process, so the libuv threads the decoders run on are included. The heap is
 *  collected before (the previous contender's garbage is not this one's cost) and at
 *  the end, timed (this one's garbage is: a process like `xz` frees it at exit). */
async function timeInProcess(run: () => Promise<void>): Promise<Timing> {
  gc();
  const start = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  await run();
  gc();
  const cpu = process.cpuUsage(cpu0);
  return { wall: Number(process.hrtime.bigint() - start) / 1e6, cpu: (cpu.user + cpu.system) / 1000 };
}

let tarBytes = 0;
let fileBytes = 0;
let entries = 0;

async function decodeWith(name: string, decoder: () => NodeJS.ReadWriteStream): Promise<void> {
  let bytes = 0;
  const sink = new Writable({ write(chunk: Buffer, _enc, cb) { bytes += chunk.length; cb(); } });
  await pipeline(createReadStream(TAR_XZ, { highWaterMark: 1 << 20 }), decoder(), sink);
  if (tarBytes !== 0 && bytes !== tarBytes) throw new Error(`${name} gave ${bytes} bytes, xz ${tarBytes}`);
}

function nativeDecoder(): NodeJS.ReadWriteStream {
  const addon = nativeXz();
  if (!addon) throw new Error('the native addon is not built: npm run build:native');
  return new NativeXzStream(addon);
}

const lzmaNative = (): Promise<void> => decodeWith('lzma-native', createLzmaNativeDecoder);
const native = (): Promise<void> => decodeWith('native', nativeDecoder);

async function walkDeb(): Promise<void> {
  let files = 0;
  let count = 0;
  await readDeb(DEB, 'xz-bench.deb', async (_e, body) => {
    count++;
    for await (const c of body) files += (c as Buffer).length;
  });
  fileBytes = files;
  entries = count;
}

/** The walk with lzma-native: a child process with OCIBUILD_SKIP_NATIVE=1 (the
 *  decoder is chosen once per process), timed inside after one warm-up walk. */
function walkDebLzmaNative(): Timing {
  const r = spawnSync(process.execPath, ['--import', 'tsx', import.meta.filename, '--child-walk'], {
    env: { ...process.env, OCIBUILD_SKIP_NATIVE: '1' },
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`child walk failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Timing;
}

/** Four walks of the .deb at once, as src/build/apt-layer.ts reads up to 4 .debs. */
async function fourWalks(): Promise<void> {
  await Promise.all([walkDeb(), walkDeb(), walkDeb(), walkDeb()]);
}

/** The system liblzma in-process, without Node: python3's lzma module, timed inside
 *  Python (interpreter start-up excluded). What a native/ addon on the system liblzma
 *  could reach; undefined when python3 is missing (it is only a reference). */
function pythonLzma(): Timing | undefined {
  const script = [
    'import lzma, sys, time',
    't = time.perf_counter(); c = time.process_time(); d = lzma.LZMADecompressor()',
    'f = open(sys.argv[1], "rb")',
    'while True:',
    '    b = f.read(1 << 20)',
    '    if not b: break',
    '    d.decompress(b)',
    'print((time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000)',
  ].join('\n');
  const r = spawnSync('python3', ['-c', script, TAR_XZ], { encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  const [wall, cpu] = r.stdout.trim().split(' ').map(Number);
  return { wall: wall!, cpu: cpu! };
}

/** The liblzma lzma-native carries (its prebuilt binary links its own copy statically). */
function lzmaNativeLiblzma(): string {
  const lzma = createRequire(import.meta.url)('lzma-native') as { versionString(): string };
  return lzma.versionString();
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Replaces the section with this heading in bench/RESULTS.md, or appends it; the
 *  file is re-read just before writing because other benchmarks add their own sections. */
async function writeSection(heading: string, section: string): Promise<void> {
  const file = join(import.meta.dirname, 'RESULTS.md');
  const text = await readFile(file, 'utf8');
  const at = text.indexOf(`\n${heading}\n`);
  if (at === -1) {
    await appendFile(file, section);
    return;
  }
  // The generated part ends at the next heading; hand-written '###' notes below it stay.
  const ends = ['\n## ', '\n### '].map((h) => text.indexOf(h, at + 1)).filter((i) => i !== -1);
  const next = ends.length ? Math.min(...ends) : -1;
  await writeFile(file, text.slice(0, at) + section + (next === -1 ? '' : text.slice(next)));
}

function uptime(): string {
  return spawnSync('uptime', { encoding: 'utf8' }).stdout.trim().replace(/^.*load average: /, '');
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args.includes('--child-walk')) {
    await walkDeb(); // warm-up: the module, JIT and page cache
    process.stdout.write(JSON.stringify(await timeInProcess(walkDeb)));
    return;
  }
  const runsAt = args.indexOf('--runs');
  const runs = runsAt === -1 ? 5 : Number(args[runsAt + 1]);
  const write = args.includes('--write-results');
  if (!nativeXz()) throw new Error('the native addon is not built: npm run build:native');
  await prepare();
  const loadBefore = uptime();

  const compressed = (await stat(TAR_XZ)).size;
  tarBytes = Number(spawnSync('sh', ['-c', `xz -dc ${TAR_XZ} | wc -c`], { encoding: 'utf8' }).stdout.trim());
  // Warm the page cache and the modules, and check the byte counts.
  await native();
  await lzmaNative();
  await walkDeb();

  const names = ['xz', 'native', 'lzma', 'readDeb', 'readDebLzma', 'dpkg', 'python', 'xz4', 'readDeb4'] as const;
  const rows = Object.fromEntries(names.map((n) => [n, [] as Timing[]])) as Record<(typeof names)[number], Timing[]>;
  const show = (t: Timing | undefined): string => (t ? `${t.wall.toFixed(0)}/${t.cpu.toFixed(0)}` : '-');
  // Interleaved so that a change in machine load hits every contender alike.
  for (let i = 0; i < runs; i++) {
    rows.xz.push(timeShell(`xz -dc ${TAR_XZ}`));
    rows.native.push(await timeInProcess(native));
    rows.lzma.push(await timeInProcess(lzmaNative));
    rows.readDeb.push(await timeInProcess(walkDeb));
    rows.readDebLzma.push(walkDebLzmaNative());
    rows.dpkg.push(timeShell(`dpkg-deb --fsys-tarfile ${DEB}`));
    const p = pythonLzma();
    if (p) rows.python.push(p);
    rows.xz4.push(timeShell(`for i in 1 2 3 4; do xz -dc ${TAR_XZ} > /dev/null & done; wait`));
    rows.readDeb4.push(await timeInProcess(fourWalks));
    console.error(`run ${i + 1}/${runs} (wall/cpu ms): ${names.map((n) => `${n} ${show(rows[n][i])}`).join(', ')}`);
  }

  const mb = tarBytes / 1e6;
  const med = (ts: Timing[]): Timing => ({ wall: median(ts.map((t) => t.wall)), cpu: median(ts.map((t) => t.cpu)) });
  const pct = (base: number, ms: number): string => `${Math.round((base / ms) * 100)} %`;
  const line = (what: string, ts: Timing[], ref: Timing[] = rows.xz, scale = 1): string => {
    const t = med(ts);
    const r = med(ref);
    return `| ${what} | ${t.wall.toFixed(0)} ms | ${pct(r.wall, t.wall)} | ${t.cpu.toFixed(0)} ms | ${((mb * scale) / (t.cpu / 1000)).toFixed(1)} MB/s | ${pct(r.cpu, t.cpu)} |`;
  };
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const ratio = (ts: Timing[]): number => Math.round((med(rows.xz).cpu / med(ts).cpu) * 100);
  // The median of per-run ratios: each run's `xz -dc` and decoder ran seconds apart, so
  // this moves less with the machine's load than the ratio of the medians.
  const paired = (ts: Timing[]): number => Math.round(median(ts.map((t, i) => rows.xz[i]!.cpu / t.cpu)) * 100);
  const xzVersion = spawnSync('xz', ['--version']).stdout.toString().split('\n')[0]!.split(' ').pop() ?? '?';
  const date = new Date().toISOString();
  const heading = `## xz decoding, native (${date.slice(0, 10)})`;
  const section = [
    '',
    heading,
    '',
    '`npm run build:native && node --import tsx bench/xz-decode.ts --runs N --write-results` — the data.tar.xz of the',
    `"xz decoding" section above, made from ${TREES.map((t) => `/${t}`).join(', ')} (${mb.toFixed(1)} MB of tar, ${(compressed / 1e6).toFixed(1)} MB xz,`,
    `\`xz -6 -T1\`, ${entries} entries with ${(fileBytes / 1e6).toFixed(1)} MB of file data); median of ${runs} interleaved runs.`,
    `Machine: ${cpus().length} CPUs, ${cpu}, Node ${process.version}, ${date.slice(0, 16)}Z. Shared with other jobs: \`uptime\``,
    `load averages (1, 5, 15 min) ${loadBefore} at the start, ${uptime()} at the end, so wall times`,
    'are noisy; CPU time (user + sys, all threads: the decoders run on libuv\'s pool) is the comparable',
    'figure. MB/s is uncompressed tar per CPU second.',
    '',
    '| | wall | of `xz -dc` | CPU | MB/s (CPU) | of `xz -dc` (CPU) |',
    '|---|---|---|---|---|---|',
    line(`\`xz -dc\` (xz-utils ${xzVersion})`, rows.xz),
    line(`**native/ decoder** (\`NativeXzStream\`: the system liblzma ${nativeXz()!.liblzmaVersion}, 1 MiB jobs on libuv's pool, 2 MiB huge-page output blocks)`, rows.native),
    line(`lzma-native \`createDecompressor({ bufsize: 1 MiB })\` (its own liblzma ${lzmaNativeLiblzma()}; the fallback)`, rows.lzma),
    line('`readDeb` full walk, native decoder: ar + xz + tar-stream, every body read (src/deb/deb.ts)', rows.readDeb),
    line('`readDeb` full walk, lzma-native (`OCIBUILD_SKIP_NATIVE=1`)', rows.readDebLzma),
    line('`dpkg-deb --fsys-tarfile` (C, the system liblzma, ar + xz to a pipe)', rows.dpkg),
    ...(rows.python.length ? [line(`python3 \`lzma\`: the system liblzma ${xzVersion} in-process`, rows.python)] : []),
    '',
    'Four at once (what `src/build/apt-layer.ts` does with up to 4 .debs), against four `xz -dc` run in parallel;',
    'MB/s counts the four tars:',
    '',
    '| | wall | of 4 × `xz -dc` | CPU | MB/s (CPU) | of 4 × `xz -dc` (CPU) |',
    '|---|---|---|---|---|---|',
    line('4 × `xz -dc` in parallel', rows.xz4, rows.xz4, 4),
    line('4 × `readDeb` walk at once, native decoder', rows.readDeb4, rows.xz4, 4),
    '',
    `Target (issue 3): xz decoding within 90 % of \`xz -dc\`. Native decoder: ${ratio(rows.native)} % of its CPU throughput (median of`,
    `per-run ratios: ${paired(rows.native)} %) — ${Math.min(ratio(rows.native), paired(rows.native)) >= 90 ? 'met' : 'not met'}. lzma-native: ${ratio(rows.lzma)} % (${paired(rows.lzma)} %). Whole readDeb walk:`,
    `${ratio(rows.readDeb)} % (${paired(rows.readDeb)} %) with the native decoder, ${ratio(rows.readDebLzma)} % (${paired(rows.readDebLzma)} %) with lzma-native.`,
    '',
  ].join('\n');
  process.stdout.write(section + '\n');
  if (write) {
    await writeSection(heading, section);
    console.error(`wrote the "${heading.slice(3)}" section of bench/RESULTS.md`);
  }
}

await main();
