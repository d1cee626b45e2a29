/**
 * `install: dpkg`: the locked .debs installed by the image's own dpkg in the sandbox,
 * so maintainer scripts, diversions, alternatives, triggers and conffiles all happen
 * as with apt-get. The .debs are bind-mounted read-only from the store (never copied
 * into a layer); a policy-rc.d mounted over /usr/sbin keeps services from starting and
 * is in no layer (its mount point comes from the sandbox's scaffold).
 *
 * Order: the lock lists packages in install order; they go to `dpkg --install` in
 * batches, a new batch starting where a package pre-depends on one of the current
 * batch (Pre-Depends must be configured before the dependent is unpacked, which
 * within one dpkg run is not guaranteed), as apt splits its dpkg calls.
 *
 * From scratch, like mmdebstrap's essential variant: the Essential: yes set and what
 * it needs are unpacked first (files only, an empty dpkg database), then installed
 * for real with `dpkg --install --force-depends`, then the rest; the layer is that
 * unpacked tree with the sandbox's changes applied (one layer, not two).
 *
 * Then `dpkg --audit` must be silent, and the upper dir is normalised (normalize.ts).
 *
 * Speed: while dpkg works, copies of the .debs with their data.tar decompressed are
 * written next to them, in install order, on the other core (plain-deb.ts); each dpkg
 * call takes the plain copy of a package when it is complete, else the .deb as
 * shipped. dpkg installs the same files from either, so only the time depends on
 * which one it got.
 */
import { existsSync } from 'node:fs';
import { link, mkdir, mkdtemp, readFile, statfs, writeFile } from 'node:fs/promises';
import path from 'node:path';
import pMap from 'p-map';
import { readDebControl, type DebControl } from '../deb/deb.js';
import { writePlainDeb } from '../deb/plain-deb.js';
import { OcibuildError } from '../errors.js';
import type { LockEntry } from '../apt/lockfile.js';
import { bytesContent } from '../layer/content.js';
import type { LayerEntry } from '../layer/entry.js';
import { writeTar } from '../layer/tar-writer.js';
import { rmTree } from '../sandbox/overlay.js';
import { adoptRootfs, chainId, rootfsFor } from './tracked.js';
import { extractTar } from '../sandbox/extract.js';
import { runStep } from '../sandbox/run-step.js';
import { dirInTree, upperToEntries } from '../sandbox/upper.js';
import { VERSION } from '../version.js';
import { buildAptLayerTree } from './apt-layer.js';
import { SOURCES_LIST } from './sources-list.js';
import { EXTENDED_STATES, extendedStates } from './apt-states.js';
import { cachedLayer, stepKey, writeAndCache, type CachedLayer } from './layer-cache.js';
import { normalizeStepEntries, normalizeTree } from './normalize.js';
import type { SandboxStepOptions } from './step-options.js';

export interface DpkgLayerOptions extends SandboxStepOptions {
  /** The lock's entries, in its (install) order, and each one's verified .deb in the store. */
  debs: Array<{ entry: LockEntry; path: string }>;
  arch: string;
  /** For the bootstrap tree (from scratch). */
  mergedUsr: boolean;
  /** Explicit SOURCE_DATE_EPOCH; default: the newest build date of the packages. */
  sourceDateEpoch?: number;
  /** From scratch: /etc/apt/sources.list (sources-list.ts), unless a package ships one. */
  sourcesList?: string;
}

/** dpkg by its path: every dpkg package ships it there, and a shell's own applets (busybox) must not win. */
const DPKG = '/usr/bin/dpkg';
/** Where the .debs are inside the sandbox (/run is a tmpfs: never part of a layer). */
const DEBS_INSIDE = '/run/ocibuild/debs';
const POLICY_RC_D = '#!/bin/sh\n# ocibuild: no service starts while an image is built\nexit 101\n';
/** The environment of a non-interactive install, as apt-get in a container build gets it. */
const INSTALL_ENV: Record<string, string> = {
  DEBIAN_FRONTEND: 'noninteractive',
  DEBCONF_NONINTERACTIVE_SEEN: 'true',
  DEBCONF_NOWARNINGS: 'yes',
  LC_ALL: 'C',
  LANGUAGE: '',
};

export async function dpkgLayer(o: DpkgLayerOptions): Promise<CachedLayer> {
  const names = o.debs.map((d) => d.entry.package);
  const createdBy = `ocibuild apt install (dpkg): ${o.debs.length} packages`;
  const key = stepKey('apt-dpkg-v3', {
    parent: o.below.length > 0 ? chainId(o.below.map((l) => l.diffId)) : null,
    debs: o.debs.map((d) => d.entry.sha256),
    arch: o.arch,
    mergedUsr: o.below.length === 0 ? o.mergedUsr : null,
    config: o.config,
    compression: o.compression,
    sde: o.sourceDateEpoch ?? null,
    version: VERSION,
    ...(o.sourcesList !== undefined ? { sourcesList: o.sourcesList } : {}),
  });
  const cached = await cachedLayer(o.store, key, `${createdBy} ${names.join(' ')}`, o);
  if (cached) {
    o.log(`${o.label}: unchanged, from the layer cache (${cached.layer.digest})`);
    return cached;
  }

  // Read while the bootstrap tree is made: the dates and the batches need them.
  const reading = pMap(o.debs, (d) => readDebControl(d.path, d.path, o.signal), { concurrency: 8 }).then((controls) => ({
    controls,
    sde: o.sourceDateEpoch ?? Math.max(0, ...controls.map((c) => c.builtAt)),
  }));
  reading.catch(() => {}); // awaited below; an early failure must not count as unhandled
  const scratch = o.below.length === 0;
  const essential = scratch ? essentialSet(o.debs.map((d) => d.entry)) : new Set<string>();
  if (scratch && essential.size === 0) {
    throw new OcibuildError('from: scratch with install: dpkg, but the lock has no Essential: yes packages to bootstrap dpkg with', {
      where: o.where,
      hint: 'run ocibuild lock again (a scratch + dpkg lock includes the essential set), or use install: unpack',
    });
  }
  // From scratch the essential set goes first, then the rest in lock order.
  const first = o.debs.flatMap((d, i) => (essential.has(d.entry.package) ? [i] : []));
  const rest = o.debs.flatMap((d, i) => (essential.has(d.entry.package) ? [] : [i]));
  await mkdir(o.workDir, { recursive: true });
  const dir = await mkdtemp(path.join(o.workDir, 'dpkg-'));
  let plain: PlainCopies | undefined;
  try {
    const debDir = path.join(dir, 'debs');
    await mkdir(path.join(debDir, PLAIN), { recursive: true });
    const files: string[] = [];
    for (const [i, d] of o.debs.entries()) {
      const name = `${String(i + 1).padStart(4, '0')}_${d.entry.package}_${d.entry.version.replace(/:/g, '%3a')}_${d.entry.architecture}.deb`;
      // Same file system as the store (its tmp dir): a link, not a copy.
      await link(d.path, path.join(debDir, name));
      files.push(name);
    }
    // Made while the rootfs is prepared and dpkg runs, in the order dpkg wants them;
    // only where the disk has room for them beside what dpkg writes.
    if (await roomForPlainCopies(debDir, o.debs)) plain = plainCopies([...first, ...rest], o, debDir, files);
    else o.log('not enough free disk space for uncompressed copies of the .debs: dpkg reads them as shipped');
    const policy = path.join(dir, 'policy-rc.d');
    await writeFile(policy, POLICY_RC_D, { mode: 0o755 });

    let rootfs: string;
    const script: string[] = [];
    if (scratch) o.log(`bootstrapping: unpacking the ${essential.size} essential packages`);
    const boot = scratch ? await bootstrapTree(o, essential, path.join(dir, 'boot')) : undefined;
    const { controls, sde } = await reading;
    if (boot) {
      // A private tree dpkg changes in place: from scratch the whole tree is the layer,
      // and overlayfs only makes dpkg slower. Written by the extractor (with the checks
      // every extraction makes) from a tar of the unpacked packages streamed to it.
      rootfs = path.join(dir, 'tree');
      try {
        await extractTar(writeTar(boot.entries, { sourceDateEpoch: sde }), rootfs, 'the essential packages', o.signal);
      } finally {
        await rmTree(path.join(dir, 'boot'));
      }
      script.push(dpkgInstall('--force-depends --force-unsafe-io', first.map((i) => files[i]!)));
    } else {
      rootfs = (await rootfsFor(o.store, o.below, o.signal ? { signal: o.signal } : {})).path;
    }
    script.push(...batches(rest, controls).map((b) => dpkgInstall(INSTALL_OPTIONS, b.map((i) => files[i]!))));
    script.push(AUDIT);

    o.log(`installing ${o.debs.length} packages with dpkg in the sandbox`);
    const step = await runStep({
      lowers: [rootfs],
      dir: path.join(dir, 'step'),
      run: script,
      config: { ...o.config, User: '0:0', WorkingDir: '/' },
      env: INSTALL_ENV,
      sourceDateEpoch: sde,
      network: false,
      hosts: true,
      mounts: [
        { source: debDir, target: DEBS_INSIDE, readOnly: true },
        { source: policy, target: '/usr/sbin/policy-rc.d', readOnly: true },
      ],
      sandbox: o.sandbox,
      step: { name: 'installing the packages with dpkg', hint: "dpkg's output above names the package; a maintainer script failing is the usual cause" },
      ...(scratch ? { overlay: 'in-place' as const } : {}),
      ...(o.onOutput ? { onOutput: o.onOutput } : {}),
      warn: (m) => o.log(`warning: ${m}`),
      where: o.where,
      ...(o.signal ? { signal: o.signal } : {}),
    }).finally(() => plain?.stop());
    // apt's auto/manual marks, when the image has apt (locked now, or in the base).
    const hasApt = o.debs.some((d) => d.entry.package === 'apt') || existsSync(path.join(rootfs, 'usr/bin/apt-get'));
    if (hasApt) {
      const existing = scratch ? undefined : await readFile(path.join(rootfs, EXTENDED_STATES), 'utf8').catch(() => undefined);
      const target = path.join(scratch ? rootfs : step.upper, EXTENDED_STATES);
      await mkdir(path.dirname(target), { recursive: true, mode: 0o755 });
      await writeFile(target, extendedStates(o.debs.map((d) => d.entry), essential, o.arch, existing), { mode: 0o644 });
    }
    if (scratch) {
      if (o.sourcesList !== undefined && !existsSync(path.join(rootfs, SOURCES_LIST))) {
        await mkdir(path.join(rootfs, path.dirname(SOURCES_LIST)), { recursive: true, mode: 0o755 });
        await writeFile(path.join(rootfs, SOURCES_LIST), o.sourcesList, { mode: 0o644 });
      }
      await normalizeTree(rootfs, sde);
      // Every entry of the tree, extended attributes (file capabilities) included.
      const entries = await upperToEntries(rootfs, () => false, { exclude: [] });
      const layer = await writeAndCache(o.store, key, entries, o.compression, sde, `${createdBy} ${names.join(' ')}`, o.label, o.progress, o.signal);
      // The tree is what extracting the layer gives: the rootfs of the next step.
      await adoptRootfs(o.store, [layer.layer], rootfs, o.signal);
      return layer;
    }
    try {
      const upper = normalizeStepEntries(
        await upperToEntries(step.upper, dirInTree(rootfs), { overlayXattrs: step.overlayXattrs, whiteoutFormat: step.whiteouts === 'wh-files' ? 'wh-files' : 'device' }),
        step.upper,
        sde,
      );
      return await writeAndCache(o.store, key, upper, o.compression, sde, `${createdBy} ${names.join(' ')}`, o.label, o.progress, o.signal);
    } finally {
      await rmTree(step.upper);
    }
  } finally {
    await plain?.stop();
    await rmTree(dir);
  }
}

const AUDIT = 'audit=$(/usr/bin/dpkg --audit 2>&1) || true; if [ -n "$audit" ]; then printf "%s\\n" "$audit"; echo "ocibuild: dpkg --audit reports unfinished packages" >&2; exit 1; fi';

const INSTALL_OPTIONS = '--force-confdef --force-confold --force-unsafe-io';
/** Where the plain copies go, under the .debs' directory. */
const PLAIN = 'plain';

/**
 * `dpkg --install` of `names` (files in DEBS_INSIDE), each one's plain copy when it is
 * complete (it appears under its name only then), else the .deb as shipped.
 */
function dpkgInstall(options: string, names: string[]): string {
  const quoted = names.map((n) => `'${n}'`).join(' ');
  return (
    `set --; for deb in ${quoted}; do ` +
    `if [ -f ${DEBS_INSIDE}/${PLAIN}/"$deb" ]; then set -- "$@" ${DEBS_INSIDE}/${PLAIN}/"$deb"; else set -- "$@" ${DEBS_INSIDE}/"$deb"; fi; ` +
    `done; ${DPKG} --install ${options} "$@"`
  );
}

/** Compressed .debs hold about a fifth of their data.tar; 5× the .debs, plus 1 GiB for dpkg, must be free. */
async function roomForPlainCopies(dir: string, debs: DpkgLayerOptions['debs']): Promise<boolean> {
  const compressed = debs.reduce((n, d) => n + d.entry.size, 0);
  const fs = await statfs(dir).catch(() => undefined);
  return fs !== undefined && fs.bavail * fs.bsize >= 5 * compressed + 2 ** 30;
}

interface PlainCopies {
  /** Stops making copies; resolves once the one in progress is abandoned. */
  stop(): Promise<void>;
}

/**
 * The plain copies of the .debs (`names[i]` under PLAIN in `debDir`), written one at a
 * time in `order` until stopped. A copy that fails is only a lost speed-up (dpkg takes
 * the .deb itself), so it is reported as a warning and the rest go on.
 */
function plainCopies(order: number[], o: DpkgLayerOptions, debDir: string, names: string[]): PlainCopies {
  const abort = new AbortController();
  const onOuterAbort = (): void => abort.abort();
  o.signal?.addEventListener('abort', onOuterAbort, { once: true });
  const running = (async () => {
    for (const i of order) {
      if (abort.signal.aborted) return;
      const d = o.debs[i]!;
      try {
        await writePlainDeb(d.path, path.join(debDir, PLAIN, names[i]!), `${d.entry.package} ${d.entry.version}`, abort.signal);
      } catch (err) {
        if (abort.signal.aborted) return;
        o.log(`warning: no plain copy of ${d.entry.package} (dpkg reads the .deb itself): ${(err as Error).message}`);
      }
    }
  })();
  return {
    async stop() {
      abort.abort();
      o.signal?.removeEventListener('abort', onOuterAbort);
      await running;
    },
  };
}

/**
 * The packages to unpack before dpkg can run: Essential: yes ones and, transitively,
 * the packages they were locked for (the lock's Required-By names the dependents).
 */
export function essentialSet(entries: readonly LockEntry[]): Set<string> {
  const set = new Set(entries.filter((e) => e.essential || e.requiredBy.includes('essential')).map((e) => e.package));
  for (let grew = true; grew; ) {
    grew = false;
    for (const e of entries) {
      if (!set.has(e.package) && e.requiredBy.some((r) => set.has(r))) {
        set.add(e.package);
        grew = true;
      }
    }
  }
  return set;
}

/** The package names a Pre-Depends (or Provides) field names, alternatives included. */
function relationNames(field: string | undefined): string[] {
  if (!field) return [];
  return field
    .split(/[,|]/)
    .map((s) => s.trim().split(/[\s(:]/)[0]!)
    .filter((s) => s !== '');
}

/** Splits `indices` (install order) where a package pre-depends on one of the batch so far. */
export function batches(indices: number[], controls: readonly Pick<DebControl, 'fields'>[]): number[][] {
  const out: number[][] = [];
  let batch: number[] = [];
  let provided = new Set<string>();
  for (const i of indices) {
    const fields = controls[i]!.fields;
    if (batch.length > 0 && relationNames(fields.get('Pre-Depends')).some((n) => provided.has(n))) {
      out.push(batch);
      batch = [];
      provided = new Set();
    }
    batch.push(i);
    provided.add(fields.get('Package') ?? '');
    for (const n of relationNames(fields.get('Provides'))) provided.add(n);
  }
  if (batch.length > 0) out.push(batch);
  return out;
}

/**
 * The essential packages' files with an empty dpkg database (dpkg installs them for
 * real next), as mmdebstrap's essential variant prepares its chroot.
 */
async function bootstrapTree(o: DpkgLayerOptions, essential: Set<string>, workDir: string): Promise<{ entries: LayerEntry[] }> {
  const tree = await buildAptLayerTree({
    debs: o.debs.filter((d) => essential.has(d.entry.package)).map((d) => ({ package: d.entry.package, version: d.entry.version, path: d.path })),
    arch: o.arch,
    mergedUsr: o.mergedUsr,
    workDir,
    ...(o.signal ? { signal: o.signal } : {}),
  });
  const db = 'var/lib/dpkg';
  const entries = tree.entries.filter((e) => !(e.path.startsWith(`${db}/`) && e.type !== 'directory'));
  const dir = (p: string): LayerEntry => ({ type: 'directory', path: p, mode: 0o755, uid: 0, gid: 0, mtime: 0 });
  const empty = (p: string): LayerEntry => ({ type: 'file', path: p, mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 0, content: bytesContent(Buffer.alloc(0)) });
  const have = new Set(entries.map((e) => e.path));
  for (const p of ['var', 'var/lib', db, `${db}/info`, `${db}/updates`, `${db}/triggers`, `${db}/alternatives`]) if (!have.has(p)) entries.push(dir(p));
  entries.push(empty(`${db}/status`), empty(`${db}/available`));
  return { entries };
}
