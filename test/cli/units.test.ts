import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatAge, parseDuration, parseSize } from '../../src/cli/units.js';
import { OcibuildError } from '../../src/errors.js';

test('parseSize: SI and IEC units, coreutils\' single letters, decimals', () => {
  const cases: Array<[string, number]> = [
    ['0', 0],
    ['1234', 1234],
    ['512B', 512],
    ['10GB', 10_000_000_000],
    ['10gb', 10_000_000_000],
    ['500MiB', 500 * 1024 ** 2],
    ['2G', 2 * 1024 ** 3],
    ['1.5GiB', 1.5 * 1024 ** 3],
    ['4 K', 4096],
    ['4kB', 4000],
    ['1TB', 1e12],
    ['1TiB', 1024 ** 4],
    ['0.5KiB', 512],
    ['1.0001KB', 1000],
  ];
  for (const [text, bytes] of cases) assert.equal(parseSize(text), bytes, text);
});

test('parseSize: refuses what is not a size, as a usage error naming the option', () => {
  for (const text of ['', 'GB', '-1GB', '10 parsecs', '1e9', '10GBs', '1,5G', '0x10']) {
    assert.throws(() => parseSize(text, '--keep-storage'), (err: unknown) => {
      assert.ok(err instanceof OcibuildError);
      assert.equal(err.exitCode, 2);
      assert.equal(err.where, '--keep-storage');
      assert.match(err.message, /is not a size/);
      return true;
    }, text);
  }
});

test('parseDuration: units from ms to weeks, sequences, decimals, a bare 0', () => {
  const cases: Array<[string, number]> = [
    ['0', 0],
    ['0s', 0],
    ['45s', 45_000],
    ['30m', 1_800_000],
    ['12h', 43_200_000],
    ['7d', 604_800_000],
    ['2w', 1_209_600_000],
    ['1h30m', 5_400_000],
    ['1m30s', 90_000],
    ['250ms', 250],
    ['1.5d', 129_600_000],
    [' 7d ', 604_800_000],
  ];
  for (const [text, ms] of cases) assert.equal(parseDuration(text), ms, text);
});

test('parseDuration: refuses bare numbers, unknown units and leftovers', () => {
  for (const text of ['', '7', '7 d', 'd', '1y', '10min', '1h30', '-1h', '1h-30m']) {
    assert.throws(() => parseDuration(text, '--older-than'), (err: unknown) => {
      assert.ok(err instanceof OcibuildError);
      assert.equal(err.exitCode, 2);
      assert.equal(err.where, '--older-than');
      return true;
    }, text);
  }
});

test('formatAge: the largest whole unit', () => {
  const cases: Array<[number, string]> = [
    [-5, 'just now'],
    [1000, 'just now'],
    [30_000, '30s ago'],
    [90_000, '1m ago'],
    [3 * 3_600_000, '3h ago'],
    [47 * 3_600_000, '47h ago'],
    [3 * 86_400_000, '3d ago'],
  ];
  for (const [ms, text] of cases) assert.equal(formatAge(ms), text, String(ms));
});
