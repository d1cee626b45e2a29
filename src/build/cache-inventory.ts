/**
 * What a store holds, entry by entry, for `ocibuild cache ls` and `cache prune`: layer
 * records and other cache records (cache/<kind>/<key>), blobs (blobs/sha256/<hex>),
 * rootfs trees (rootfs/<chain id>) and cache mounts (cache-mounts/<id>), each with
 * its size and last use (its mtime, see store/last-use.ts).
 *
 * A blob's kind is what the store can tell about it, never a guess: a layer when a
 * layer record or a stored manifest names it, a manifest, index or config by its
 * JSON, a .deb by its ar header (with the package named from its control file);
 * anything else is an "other" blob, described by its magic bytes.
 */
import type { Stats } from 'node:fs';
import { lstat, open, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import pMap from 'p-map';
import { readDebControl } from '../deb/deb.js';
import { runningBuilds, type RunningBuild } from '../store/builds.js';
import type { Store } from '../store/store.js';
import { LAYER_CACHE, parseLayerRecord } from './layer-cache.js';

export type EntryKind = 'layer-record' | 'cache-record' | 'layer' | 'deb' | 'manifest' | 'index' | 'config' | 'blob' | 'rootfs' | 'cache-mount';

export interface StoreEntry {
  kind: EntryKind;
  /** A blob's digest, a record's key, a rootfs's chain id (hex), a cache mount's id. */
  id: string;
  path: string;
  /** Bytes: a file's length, a tree's disk usage. */
  size: number;
  /** Last use, ms since 1970 (the entry's mtime). */
  lastUse: number;
  /** For people: what the entry is ('' when nothing more is known). */
  detail: string;
  /** Layer records: the layer they name, and whether its blob is in the store. */
  layer?: { digest: string; size: number; mediaType: string; createdBy?: string; present: boolean };
  /** Cache records: their kind (cache/<kind>). */
  cacheKind?: string;
  /** Blobs: a media type the store knows for them (from a layer record or a manifest). */
  mediaType?: string;
  /** Debs: package, version, architecture from the control file. */
  package?: { name: string; version: string; architecture: string };
  /** Trees left behind half made (an extraction or a removal that was killed). */
  leftover?: boolean;
}

export interface StoreInventory {
  root: string;
  /** Grouped by kind as above, most recently used first within a kind. */
  entries: StoreEntry[];
  /** Sum of the entries' sizes. */
  total: number;
  /** tmp/: scratch space of running (or killed) builds; not an entry, never pruned. */
  scratch: number;
  /** Builds registered on the store now (store/builds.ts), oldest first. */
  builds: RunningBuild[];
}

export interface InventoryOptions {
  /** Read each .deb's control file to name its package (cache ls; prune does not need it). */
  packages?: boolean;
  signal?: AbortSignal;
}

const KIND_ORDER: EntryKind[] = ['layer-record', 'layer', 'deb', 'manifest', 'index', 'config', 'blob', 'rootfs', 'cache-mount', 'cache-record'];
const HEX64 = /^[0-9a-f]{64}$/;
// Manifests and configs are small; a bigger JSON-looking blob is not parsed.
const MAX_JSON = 4 * 1024 * 1024;

export async function storeInventory(store: Store, opts: InventoryOptions = {}): Promise<StoreInventory> {
  const records = await listRecords(store);
  const blobs = await listBlobs(store, records, opts);
  const trees = [...(await listTrees(join(store.root, 'rootfs'), 'rootfs')), ...(await listTrees(join(store.root, 'cache-mounts'), 'cache-mount'))];
  const entries = [...records, ...blobs, ...trees].sort(
    (a, b) => KIND_ORDER.indexOf(a.kind) - KIND_ORDER.indexOf(b.kind) || b.lastUse - a.lastUse || (a.path < b.path ? -1 : 1),
  );
  return {
    root: store.root,
    entries,
    total: entries.reduce((n, e) => n + e.size, 0),
    scratch: await scratchUsage(join(store.root, 'tmp')),
    builds: await runningBuilds(store),
  };
}

async function listRecords(store: Store): Promise<StoreEntry[]> {
  const out: StoreEntry[] = [];
  const cacheDir = join(store.root, 'cache');
  for (const kind of await names(cacheDir)) {
    for (const key of await names(join(cacheDir, kind))) {
      const path = join(cacheDir, kind, key);
      const st = await lstatOrUndefined(path);
      if (!st?.isFile()) continue;
      const entry: StoreEntry = { kind: 'cache-record', id: key, path, size: st.size, lastUse: st.mtimeMs, detail: `${kind} record`, cacheKind: kind };
      if (kind === LAYER_CACHE) {
        const r = parseLayerRecord(await readFile(path).catch(() => Buffer.alloc(0)));
        entry.kind = 'layer-record';
        entry.detail = 'unreadable layer record';
        if (r) {
          entry.layer = { digest: r.digest, size: r.size, mediaType: r.mediaType, ...(r.createdBy !== undefined ? { createdBy: r.createdBy } : {}), present: false };
          entry.detail = r.createdBy ?? '';
        }
      }
      out.push(entry);
    }
  }
  return out;
}

interface BlobFacts {
  entry: StoreEntry;
  head: Buffer;
  json?: { mediaType?: unknown; config?: { digest?: unknown; mediaType?: unknown }; layers?: unknown; manifests?: unknown; rootfs?: unknown };
}

async function listBlobs(store: Store, records: StoreEntry[], opts: InventoryOptions): Promise<StoreEntry[]> {
  const dir = join(store.root, 'blobs', 'sha256');
  const facts: BlobFacts[] = [];
  for (const hex of await names(dir)) {
    if (!HEX64.test(hex)) continue;
    const path = join(dir, hex);
    const st = await lstatOrUndefined(path);
    if (!st?.isFile()) continue;
    const head = await readHead(path, 512);
    const f: BlobFacts = { entry: { kind: 'blob', id: `sha256:${hex}`, path, size: st.size, lastUse: st.mtimeMs, detail: '' }, head };
    if (head[0] === 0x7b && st.size <= MAX_JSON) {
      try {
        f.json = JSON.parse(await readFile(path, 'utf8')) as BlobFacts['json'];
      } catch {
        // Not JSON after all: an "other" blob.
      }
    }
    facts.push(f);
  }

  // What names a blob as a layer or a config: layer records and stored manifests.
  const known = new Map<string, { kind: 'layer' | 'config'; mediaType?: string; by: string }>();
  const byDigest = new Map(facts.map((f) => [f.entry.id, f]));
  for (const r of records) {
    if (!r.layer) continue;
    r.layer.present = byDigest.has(r.layer.digest);
    if (!known.has(r.layer.digest)) known.set(r.layer.digest, { kind: 'layer', mediaType: r.layer.mediaType, by: r.layer.createdBy ?? `layer record ${r.id.slice(0, 12)}` });
  }
  for (const f of facts) {
    const j = f.json;
    if (!j || !Array.isArray(j.layers) || typeof j.config?.digest !== 'string') continue;
    const name = `manifest ${f.entry.id.slice(7, 19)}`;
    known.set(j.config.digest, { kind: 'config', ...(typeof j.config.mediaType === 'string' ? { mediaType: j.config.mediaType } : {}), by: name });
    for (const l of j.layers as Array<{ digest?: unknown; mediaType?: unknown }>) {
      if (typeof l?.digest === 'string' && !known.has(l.digest)) known.set(l.digest, { kind: 'layer', ...(typeof l.mediaType === 'string' ? { mediaType: l.mediaType } : {}), by: `layer of ${name}` });
    }
  }

  for (const f of facts) {
    const e = f.entry;
    const k = known.get(e.id);
    if (k) {
      e.kind = k.kind;
      if (k.mediaType) e.mediaType = k.mediaType;
      e.detail = k.by;
    } else if (f.json && Array.isArray(f.json.manifests)) {
      e.kind = 'index';
      e.detail = `${f.json.manifests.length} manifests`;
    } else if (f.json && Array.isArray(f.json.layers)) {
      e.kind = 'manifest';
      e.detail = `${f.json.layers.length} layers`;
    } else if (f.json && typeof f.json.rootfs === 'object' && f.json.rootfs !== null) {
      e.kind = 'config';
      e.detail = 'image config (no stored manifest names it)';
    } else if (f.head.subarray(0, 21).toString('latin1') === '!<arch>\ndebian-binary') {
      e.kind = 'deb';
      e.detail = 'Debian package';
    } else {
      e.detail = describeOther(f.head, records, e.id);
    }
    if (typeof f.json?.mediaType === 'string' && (e.kind === 'manifest' || e.kind === 'index')) e.mediaType = f.json.mediaType;
  }

  if (opts.packages) {
    await pMap(
      facts.filter((f) => f.entry.kind === 'deb'),
      async (f) => {
        try {
          const c = await readDebControl(f.entry.path, f.entry.path, opts.signal);
          const name = c.fields.get('Package') ?? '?';
          const version = c.fields.get('Version') ?? '?';
          const architecture = c.fields.get('Architecture') ?? '?';
          f.entry.package = { name, version, architecture };
          f.entry.detail = `${name} ${version} ${architecture}`;
        } catch {
          f.entry.detail = 'Debian package (control file unreadable)';
        }
      },
      { concurrency: 8 },
    );
  }
  return facts.map((f) => f.entry);
}

/** An unidentified blob by its magic bytes, and the cache records derived from it (keyed by its hex). */
function describeOther(head: Buffer, records: StoreEntry[], digest: string): string {
  const hex = head.subarray(0, 6).toString('hex');
  const what =
    hex.startsWith('1f8b') ? 'gzip data'
    : hex.startsWith('fd377a585a00') ? 'xz data'
    : hex.startsWith('28b52ffd') ? 'zstd data'
    : hex.startsWith('425a68') ? 'bzip2 data'
    : head.subarray(257, 262).toString('latin1') === 'ustar' ? 'tar archive'
    : head[0] === 0x7b ? 'JSON'
    : /^-----BEGIN PGP/.test(head.toString('latin1')) ? 'OpenPGP text'
    : 'unrecognised';
  const derived = records.find((r) => r.kind === 'cache-record' && `sha256:${r.id}` === digest);
  return derived ? `${what}, source of a ${derived.cacheKind} record` : what;
}

async function listTrees(dir: string, kind: 'rootfs' | 'cache-mount'): Promise<StoreEntry[]> {
  const out: StoreEntry[] = [];
  for (const name of await names(dir, true)) {
    const path = join(dir, name);
    const st = await lstatOrUndefined(path);
    if (!st?.isDirectory()) continue;
    // rootfs.ts's extraction (and prune) works in `<name>.tmp-*`; prune moves a cache mount to `.<id>.prune-*`.
    const leftover = kind === 'rootfs' ? name.includes('.tmp-') : name.startsWith('.');
    out.push({
      kind,
      id: name,
      path,
      size: await diskUsage(path),
      lastUse: st.mtimeMs,
      detail: leftover ? 'unfinished: left by a killed extraction or removal' : '',
      ...(leftover ? { leftover: true } : {}),
    });
  }
  return out;
}

/** What tmp/ holds (not the directory itself). */
async function scratchUsage(dir: string): Promise<number> {
  let n = 0;
  for (const name of await names(dir, true)) n += await diskUsage(join(dir, name));
  return n;
}

/** Disk usage of a tree (du's count: allocated blocks, hard links once); unreadable parts are skipped. */
export async function diskUsage(root: string): Promise<number> {
  let total = 0;
  const seen = new Set<string>();
  const stack = [root];
  while (stack.length > 0) {
    const p = stack.pop()!;
    const st = await lstatOrUndefined(p);
    if (!st) continue;
    if (!st.isDirectory() && st.nlink > 1) {
      const id = `${st.dev}:${st.ino}`;
      if (seen.has(id)) continue;
      seen.add(id);
    }
    total += st.blocks * 512;
    if (st.isDirectory()) for (const n of await names(p, true)) stack.push(join(p, n));
  }
  return total;
}

/** A directory's entries, sorted; none when it is missing or unreadable. Dot names only with `dots`. */
async function names(dir: string, dots = false): Promise<string[]> {
  try {
    return (await readdir(dir)).filter((n) => dots || !n.startsWith('.')).sort();
  } catch {
    return [];
  }
}

async function lstatOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch {
    return undefined;
  }
}

/** The first `n` bytes of a file; none when it cannot be read (gone meanwhile, not ours). */
async function readHead(path: string, n: number): Promise<Buffer> {
  try {
    const fh = await open(path, 'r');
    try {
      const buf = Buffer.alloc(n);
      const { bytesRead } = await fh.read(buf, 0, n, 0);
      return buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  } catch {
    return Buffer.alloc(0);
  }
}
