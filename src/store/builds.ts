/**
 * Running builds, as the store sees them: each build registers itself for its whole
 * run with a small file `<root>/locks/builds/<pid>-<token>.json` (its lock record,
 * lock.ts, plus when it started), heartbeated and removed at the end. `cache prune`
 * keeps every entry used since the oldest running build started: a build marks what
 * it uses (last-use.ts), so that is everything a running build holds.
 *
 * A registration left by a killed build is judged like a stale lock (its pid is gone,
 * or, from another host, its heartbeat stopped) and removed by whoever lists them.
 */
import { mkdir, readdir, readFile, unlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { tempName, writeFileAtomic } from './atomic.js';
import { claimRecord, isStale, type LockRecord } from './lock.js';
import type { Store } from './store.js';

export interface RunningBuild {
  pid: number;
  host: string;
  /** Milliseconds since 1970, this host's clock. */
  startedAt: number;
}

export interface BuildHold {
  startedAt: number;
  release(): Promise<void>;
}

// As lock.ts: another host judges the registration by a heartbeat older than a minute.
const HEARTBEAT_MS = 10_000;

function buildsDir(store: Store): string {
  return join(store.root, 'locks', 'builds');
}

/** Registers a running build; `release()` (idempotent) ends the registration. */
export async function holdStore(store: Store): Promise<BuildHold> {
  const dir = buildsDir(store);
  await mkdir(dir, { recursive: true });
  const { record, drop } = claimRecord();
  const startedAt = Date.now();
  const file = join(dir, `${record.pid}-${record.token}.json`);
  await writeFileAtomic(file, JSON.stringify({ ...record, startedAt }) + '\n', tempName(dir));
  // unref'd: a registration never keeps the process alive by itself.
  const beat = setInterval(() => {
    const now = new Date();
    utimes(file, now, now).catch(() => undefined);
  }, HEARTBEAT_MS);
  beat.unref();
  let released = false;
  return {
    startedAt,
    async release(): Promise<void> {
      if (released) return;
      released = true;
      clearInterval(beat);
      drop();
      await unlink(file).catch(() => undefined);
    },
  };
}

/** The builds registered now, oldest first; registrations of dead builds are removed. */
export async function runningBuilds(store: Store): Promise<RunningBuild[]> {
  const dir = buildsDir(store);
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const out: RunningBuild[] = [];
  for (const name of names) {
    // Dot names are registrations being written (atomic.ts's temp files).
    if (name.startsWith('.') || !name.endsWith('.json')) continue;
    const file = join(dir, name);
    const reg = await readRegistration(file);
    if (reg === undefined) continue;
    if (await isStale(file, reg.record)) {
      await unlink(file).catch(() => undefined);
      continue;
    }
    out.push({ pid: reg.record.pid, host: reg.record.host, startedAt: reg.startedAt });
  }
  return out.sort((a, b) => a.startedAt - b.startedAt);
}

async function readRegistration(file: string): Promise<{ record: LockRecord; startedAt: number } | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const v = JSON.parse(text) as Partial<LockRecord> & { startedAt?: unknown };
    if (typeof v.pid === 'number' && typeof v.token === 'string' && typeof v.host === 'string' && typeof v.startedAt === 'number') {
      return { record: { pid: v.pid, token: v.token, host: v.host, start: typeof v.start === 'string' ? v.start : null }, startedAt: v.startedAt };
    }
  } catch {
    // Judged below as a foreign registration.
  }
  // Unreadable: judged by its age alone (as lock.ts judges a foreign lock), and dated
  // to the epoch so that, while it counts, it keeps everything.
  return { record: { pid: 0, token: `unparsable:${text}`, host: '', start: null }, startedAt: 0 };
}
