// planPrune: which entries a prune removes, as a pure function of the listing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planPrune } from '../../src/build/cache-prune.js';
import type { StoreEntry } from '../../src/build/cache-inventory.js';

const NOW = 1_000_000_000;
const H = 3_600_000;

function blob(id: string, size: number, hoursAgo: number, kind: StoreEntry['kind'] = 'deb'): StoreEntry {
  return { kind, id: `sha256:${id}`, path: `/s/blobs/sha256/${id}`, size, lastUse: NOW - hoursAgo * H, detail: '' };
}

function record(id: string, layer: string, hoursAgo: number, present = true): StoreEntry {
  return { kind: 'layer-record', id, path: `/s/cache/layers-v1/${id}`, size: 1, lastUse: NOW - hoursAgo * H, detail: '', layer: { digest: `sha256:${layer}`, size: 0, mediaType: 'x', present } };
}

// Oldest first: deb a (10 h), layer L (5 h) with its record r (5 h), deb b (1 h),
// deb c used by a running build (held: newer than the cutoff), a record whose layer is gone.
const entries: StoreEntry[] = [
  blob('a', 100, 10),
  blob('L', 200, 5, 'layer'),
  record('r', 'L', 5),
  blob('b', 300, 1),
  blob('c', 400, 0),
  record('dead', 'gone', 0.5, false),
];
const CUTOFF = NOW - 0.1 * H;
const ids = (es: StoreEntry[]): string[] => es.map((e) => e.id.replace(/^sha256:/, ''));

test('planPrune: --all removes everything not held; a layer takes its records along', () => {
  const plan = planPrune(entries, { all: true }, NOW, CUTOFF);
  assert.deepEqual(ids(plan.remove), ['dead', 'a', 'L', 'r', 'b']);
  assert.deepEqual(ids(plan.held), ['c']);
  assert.equal(plan.remaining, 400);
});

test('planPrune: --older-than removes what was last used before now - duration (and worthless records)', () => {
  const cases: Array<[number, string[]]> = [
    [24 * H, ['dead']],
    [6 * H, ['dead', 'a']],
    [2 * H, ['dead', 'a', 'L', 'r']],
    [0, ['dead', 'a', 'L', 'r', 'b']],
  ];
  for (const [olderThanMs, want] of cases) assert.deepEqual(ids(planPrune(entries, { olderThanMs }, NOW, CUTOFF).remove), want, String(olderThanMs));
});

test('planPrune: --keep-storage removes the least recently used until the store fits', () => {
  const cases: Array<[number, string[], number]> = [
    [10_000, ['dead'], 1001],
    [1001, ['dead'], 1001],
    [1000, ['dead', 'a'], 901],
    [901, ['dead', 'a'], 901],
    // A record is not removed alone: it goes with its layer.
    [900, ['dead', 'a', 'L', 'r'], 700],
    [0, ['dead', 'a', 'L', 'r', 'b'], 400],
  ];
  for (const [keepBytes, want, remaining] of cases) {
    const plan = planPrune(entries, { keepBytes }, NOW, CUTOFF);
    assert.deepEqual(ids(plan.remove), want, String(keepBytes));
    assert.equal(plan.remaining, remaining, String(keepBytes));
  }
});

test('planPrune: both criteria add up; nothing held is ever planned', () => {
  assert.deepEqual(ids(planPrune(entries, { olderThanMs: 6 * H, keepBytes: 900 }, NOW, CUTOFF).remove), ['dead', 'a', 'L', 'r']);
  // Everything held (a build started before all of it was used): nothing goes.
  const plan = planPrune(entries, { all: true }, NOW, NOW - 100 * H);
  assert.deepEqual(plan.remove, []);
  assert.equal(plan.held.length, entries.length);
});
