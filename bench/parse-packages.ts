/**
 * Packages parsing: ocibuild's specialised parser vs the debian-control package, on
 * the real Debian bookworm main/binary-amd64 Packages file. Also times the two
 * candidate formats for the parsed-index cache (JSON, v8.serialize, and the columnar
 * interned format ocibuild uses, src/apt/index-cache.ts).
 *
 *   node --import tsx bench/parse-packages.ts
 *
 * The index is downloaded once into bench/work/ (git-ignored).
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { deserialize, serialize } from 'node:v8';
import { decodeIndexCache, encodeIndexCache } from '../src/apt/index-cache.js';
import { fetchBuffer } from '../src/apt/http.js';
import { parsePackages } from '../src/apt/packages-index.js';
import { decompressIndex } from '../src/apt/repository.js';
import type { PackageRecord } from '../src/apt/types.js';

const here = dirname(fileURLToPath(import.meta.url));
const work = join(here, 'work');
const file = join(work, 'bookworm-main-amd64-Packages.xz');
const url = 'http://deb.debian.org/debian/dists/bookworm/main/binary-amd64/Packages.xz';
const RUNS = 5;

interface DebianControl {
  parse(text: string): Record<string, string | string[]>;
  ParagraphStream: new (options?: { readableObjectMode?: boolean }) => NodeJS.ReadWriteStream;
}
const debianControl = createRequire(import.meta.url)('debian-control') as DebianControl;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function time<T>(fn: () => T): { ms: number; value: T } {
  const t0 = process.hrtime.bigint();
  const value = fn();
  return { ms: Number(process.hrtime.bigint() - t0) / 1e6, value };
}

async function timeAsync<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const t0 = process.hrtime.bigint();
  const value = await fn();
  return { ms: Number(process.hrtime.bigint() - t0) / 1e6, value };
}

/** debian-control's parse() per paragraph, mapped to the same PackageRecord shape. */
function toRecord(p: Record<string, string | string[]>): PackageRecord {
  const one = (k: string): string => {
    const v = p[k];
    return v === undefined ? '' : Array.isArray(v) ? v.filter((x) => x !== '').join(' ') : v;
  };
  const ma = one('Multi-Arch');
  return {
    package: one('Package'),
    version: one('Version'),
    architecture: one('Architecture'),
    multiArch: ma === 'same' || ma === 'foreign' || ma === 'allowed' ? ma : 'no',
    essential: one('Essential') === 'yes',
    priority: one('Priority'),
    preDepends: one('Pre-Depends'),
    depends: one('Depends'),
    recommends: one('Recommends'),
    conflicts: one('Conflicts'),
    breaks: one('Breaks'),
    provides: one('Provides'),
    filename: one('Filename'),
    size: Number(one('Size')),
    sha256: one('SHA256'),
    source: one('Source'),
    origin: 0,
  };
}

function debianControlSplit(text: string): PackageRecord[] {
  return text
    .split('\n\n')
    .filter((p) => p.trim() !== '')
    .map((p) => toRecord(debianControl.parse(p)));
}

async function debianControlStream(text: string): Promise<PackageRecord[]> {
  const out: PackageRecord[] = [];
  const stream = Readable.from([Buffer.from(text)]).pipe(new debianControl.ParagraphStream({ readableObjectMode: true }));
  for await (const para of stream as AsyncIterable<Buffer | string>) out.push(toRecord(debianControl.parse(String(para))));
  return out;
}

async function main(): Promise<void> {
  if (!existsSync(file)) {
    await mkdir(work, { recursive: true });
    console.log(`downloading ${url}`);
    await writeFile(file, await fetchBuffer(url));
  }
  const xz = await readFile(file);
  const dec = await timeAsync(() => decompressIndex(Readable.from([xz]), 'xz'));
  const buf = dec.value;
  console.log(`index: ${(xz.length / 1e6).toFixed(1)} MB xz, ${(buf.length / 1e6).toFixed(1)} MB text; xz decode ${dec.ms.toFixed(0)} ms`);

  const ours: number[] = [];
  const split: number[] = [];
  const stream: number[] = [];
  let n = 0;
  let check: PackageRecord[] = [];
  for (let i = 0; i < RUNS; i++) {
    const a = time(() => parsePackages(buf, 0, file));
    ours.push(a.ms);
    n = a.value.length;
    // Both sides start from the decompressed bytes, so decoding is timed on both.
    const b = time(() => debianControlSplit(buf.toString('utf8')));
    split.push(b.ms);
    check = b.value;
  }
  // The streaming (idiomatic) form is far slower; one run is enough to show it.
  const c = await timeAsync(() => debianControlStream(buf.toString('utf8')));
  stream.push(c.ms);
  if (check.length !== n || c.value.length !== n) {
    throw new Error(`record counts differ: ours ${n}, debian-control ${check.length}/${c.value.length}`);
  }

  const records = parsePackages(buf, 0, file);
  const json = Buffer.from(JSON.stringify(records));
  const v8b = serialize(records);
  const jsonLoad: number[] = [];
  const v8Load: number[] = [];
  const jsonSave: number[] = [];
  const v8Save: number[] = [];
  const colb = encodeIndexCache(records);
  const colLoad: number[] = [];
  const colSave: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    colSave.push(time(() => encodeIndexCache(records)).ms);
    colLoad.push(time(() => decodeIndexCache(colb, 0)).ms);
    jsonSave.push(time(() => Buffer.from(JSON.stringify(records))).ms);
    v8Save.push(time(() => serialize(records)).ms);
    jsonLoad.push(time(() => JSON.parse(json.toString('utf8')) as unknown).ms);
    v8Load.push(time(() => deserialize(v8b) as unknown).ms);
  }

  const m = (xs: number[]): string => `${median(xs).toFixed(0)} ms`;
  console.log(`records: ${n} (median of ${RUNS} runs)`);
  console.log(`ocibuild parsePackages:               ${m(ours)}`);
  console.log(`debian-control split('\\n\\n') + parse: ${m(split)}  (${(median(split) / median(ours)).toFixed(1)}x ours)`);
  console.log(`debian-control ParagraphStream:        ${m(stream)}  (${(median(stream) / median(ours)).toFixed(1)}x ours, 1 run)`);
  console.log(`cache JSON:          ${(json.length / 1e6).toFixed(1)} MB, save ${m(jsonSave)}, load ${m(jsonLoad)}`);
  console.log(`cache v8.serialize:  ${(v8b.length / 1e6).toFixed(1)} MB, save ${m(v8Save)}, load ${m(v8Load)}`);
  console.log(`cache columnar:      ${(colb.length / 1e6).toFixed(1)} MB, save ${m(colSave)}, load ${m(colLoad)}`);
}

await main();
