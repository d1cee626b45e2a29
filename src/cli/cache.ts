/** `ocibuild cache ls` and `ocibuild cache prune`: argument checks and printing. */
import path from 'node:path';
import { OcibuildError, usageError } from '../errors.js';
import { storeInventory, type StoreEntry, type StoreInventory } from '../build/cache-inventory.js';
import { pruneStore, type PruneCriteria, type RemoveOutcome } from '../build/cache-prune.js';
import { Store } from '../store/store.js';
import { formatBytes } from './progress.js';
import { formatAge, parseDuration, parseSize } from './units.js';

export interface CacheLsOptions {
  cacheDir?: string;
  json?: boolean;
  signal?: AbortSignal;
}

export interface CachePruneOptions {
  cacheDir?: string;
  keepStorage?: string;
  olderThan?: string;
  all?: boolean;
  dryRun?: boolean;
  signal?: AbortSignal;
}

function openStore(cacheDir: string | undefined): Store {
  return new Store(cacheDir ? path.resolve(cacheDir) : Store.defaultRoot());
}

export async function cacheLsCommand(opts: CacheLsOptions): Promise<void> {
  const inv = await storeInventory(openStore(opts.cacheDir), { packages: true, ...(opts.signal ? { signal: opts.signal } : {}) });
  process.stdout.write(opts.json ? `${JSON.stringify(inventoryJson(inv), null, 2)}\n` : formatInventory(inv, Date.now()));
}

export async function cachePruneCommand(opts: CachePruneOptions): Promise<void> {
  const criteria = pruneCriteria(opts);
  const now = Date.now();
  const verb = opts.dryRun ? 'would remove' : 'removed';
  const result = await pruneStore(openStore(opts.cacheDir), {
    ...criteria,
    dryRun: Boolean(opts.dryRun),
    onEntry: (e: StoreEntry, outcome: RemoveOutcome) => {
      if (outcome === 'removed') process.stdout.write(`${verb} ${describe(e, now)}\n`);
    },
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  const lines: string[] = [];
  const count = (n: number): string => `${n} ${n === 1 ? 'entry' : 'entries'}`;
  lines.push(
    opts.dryRun
      ? `would free ${formatBytes(result.freed)} (${count(result.removed.length)}); the store would hold ${formatBytes(result.inventory.total - result.freed)}`
      : `freed ${formatBytes(result.freed)} (${count(result.removed.length)}); the store holds ${formatBytes(result.inventory.total - result.freed)}`,
  );
  const held = [...result.heldBack, ...result.inUse];
  if (held.length > 0) {
    const builds = result.inventory.builds;
    const why =
      builds.length > 0
        ? `used since ${new Date(builds[0]!.startedAt).toISOString()}, when the oldest of ${builds.length} running build${builds.length === 1 ? '' : 's'} (pid ${builds[0]!.pid}) started`
        : 'used by a build while the prune ran, or just before';
    lines.push(`kept ${count(held.length)} (${formatBytes(held.reduce((n, e) => n + e.size, 0))}) in use: ${why}`);
  }
  process.stdout.write(lines.map((l) => `${l}\n`).join(''));
  if (result.failed.length > 0) {
    const first = result.failed[0]!;
    throw new OcibuildError(`could not remove ${result.failed.length} ${result.failed.length === 1 ? 'entry' : 'entries'}: ${first.entry.kind} ${first.entry.path}: ${first.message}`, {
      where: result.inventory.root,
      hint: 'check the permissions of the store (a store shared between users is pruned by its owner, or by root)',
    });
  }
}

/** The options as criteria; at least one is needed, and --all alone. */
export function pruneCriteria(opts: Pick<CachePruneOptions, 'keepStorage' | 'olderThan' | 'all'>): PruneCriteria {
  if (opts.all) {
    if (opts.keepStorage !== undefined || opts.olderThan !== undefined) {
      throw usageError('--all removes everything not in use; give it without --keep-storage and --older-than');
    }
    return { all: true };
  }
  if (opts.keepStorage === undefined && opts.olderThan === undefined) {
    throw usageError('say what to remove', 'cache prune', 'give --keep-storage SIZE (e.g. 10GB), --older-than DURATION (e.g. 7d) or --all; add --dry-run to see what would go');
  }
  return {
    ...(opts.keepStorage !== undefined ? { keepBytes: parseSize(opts.keepStorage, '--keep-storage') } : {}),
    ...(opts.olderThan !== undefined ? { olderThanMs: parseDuration(opts.olderThan, '--older-than') } : {}),
  };
}

/** One line for an entry in prune's output. */
function describe(e: StoreEntry, now: number): string {
  return `${e.kind} ${shortId(e)} (${formatBytes(e.size)}, last used ${formatAge(now - e.lastUse)})${e.detail ? `: ${e.detail}` : ''}`;
}

function shortId(e: StoreEntry): string {
  if (e.kind === 'cache-mount') return e.id;
  return e.id.replace(/^sha256:/, '').slice(0, 12);
}

function detail(e: StoreEntry): string {
  if (e.kind === 'layer-record' && e.layer) {
    const blob = `layer ${e.layer.digest.slice(7, 19)} ${formatBytes(e.layer.size)}${e.layer.present ? '' : ' (blob gone)'}`;
    return e.layer.createdBy ? `${blob}: ${e.layer.createdBy}` : blob;
  }
  return e.detail;
}

/** The human table: one row per entry, a total, and the running builds. */
export function formatInventory(inv: StoreInventory, now: number): string {
  if (inv.entries.length === 0 && inv.scratch === 0 && inv.builds.length === 0) return `the store is empty (${inv.root})\n`;
  const rows = [['KIND', 'ID', 'SIZE', 'LAST USE', 'DETAIL'], ...inv.entries.map((e) => [e.kind, shortId(e), formatBytes(e.size), formatAge(now - e.lastUse), detail(e)])];
  const widths = [0, 1, 2, 3].map((i) => Math.max(...rows.map((r) => r[i]!.length)));
  const out = rows.map((r) => r.map((c, i) => (i < 4 ? c.padEnd(widths[i]!) : c)).join('  ').trimEnd());
  out.push('');
  const count = inv.entries.length;
  out.push(`total: ${formatBytes(inv.total)} in ${count} ${count === 1 ? 'entry' : 'entries'} (${inv.root})`);
  if (inv.scratch > 0) out.push(`scratch: ${formatBytes(inv.scratch)} in tmp/, the working space of running or killed builds (not pruned)`);
  if (inv.builds.length > 0) {
    out.push(`running builds: ${inv.builds.map((b) => `pid ${b.pid} since ${new Date(b.startedAt).toISOString()}`).join(', ')}`);
  }
  return out.map((l) => `${l}\n`).join('');
}

/** `cache ls --json`: every entry with full ids, ISO dates and what is known about it. */
export function inventoryJson(inv: StoreInventory): unknown {
  return {
    store: inv.root,
    total: inv.total,
    scratch: inv.scratch,
    builds: inv.builds.map((b) => ({ pid: b.pid, startedAt: new Date(b.startedAt).toISOString() })),
    entries: inv.entries.map((e) => ({
      kind: e.kind,
      id: e.id,
      path: e.path,
      size: e.size,
      lastUse: new Date(e.lastUse).toISOString(),
      ...(e.detail ? { detail: e.detail } : {}),
      ...(e.layer ? { layer: e.layer } : {}),
      ...(e.mediaType ? { mediaType: e.mediaType } : {}),
      ...(e.package ? { package: e.package } : {}),
      ...(e.cacheKind ? { cacheKind: e.cacheKind } : {}),
      ...(e.leftover ? { leftover: true } : {}),
    })),
  };
}
