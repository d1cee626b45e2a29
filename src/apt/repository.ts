/**
 * Loads the package universe of a set of apt sources: for each source × suite the
 * (In)Release file, verified against the source's keyring; then each component's
 * Packages index, verified against the Release's SHA256 list while streaming into the
 * store, decompressed and parsed (the parsed form is cached by index digest, so an
 * unchanged index is neither downloaded nor parsed twice).
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { posix } from 'node:path';
import type { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import pMap from 'p-map';
import { OcibuildError } from '../errors.js';
import type { AptSource } from '../spec/types.js';
import type { Store } from '../store/store.js';
import { fetchBuffer, fetchToStore, NotFoundError, type FetchOptions } from './http.js';
import { parsePackages } from './packages-index.js';
import { decodeIndexCache, encodeIndexCache, withOrigin } from './index-cache.js';
import { parseRelease, type ReleaseEntry, type ReleaseFile } from './release.js';
// signature.js (and openpgp, ~0.1 s to load) is imported only when a Release must really be verified.
import type { Key } from './signature.js';
import type { IndexOrigin, PackageRecord, PackageUniverse } from './types.js';

export interface RepositoryOptions {
  store: Store;
  insecureNoVerify?: boolean;
  ignoreValidUntil?: boolean;
  now?: Date;
  signal?: AbortSignal;
  log?: (line: string) => void;
  /** Parallel suites and parallel index downloads (each bounded separately); default 4. */
  concurrency?: number;
  /** Retry policy for the mirror (tests shorten the backoff). */
  http?: Pick<FetchOptions, 'retries' | 'backoffMs'>;
}

export interface LoadedUniverse extends PackageUniverse {
  /** One per origin, same order: the sha256 (hex) of the index file downloaded for it. */
  indices: Array<{ origin: IndexOrigin; sha256: string }>;
}

export const DEBIAN_KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg';
export const UBUNTU_KEYRING = '/usr/share/keyrings/ubuntu-archive-keyring.gpg';

/** Bumped whenever PackageRecord or the parser's output changes. */
const PARSED_CACHE_KIND = 'packages-v2';
const VERIFIED_CACHE_KIND = 'verified-release-v1';

// Preference order: smallest download first; apt does the same.
const INDEX_VARIANTS: Array<{ suffix: string; compression: Compression }> = [
  { suffix: '.xz', compression: 'xz' },
  { suffix: '.gz', compression: 'gz' },
  { suffix: '', compression: 'none' },
];

export type Compression = 'xz' | 'gz' | 'none';

interface IndexFile {
  /** Full URL of the index as listed (not the by-hash URL). */
  url: string;
  fetchUrl: string;
  entry: ReleaseEntry;
  compression: Compression;
}

interface IndexTask extends IndexFile {
  origin: IndexOrigin;
  /** The other compressions the Release lists, tried when the preferred file cannot be had. */
  fallbacks: IndexFile[];
}

export async function loadUniverse(sources: AptSource[], arch: string, opts: RepositoryOptions): Promise<LoadedUniverse> {
  const concurrency = opts.concurrency ?? 4;
  const keyrings = new Map<string, Keyring>();
  const suites = sources.flatMap((source) => source.suites.map((suite) => ({ source, suite })));

  const perSuite = await pMap(
    suites,
    async ({ source, suite }) => {
      const release = await loadRelease(source, suite, opts, keyrings);
      return planIndices(source, suite, release, arch);
    },
    { concurrency, signal: opts.signal },
  );
  const tasks = perSuite.flat();

  // Identical indices (an empty component, the same binary-all in two suites) are
  // fetched and parsed once; each origin gets its own copy of the records.
  const byDigest = new Map<string, Promise<LoadedIndex>>();
  const loaded = await pMap(
    tasks,
    async (task, i) => {
      const shared = byDigest.get(task.entry.sha256);
      if (shared !== undefined) {
        const other = await shared;
        return { sha256: other.sha256, records: other.records.map((r) => withOrigin(r, i)) };
      }
      const own = loadIndexWithFallbacks(task, i, opts);
      byDigest.set(task.entry.sha256, own);
      return own;
    },
    { concurrency, signal: opts.signal },
  );
  const parsed = loaded.map((l) => l.records);

  // arch:all packages are listed in every binary-<arch> and binary-all index and
  // often in several suites: keep the first copy of each (package, version, archive).
  const records: PackageRecord[] = [];
  const seen = new Set<string>();
  const key = (r: PackageRecord): string => `${r.package}\0${r.version}\0${tasks[r.origin]!.origin.url}`;
  for (const list of parsed) {
    for (const r of list) {
      if (r.architecture === 'all') {
        const k = key(r);
        if (seen.has(k)) continue;
        seen.add(k);
      }
      records.push(r);
    }
  }
  return {
    arch,
    origins: tasks.map((t) => t.origin),
    records,
    indices: tasks.map((t, i) => ({ origin: t.origin, sha256: loaded[i]!.sha256 })),
  };
}

/** Fetches and verifies dists/<suite>/InRelease, or Release + Release.gpg when InRelease is missing. */
async function loadRelease(
  source: AptSource,
  suite: string,
  opts: RepositoryOptions,
  keyrings: Map<string, Keyring>,
): Promise<ReleaseFile> {
  const base = `${trimSlash(source.url)}/dists/${suite}`;
  const fetchOpts = httpOptions(opts);
  const keyring = (): Keyring => keyringFor(source, keyrings);
  const insecure = (url: string): void =>
    opts.log?.(`WARNING: NOT verifying the signature of ${url} (--insecure-no-verify): its packages may be forged`);

  let text: string;
  let where = `${base}/InRelease`;
  let inRelease: Buffer | undefined;
  try {
    inRelease = await fetchBuffer(where, fetchOpts);
  } catch (err) {
    if (!(err instanceof NotFoundError)) throw err;
  }
  if (inRelease !== undefined) {
    const signed = inRelease;
    if (opts.insecureNoVerify) {
      insecure(where);
      const sig = await import('./signature.js');
      text = await sig.readInReleaseUnverified(signed.toString('utf8'), where);
    } else {
      text = await memoizedVerification(opts.store, keyring(), [signed], async (keys) => {
        const sig = await import('./signature.js');
        return sig.verifyInRelease(signed.toString('utf8'), keys, where);
      });
    }
  } else {
    where = `${base}/Release`;
    let release: Buffer;
    try {
      release = await fetchBuffer(where, fetchOpts);
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
      throw new OcibuildError(`suite ${suite} has neither InRelease nor Release`, {
        where: base,
        hint: 'check the suite name and the source url (it must be the archive root, e.g. http://deb.debian.org/debian)',
      });
    }
    if (opts.insecureNoVerify) {
      insecure(where);
      text = release.toString('utf8');
    } else {
      const sigUrl = `${where}.gpg`;
      let signature: Buffer;
      try {
        signature = await fetchBuffer(sigUrl, fetchOpts);
      } catch (err) {
        if (!(err instanceof NotFoundError)) throw err;
        throw new OcibuildError('the Release file is not signed (no InRelease, no Release.gpg)', {
          where,
          hint: 'unsigned repositories cannot be verified; to proceed anyway (unsafe) pass --insecure-no-verify',
        });
      }
      text = await memoizedVerification(opts.store, keyring(), [release, signature], async (keys) => {
        const sig = await import('./signature.js');
        await sig.verifyDetached(release, signature, keys, sigUrl);
        return release.toString('utf8');
      });
    }
  }

  const parsed = parseRelease(text, where);
  const now = opts.now ?? new Date();
  if (parsed.validUntil !== undefined && parsed.validUntil.getTime() < now.getTime()) {
    if (!opts.ignoreValidUntil) {
      throw new OcibuildError(
        `the Release file of suite ${suite} expired on ${parsed.validUntil.toISOString()} (Valid-Until)`,
        {
          where,
          hint: 'the mirror is stale, or replaying old metadata; for snapshot mirrors pass --ignore-valid-until',
        },
      );
    }
    opts.log?.(`warning: ${where} expired on ${parsed.validUntil.toISOString()}; accepted (--ignore-valid-until)`);
  }
  return parsed;
}

interface Keyring {
  path: string;
  bytes: Promise<Buffer>;
  keys: () => Promise<Key[]>;
}

/**
 * A signature check is a pure function of the signed bytes and the keyring bytes, so
 * its result is remembered in the store under the hash of both: an unchanged
 * InRelease is not verified again (nor openpgp loaded), a changed one or a changed
 * keyring always is. Only successful verifications are remembered.
 */
async function memoizedVerification(
  store: Store,
  keyring: Keyring,
  signed: Buffer[],
  verify: (keys: Key[]) => Promise<string>,
): Promise<string> {
  const h = createHash('sha256').update('ocibuild verified-release v1\0');
  h.update(createHash('sha256').update(await keyring.bytes).digest());
  for (const part of signed) h.update(createHash('sha256').update(part).digest());
  const key = h.digest('hex');
  const memo = await store.readCacheFile(VERIFIED_CACHE_KIND, key);
  if (memo !== undefined) return memo.toString('utf8');
  const text = await verify(await keyring.keys());
  await store.writeCacheFile(VERIFIED_CACHE_KIND, key, Buffer.from(text, 'utf8'));
  return text;
}

/** The host keyring a source without `keyring:` is verified with. */
export function defaultKeyringPath(source: { url: string }): string {
  return source.url.includes('ubuntu') ? UBUNTU_KEYRING : DEBIAN_KEYRING;
}

function keyringFor(source: AptSource, cache: Map<string, Keyring>): Keyring {
  const explicit = source.keyring;
  const path = explicit ?? defaultKeyringPath(source);
  let keyring = cache.get(path);
  if (keyring === undefined) {
    const bytes = readFile(path).catch((err: NodeJS.ErrnoException) => {
      if (explicit === undefined && err.code === 'ENOENT') {
        const pkg = path === UBUNTU_KEYRING ? 'ubuntu-keyring' : 'debian-archive-keyring';
        throw new OcibuildError(`the default keyring for ${source.url} is missing`, {
          where: path,
          hint: `install the ${pkg} package, or set \`keyring:\` on this apt source`,
        });
      }
      throw new OcibuildError(`cannot read the keyring: ${err.message}`, {
        where: path,
        hint: 'check the `keyring:` path of this apt source (relative paths are relative to the spec)',
      });
    });
    // Avoid an unhandled rejection when nobody awaits the bytes (insecure mode).
    bytes.catch(() => {});
    let keys: Promise<Key[]> | undefined;
    keyring = {
      path,
      bytes,
      keys: () => (keys ??= bytes.then(async () => (await import('./signature.js')).loadKeyring(path))),
    };
    cache.set(path, keyring);
  }
  return keyring;
}

/** The Packages indices of one suite, in component order, then [arch, all]. */
function planIndices(source: AptSource, suite: string, release: ReleaseFile, arch: string): IndexTask[] {
  const base = `${trimSlash(source.url)}/dists/${suite}`;
  if (release.architectures.length > 0 && !release.architectures.includes(arch)) {
    throw new OcibuildError(`suite ${suite} does not support architecture ${arch}`, {
      where: `${base}/Release`,
      hint: `its Release lists: ${release.architectures.join(' ')}`,
    });
  }
  const tasks: IndexTask[] = [];
  for (const component of source.components) {
    const arches = [arch];
    if (arch !== 'all' && readsBinaryAll(release) && findIndex(release, component, 'all') !== undefined) arches.push('all');
    for (const a of arches) {
      const found = findIndex(release, component, a);
      if (found === undefined) {
        // Component → architectures with a Packages index (debian-installer's indices aside).
        const indices = new Map<string, Set<string>>();
        for (const p of release.sha256.keys()) {
          const m = /^(.+)\/binary-([^/]+)\/Packages(\.xz|\.gz)?$/.exec(p);
          if (!m || m[1]!.includes('/debian-installer')) continue;
          if (!indices.has(m[1]!)) indices.set(m[1]!, new Set());
          indices.get(m[1]!)!.add(m[2]!);
        }
        const components = release.components.length > 0 ? release.components : [...indices.keys()];
        const archs = indices.get(component);
        throw new OcibuildError(`suite ${suite} has no Packages index for component ${component}, architecture ${a}`, {
          where: `${base}/Release`,
          hint:
            archs !== undefined
              ? `component ${component} has indices for: ${[...archs].sort().join(', ')}`
              : components.length > 0
                ? `the suite's components are: ${components.join(', ')}`
                : 'the Release lists no Packages indices',
        });
      }
      const file = (f: { path: string; entry: ReleaseEntry; compression: Compression }): IndexFile => ({
        url: `${base}/${f.path}`,
        fetchUrl: release.acquireByHash ? `${base}/${posix.dirname(f.path)}/by-hash/SHA256/${f.entry.sha256}` : `${base}/${f.path}`,
        entry: f.entry,
        compression: f.compression,
      });
      tasks.push({
        origin: { url: trimSlash(source.url), suite, component, arch: a, ...(release.pin !== 500 ? { pin: release.pin } : {}) },
        ...file(found),
        fallbacks: allIndices(release, component, a).filter((f) => f.path !== found.path).map(file),
      });
    }
  }
  return tasks;
}

/**
 * apt (debReleaseIndex::IsArchitectureAllSupportedFor) reads binary-all only when the
 * Release's Architectures include "all" (or list nothing) and "No-Support-for-
 * Architecture-all: Packages" does not say arch:all packages are in every
 * binary-<arch> index already. debian-security lists no "all", for example.
 */
function readsBinaryAll(release: ReleaseFile): boolean {
  if (release.architectures.length > 0 && !release.architectures.includes('all')) return false;
  return !(release.noSupportForArchitectureAll ?? '').split(/\s+/).includes('Packages');
}

function findIndex(
  release: ReleaseFile,
  component: string,
  arch: string,
): { path: string; entry: ReleaseEntry; compression: Compression } | undefined {
  return allIndices(release, component, arch)[0];
}

/** Every Packages file the Release lists for one component and architecture, preferred first. */
function allIndices(
  release: ReleaseFile,
  component: string,
  arch: string,
): Array<{ path: string; entry: ReleaseEntry; compression: Compression }> {
  const out: Array<{ path: string; entry: ReleaseEntry; compression: Compression }> = [];
  for (const v of INDEX_VARIANTS) {
    const path = `${component}/binary-${arch}/Packages${v.suffix}`;
    const entry = release.sha256.get(path);
    if (entry !== undefined) out.push({ path, entry, compression: v.compression });
  }
  return out;
}

interface LoadedIndex {
  /** sha256 (hex) of the index file that was used. */
  sha256: string;
  records: PackageRecord[];
}

/**
 * A mirror in the middle of a sync can serve an InRelease whose listed files it does
 * not have yet (a 404 by hash and by name, or a file with another checksum). Like apt,
 * try the other compressions the Release lists before giving up.
 */
async function loadIndexWithFallbacks(task: IndexTask, origin: number, opts: RepositoryOptions): Promise<LoadedIndex> {
  let firstError: unknown;
  for (const file of [task, ...task.fallbacks]) {
    try {
      return { sha256: file.entry.sha256, records: await loadIndex(file, origin, opts) };
    } catch (err) {
      if (opts.signal?.aborted || !(err instanceof OcibuildError)) throw err;
      firstError ??= err;
      if (file !== task.fallbacks[task.fallbacks.length - 1] && task.fallbacks.length > 0) {
        opts.log?.(`index ${file.url}: ${err.message}; trying another compression`);
      }
    }
  }
  if (task.fallbacks.length > 0 && firstError instanceof OcibuildError) {
    throw new OcibuildError(firstError.message, {
      where: firstError.where ?? task.url,
      hint: `no compression of this index that the Release lists could be fetched intact; a mirror in the middle of a sync does this: retry in a few minutes or use another mirror`,
      exitCode: firstError.exitCode,
      cause: firstError,
    });
  }
  throw firstError;
}

async function loadIndex(task: IndexFile, origin: number, opts: RepositoryOptions): Promise<PackageRecord[]> {
  const { store } = opts;
  const digest = `sha256:${task.entry.sha256}`;
  // The cache key is the digest the signed Release vouches for, so a cached parse is
  // as trustworthy as the blob it came from.
  const cached = await readParsedCache(store, task.entry.sha256, origin);
  if (cached !== undefined) {
    opts.log?.(`index ${task.url}: cached (${cached.length} packages)`);
    return cached;
  }
  if (await store.has(digest)) {
    opts.log?.(`index ${task.url}: in store`);
  } else {
    opts.log?.(`index ${task.url}: downloading ${task.entry.size} bytes`);
    const expect = { digest, size: task.entry.size };
    try {
      await fetchToStore(task.fetchUrl, store, expect, httpOptions(opts));
    } catch (err) {
      // A mirror mid-sync may lack the by-hash copy; apt then falls back to the plain path.
      if (!(err instanceof NotFoundError) || task.fetchUrl === task.url) throw err;
      opts.log?.(`index ${task.fetchUrl}: not found by hash, trying ${task.url}`);
      await fetchToStore(task.url, store, expect, httpOptions(opts));
    }
  }
  let text: Buffer;
  try {
    text = await decompressIndex(store.openBlob(digest), task.compression, opts.signal);
  } catch (err) {
    if (opts.signal?.aborted) throw err;
    throw new OcibuildError(`cannot decompress the index (${task.compression}): ${(err as Error).message}`, {
      where: task.url,
      hint: 'the mirror publishes a damaged index; use another mirror',
      cause: err,
    });
  }
  const records = parsePackages(text, origin, task.url);
  opts.log?.(`index ${task.url}: parsed ${records.length} packages`);
  await store.writeCacheFile(PARSED_CACHE_KIND, task.entry.sha256, encodeIndexCache(records));
  return records;
}

/** The parsed form (index-cache.ts), keyed by the index digest the signed Release vouches for. */
async function readParsedCache(store: Store, hex: string, origin: number): Promise<PackageRecord[] | undefined> {
  const data = await store.readCacheFile(PARSED_CACHE_KIND, hex);
  // A damaged or foreign cache entry is re-derived from the verified blob.
  return data === undefined ? undefined : decodeIndexCache(data, origin);
}

interface LzmaNative {
  createDecompressor(options?: Record<string, unknown>): Transform;
}
let lzma: LzmaNative | undefined;

/** Decompresses a whole index into memory (the parser wants the complete text). */
export async function decompressIndex(src: Readable, compression: Compression, signal?: AbortSignal): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const sink = async (source: AsyncIterable<Buffer>): Promise<void> => {
    for await (const chunk of source) chunks.push(chunk);
  };
  const options = signal ? { signal } : {};
  if (compression === 'none') {
    await pipeline(src, sink, options);
  } else if (compression === 'gz') {
    await pipeline(src, createGunzip(), sink, options);
  } else {
    // lzma-native ships no type declarations; it streams through the system-grade liblzma.
    lzma ??= createRequire(import.meta.url)('lzma-native') as LzmaNative;
    await pipeline(src, lzma.createDecompressor(), sink, options);
  }
  return Buffer.concat(chunks);
}

function httpOptions(opts: RepositoryOptions): FetchOptions {
  const o: FetchOptions = { ...opts.http };
  if (opts.signal) o.signal = opts.signal;
  if (opts.log) o.log = opts.log;
  return o;
}

function trimSlash(url: string): string {
  return url.replace(/\/+$/, '');
}
