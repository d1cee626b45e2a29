/**
 * The apt layer in `install: unpack` mode: the files of every locked package, in
 * lock order, merged into one tree as dpkg would unpack them (a later package's file
 * replaces an earlier one's, directories are shared), plus the dpkg database that
 * makes dpkg, apt, dpkg-query and scanners see the packages as installed.
 *
 * With merged /usr (Debian 11+, Ubuntu 20.04+: what debootstrap and mmdebstrap
 * create), `bin`, `sbin`, `lib` and the architecture's extra lib directories are
 * symlinks into `usr/`, and whatever a package ships under them lands in `usr/`: one
 * entry per path, nothing under a symlinked directory. The dpkg database keeps the
 * paths as the packages ship them (/bin/bash), as dpkg does on merged-/usr systems.
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import pMap from 'p-map';
import { readDeb, type DataEntry, type DebControl } from '../deb/deb.js';
import { conffilesFile, infoName, listFile, mergeStatus, statusFile, type InstalledDeb } from '../deb/dpkg-db.js';
import type { LayerEntry } from '../layer/entry.js';
import { bytesContent, fileContent } from '../layer/content.js';
import { parentPath } from '../layer/entry.js';
import { unpackScriptFiles } from './unpack-scripts.js';
import { SOURCES_LIST } from './sources-list.js';

export interface DebToUnpack {
  package: string;
  version: string;
  /** The verified .deb in the store. */
  path: string;
}

export interface AptLayerOptions {
  debs: DebToUnpack[];
  /** Debian architecture: which lib directories merged /usr links (debootstrap's table). */
  arch: string;
  mergedUsr: boolean;
  /**
   * The base image's var/lib/dpkg/status: its packages stay in the status file this
   * layer writes (which hides the base's), except those replaced by a locked package.
   */
  baseStatus?: string;
  /**
   * From scratch in `install: unpack` mode: add the files base-passwd's and
   * ca-certificates' scripts would make (unpack-scripts.ts). Not for a base image's
   * layer (the base has its own), nor for dpkg's bootstrap (dpkg runs the scripts).
   */
  scriptFiles?: boolean;
  /** From scratch: /etc/apt/sources.list (sources-list.ts), unless a package ships one. */
  sourcesList?: string;
  /** Scratch directory for file contents until the layer is written; the caller removes it. */
  workDir: string;
  signal?: AbortSignal;
}

export interface AptLayerTree {
  entries: LayerEntry[];
  /** The newest mtime in the packages: the default SOURCE_DATE_EPOCH of a build. */
  newestMtime: number;
}

/** debootstrap's merged-/usr directories per architecture (besides bin, sbin, lib). */
const EXTRA_LIB_DIRS: Record<string, string[]> = {
  amd64: ['lib32', 'lib64', 'libx32'],
  i386: ['lib64', 'libx32'],
  mips: ['lib32', 'lib64'],
  mipsel: ['lib32', 'lib64'],
  mips64el: ['lib32', 'lib64', 'libo32'],
  powerpc: ['lib64'],
  ppc64: ['lib32', 'lib64'],
  ppc64el: ['lib64'],
  s390x: ['lib32'],
  sparc64: ['lib32', 'lib64'],
  x32: ['lib32', 'lib64', 'libx32'],
};

export function mergedUsrDirs(arch: string): string[] {
  return ['bin', 'sbin', 'lib', ...(EXTRA_LIB_DIRS[arch] ?? [])];
}

const DB = 'var/lib/dpkg';
const MAINTAINER_SCRIPTS = new Set(['preinst', 'postinst', 'prerm', 'postrm', 'config']);

export async function buildAptLayerTree(opts: AptLayerOptions): Promise<AptLayerTree> {
  const tree = new Map<string, LayerEntry>();
  const linked = opts.mergedUsr ? new Set(mergedUsrDirs(opts.arch)) : new Set<string>();
  let newestMtime = 0;
  await mkdir(opts.workDir, { recursive: true });

  const dir = (p: string, mtime = 0): void => {
    if (!tree.has(p)) tree.set(p, { type: 'directory', path: p, mode: 0o755, uid: 0, gid: 0, mtime });
  };
  if (opts.mergedUsr) {
    dir('usr');
    for (const d of linked) {
      dir(`usr/${d}`);
      tree.set(d, { type: 'symlink', path: d, target: `usr/${d}`, mode: 0o777, uid: 0, gid: 0, mtime: 0 });
    }
  }
  // Where a shipped path lands: through the merged-/usr symlinks.
  const land = (p: string): string => {
    const top = p.split('/', 1)[0]!;
    return linked.has(top) ? `usr/${p}` : p;
  };

  // The .debs are read in parallel (decoding xz is most of the work), then merged
  // in lock order, so the result is the same as unpacking them one after another.
  const unpacked = await pMap(opts.debs, (deb, i) => readOne(deb, i, land, linked, opts), {
    concurrency: Math.max(1, Math.min(4, availableParallelism())),
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  const installed: InstalledDeb[] = [];
  const dbFiles: LayerEntry[] = [];
  for (const one of unpacked) {
    newestMtime = Math.max(newestMtime, one.newestMtime);
    for (const entry of one.entries) {
      const existing = tree.get(entry.path);
      // dpkg leaves a directory that is already there as it is; anything else replaces.
      if (entry.type === 'directory' && existing?.type === 'directory') continue;
      tree.set(entry.path, entry);
    }
    const control = one.control;
    const name = infoName(control.fields);
    const info = (suffix: string, text: string | Buffer, mode = 0o644): void => {
      const data = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
      dbFiles.push(bytesEntry(`${DB}/info/${name}.${suffix}`, data, mode));
    };
    info('list', listFile(one.shipped));
    if (control.md5sums) info('md5sums', control.md5sums);
    const conffiles = control.conffiles.map((p) => ({ path: p, md5: one.conffileMd5.get(p) ?? 'newconffile' }));
    if (conffiles.length) info('conffiles', conffilesFile(conffiles));
    for (const [script, data] of control.scripts) info(script, data, MAINTAINER_SCRIPTS.has(script) ? 0o755 : 0o644);
    installed.push({ fields: control.fields, conffiles });
  }

  // The rest of dpkg's database, as a fresh dpkg installation has it.
  for (const d of [DB, `${DB}/info`, `${DB}/updates`, `${DB}/triggers`, `${DB}/alternatives`, `${DB}/parts`]) dir(d);
  dbFiles.push(bytesEntry(`${DB}/status`, Buffer.from(opts.baseStatus !== undefined ? mergeStatus(opts.baseStatus, installed) : statusFile(installed), 'utf8')));
  if (opts.baseStatus === undefined) {
    // A base image has its own; replacing them would drop its pending triggers.
    dbFiles.push(bytesEntry(`${DB}/available`, Buffer.alloc(0)));
    dbFiles.push(bytesEntry(`${DB}/info/format`, Buffer.from('1\n')));
    dbFiles.push(bytesEntry(`${DB}/triggers/Unincorp`, Buffer.alloc(0)));
  }
  for (const f of dbFiles) tree.set(f.path, f);
  if (opts.scriptFiles && opts.baseStatus === undefined) {
    for (const f of await unpackScriptFiles(tree, new Set(installed.map((d) => d.fields.get('Package') ?? '')))) tree.set(f.path, f);
  }
  if (opts.sourcesList !== undefined && opts.baseStatus === undefined && !tree.has(SOURCES_LIST)) {
    tree.set(SOURCES_LIST, bytesEntry(SOURCES_LIST, Buffer.from(opts.sourcesList, 'utf8')));
  }

  // Parents a package did not ship (dpkg creates them as root 0755).
  for (const p of [...tree.keys()]) {
    for (let parent = parentPath(p); parent !== undefined; parent = parentPath(parent)) {
      if (tree.has(parent)) break;
      dir(parent);
    }
  }
  return { entries: [...tree.values()], newestMtime };
}

interface UnpackedDeb {
  control: DebControl;
  /** Layer entries in archive order, at their landing paths. */
  entries: LayerEntry[];
  /** The paths as the package ships them, for info/<pkg>.list. */
  shipped: string[];
  conffileMd5: Map<string, string>;
  newestMtime: number;
}

/** Files up to this size stay in memory until the layer is written; larger ones are spooled to disk. */
const IN_MEMORY_MAX = 256 * 1024;

async function readOne(
  deb: DebToUnpack,
  index: number,
  land: (p: string) => string,
  linked: Set<string>,
  opts: AptLayerOptions,
): Promise<UnpackedDeb> {
  const where = `${deb.package} ${deb.version} (${deb.path})`;
  const entries: LayerEntry[] = [];
  const shipped: string[] = [];
  const conffileSet = new Set<string>();
  const conffileMd5 = new Map<string, string>();
  let newestMtime = 0;
  let spooled = 0;
  const control = await readDeb(
    deb.path,
    where,
    async (entry: DataEntry, body: Readable) => {
      newestMtime = Math.max(newestMtime, entry.mtime);
      shipped.push(entry.path);
      // The merged-/usr symlink itself, or a package's own copy of it (trixie's base-files).
      if (linked.has(entry.path) && (entry.type === 'directory' || entry.type === 'symlink')) {
        body.resume();
        return;
      }
      const common = { path: land(entry.path), mode: entry.mode & 0o7777, uid: entry.uid, gid: entry.gid, mtime: entry.mtime };
      switch (entry.type) {
        case 'directory':
          entries.push({ ...common, type: 'directory' });
          body.resume();
          return;
        case 'file': {
          const md5 = conffileSet.has(`/${entry.path}`) ? createHash('md5') : undefined;
          if (entry.size <= IN_MEMORY_MAX) {
            const chunks: Buffer[] = [];
            for await (const chunk of body as AsyncIterable<Buffer>) chunks.push(chunk);
            const data = Buffer.concat(chunks);
            md5?.update(data);
            entries.push({ ...common, type: 'file', size: entry.size, content: bytesContent(data) });
          } else {
            const spool = path.join(opts.workDir, `${index}-${spooled++}`);
            await pipeline(body, async function* (source: AsyncIterable<Buffer>) {
              for await (const chunk of source) {
                md5?.update(chunk);
                yield chunk;
              }
            }, createWriteStream(spool));
            entries.push({ ...common, type: 'file', size: entry.size, content: fileContent(spool) });
          }
          if (md5) conffileMd5.set(`/${entry.path}`, md5.digest('hex'));
          return;
        }
        case 'symlink':
          entries.push({ ...common, type: 'symlink', target: entry.linkname ?? '' });
          body.resume();
          return;
        case 'hardlink':
          entries.push({ ...common, type: 'hardlink', target: land(entry.linkname ?? '') });
          body.resume();
          return;
        default:
          entries.push({ ...common, type: entry.type, devmajor: entry.devmajor ?? 0, devminor: entry.devminor ?? 0 });
          body.resume();
      }
    },
    {
      ...(opts.signal ? { signal: opts.signal } : {}),
      control: (c: DebControl) => {
        for (const f of c.conffiles) conffileSet.add(f);
      },
    },
  );
  return { control, entries, shipped, conffileMd5, newestMtime };
}

function bytesEntry(p: string, data: Buffer, mode = 0o644): LayerEntry {
  return {
    type: 'file',
    path: p,
    mode,
    uid: 0,
    gid: 0,
    mtime: 0,
    size: data.length,
    content: bytesContent(data),
  };
}
