import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeIndexCache, encodeIndexCache, plainRecord, withOrigin } from '../../src/apt/index-cache.js';
import type { PackageRecord } from '../../src/apt/types.js';

const base: PackageRecord = {
  package: 'libc6', version: '2.36-9+deb12u4', architecture: 'amd64', multiArch: 'same', essential: false,
  priority: 'optional', preDepends: '', depends: 'libgcc-s1', recommends: '', conflicts: '', breaks: 'hurd (<< 1:0.9)',
  provides: '', filename: 'pool/main/g/glibc/libc6_2.36-9+deb12u4_amd64.deb', size: 2757936, sha256: 'a'.repeat(64),
  source: 'glibc', suggests: 'glibc-doc', replaces: '', enhances: '', important: false, origin: 0,
};

test('the parsed-index cache round-trips every field and shares equal strings', () => {
  const records: PackageRecord[] = [
    base,
    { ...base, package: 'base-files', essential: true, important: true, multiArch: 'foreign', size: 5_000_000_000, filename: 'pool/main/b/ünïcode_1_all.deb' },
    { ...base, package: 'x', multiArch: 'allowed', depends: 'libgcc-s1', priority: '' },
    { ...base, package: 'y', multiArch: 'no' },
  ];
  const buf = encodeIndexCache(records);
  const back = decodeIndexCache(buf, 7)!.map(plainRecord);
  assert.deepEqual(back, records.map((r) => ({ ...r, origin: 7 })));
  // Decoding from an unaligned copy (a Buffer slice of a larger pool) works too.
  const shifted = Buffer.concat([Buffer.from([1]), buf]).subarray(1);
  assert.deepEqual(decodeIndexCache(shifted, 7)!.map(plainRecord), back);
  // A record re-homed to another origin keeps every field.
  assert.deepEqual(plainRecord(withOrigin(decodeIndexCache(buf, 7)![1]!, 3)), { ...records[1]!, origin: 3 });
});

test('a damaged or foreign cache entry decodes to undefined (then the index is parsed again)', () => {
  const buf = encodeIndexCache([base]);
  // An ASCII-only table (the latin1 fast path) round-trips too.
  assert.deepEqual(decodeIndexCache(buf, 0)!.map(plainRecord), [base]);
  assert.equal(decodeIndexCache(buf.subarray(0, buf.length - 1), 0), undefined);
  assert.equal(decodeIndexCache(Buffer.from('not a cache'), 0), undefined);
  const wrongVersion = Buffer.from(buf);
  wrongVersion.writeUInt32LE(99, 4);
  assert.equal(decodeIndexCache(wrongVersion, 0), undefined);
});
