// Shared by the sandbox tests: they need root (owners, device nodes, trusted.* xattrs,
// overlay mounts) and fail — never skip — without it, as a missing judge would.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { createRequire } from 'node:module';
import tar from 'tar-stream';
import type { LayerEntry } from '../../src/layer/entry.js';
import { keepXattr, writeTar } from '../../src/layer/tar-writer.js';
import type { Layer } from '../../src/oci/image.js';
import { OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD } from '../../src/oci/media-types.js';
import { lgetxattrs } from '../../src/sandbox/native-fs.js';

export function requireRoot(): void {
  assert.equal(process.getuid?.(), 0, 'this test needs root: it makes device nodes, sets owners and trusted.* xattrs, and mounts overlays');
}

/** Runs a command, failing the test with its stderr when it fails or is missing. */
export function sh(cmd: string, args: string[], opts: { cwd?: string; input?: string } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 26, ...opts });
  if (r.error) throw new Error(`${cmd} could not run (${r.error.message}); is it installed?`);
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

export function sha256(b: Uint8Array): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

export type TestCompression = 'gzip' | 'zstd' | 'none';

/** An in-memory Layer of the uncompressed tar `raw`; `opens` counts open() calls. */
export function memoryLayer(raw: Buffer, compression: TestCompression = 'gzip'): Layer & { opens: number } {
  let bytes = raw;
  if (compression === 'gzip') bytes = gzipSync(raw);
  if (compression === 'zstd') {
    const zstd = createRequire(import.meta.url)('zstd-napi') as { compress(b: Buffer): Buffer };
    bytes = zstd.compress(raw);
  }
  const mediaType = compression === 'gzip' ? OCI_LAYER_GZIP : compression === 'zstd' ? OCI_LAYER_ZSTD : OCI_LAYER_TAR;
  const layer = {
    digest: sha256(bytes),
    diffId: sha256(raw),
    size: bytes.length,
    mediaType,
    opens: 0,
    open: () => {
      layer.opens++;
      return Readable.from([bytes]);
    },
  };
  return layer;
}

/** The project's deterministic tar of `entries` (binary xattrs survive). */
export async function entriesTar(entries: LayerEntry[], sourceDateEpoch = 4_000_000_000): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of writeTar(entries, { sourceDateEpoch })) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export type RawMember = { header: Partial<tar.Header> & { name: string }; body?: string };

/** A tar written by tar-stream, which writes any name it is given (hostile layers). */
export async function rawTar(members: RawMember[]): Promise<Buffer> {
  const pack = tar.pack();
  const out = (async () => {
    const chunks: Buffer[] = [];
    for await (const c of pack as AsyncIterable<Buffer>) chunks.push(c);
    return Buffer.concat(chunks);
  })();
  for (const m of members) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (m.body !== undefined) pack.entry({ mode: 0o644, mtime: new Date(1_600_000_000_000), ...m.header }, m.body, cb);
      else pack.entry({ mode: 0o755, mtime: new Date(1_600_000_000_000), ...m.header }, cb);
    });
  }
  pack.finalize();
  return out;
}

export interface SnapshotOptions {
  /** Top-level names left out. */
  exclude?: readonly string[];
  /** Compare mtimes of non-directories (default true) and of directories (default false). */
  fileMtimes?: boolean;
  dirMtimes?: boolean;
  /** Compare layer xattrs (default true). */
  xattrs?: boolean;
}

/**
 * Everything a layer can carry about each path under `root`, as one comparable line
 * per path: type, mode incl. setuid bits, owner, mtime, content digest, link target,
 * device numbers, layer xattrs (keepXattr's), and hard-link siblings.
 */
export function snapshot(root: string, opts: SnapshotOptions = {}): Map<string, string> {
  const exclude = new Set(opts.exclude ?? []);
  const byInode = new Map<string, string[]>();
  const rows: Array<[string, string, string | undefined]> = [];
  const visit = (rel: string): void => {
    for (const name of readdirSync(rel === '' ? root : `${root}/${rel}`).sort()) {
      const p = rel === '' ? name : `${rel}/${name}`;
      if (rel === '' && exclude.has(name)) continue;
      const abs = `${root}/${p}`;
      const st = lstatSync(abs);
      const parts = [`mode=${(st.mode & 0o7777).toString(8)}`, `owner=${st.uid}:${st.gid}`];
      let inode: string | undefined;
      if (st.isDirectory()) parts.unshift('dir');
      else if (st.isFile()) {
        parts.unshift('file');
        parts.push(`sha=${sha256(readFileSync(abs)).slice(7, 19)}`);
        if (st.nlink > 1) inode = `${st.dev}:${st.ino}`;
      } else if (st.isSymbolicLink()) parts.unshift(`symlink->${readlinkSync(abs)}`);
      else if (st.isCharacterDevice()) parts.unshift(`char ${st.rdev}`);
      else if (st.isBlockDevice()) parts.unshift(`block ${st.rdev}`);
      else if (st.isFIFO()) parts.unshift('fifo');
      else parts.unshift('other');
      if (st.isDirectory() ? opts.dirMtimes : opts.fileMtimes !== false) parts.push(`mtime=${Math.floor(st.mtimeMs / 1000)}`);
      if ((st.isFile() || st.isDirectory()) && opts.xattrs !== false) {
        const x = [...lgetxattrs(abs)].filter(([k]) => keepXattr(k)).sort((a, b) => (a[0] < b[0] ? -1 : 1));
        if (x.length > 0) parts.push(`xattrs=${x.map(([k, v]) => `${k}:${v.toString('hex')}`).join(',')}`);
      }
      rows.push([p, parts.join(' '), inode]);
      if (inode) byInode.set(inode, [...(byInode.get(inode) ?? []), p]);
      if (st.isDirectory()) visit(p);
    }
  };
  visit('');
  const out = new Map<string, string>();
  for (const [p, line, inode] of rows) {
    const group = inode ? byInode.get(inode)! : [];
    out.set(p, group.length > 1 ? `${line} links=${group.sort().join('|')}` : line);
  }
  return out;
}

/** Differences between two snapshots, as readable lines (empty when equal). */
export function diffSnapshots(a: Map<string, string>, b: Map<string, string>, names = ['a', 'b']): string[] {
  const out: string[] = [];
  for (const p of new Set([...a.keys(), ...b.keys()])) {
    if (a.get(p) !== b.get(p)) out.push(`${p}\n  ${names[0]}: ${a.get(p) ?? '(absent)'}\n  ${names[1]}: ${b.get(p) ?? '(absent)'}`);
  }
  return out.sort();
}

/** umoci's unpacking of `layers` (bottom first): the path of its rootfs. */
export async function umociUnpack(layers: Layer[], work: string): Promise<string> {
  const { buildImage } = await import('../../src/oci/image.js');
  const { writeLayout } = await import('../../src/oci/layout.js');
  const image = buildImage(
    { architecture: 'amd64', os: 'linux', created: new Date('2024-01-01T00:00:00Z'), env: [] },
    layers.map((l) => ({ ...l, open: () => l.open() })),
  );
  const layout = `${work}/layout`;
  await writeLayout(layout, image, { tag: 'test' });
  const bundle = `${work}/bundle`;
  sh('umoci', ['unpack', '--image', `${layout}:test`, bundle]);
  return `${bundle}/rootfs`;
}
