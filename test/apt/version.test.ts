import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import {
  compareVersions,
  parseRelationOp,
  parseVersion,
  satisfies,
  type RelationOp,
} from '../../src/apt/version.js';
import { OcibuildError } from '../../src/errors.js';

type Order = '<' | '=' | '>';

// [a, expected order of a relative to b, b]
const VECTORS: Array<[string, Order, string]> = [
  // plain numbers and dots
  ['1.0', '<', '1.1'],
  ['1.2', '<', '1.10'],
  ['1.10', '>', '1.9'],
  ['1.0', '<', '1.0.1'],
  ['1', '<', '1.0'],
  ['2', '<', '10~'],
  ['0', '<', '1'],
  ['9', '<', '10'],
  ['1.002', '=', '1.2'],
  ['1.19', '<', '1.21'],
  ['20231201', '<', '20240101'],
  ['01', '=', '1'],
  ['1.000', '=', '1.0'],
  ['1.0001', '>', '1.0'],
  ['123456789012345678901234567890', '<', '123456789012345678901234567891'],
  ['99999999999999999999', '>', '9999999999999999999'],
  // epochs
  ['1:1.0', '>', '2.0'],
  ['1:1.0', '<', '2:0.1'],
  ['0:1.0', '=', '1.0'],
  ['00:1.0', '=', '1.0'],
  ['10:1', '>', '9:99'],
  ['1:0', '>', '0:999999'],
  ['2147483647:1', '>', '2147483646:9'],
  // tilde
  ['1.0~rc1', '<', '1.0'],
  ['1.0~rc1', '<', '1.0~rc2'],
  ['1.0~~', '<', '1.0~'],
  ['1.0~~a', '<', '1.0~'],
  ['1.0~', '<', '1.0'],
  ['1.0~~', '<', '1.0~~a'],
  ['1.0~beta', '<', '1.0~rc'],
  ['1~', '<', '1'],
  ['1.0~rc1', '>', '1.0~beta2'],
  ['3.9~', '<', '3.9'],
  ['3.9~', '<', '3.9.1'],
  ['3.11.2', '>', '3.9~'],
  // plus, letters versus non-letters, end of string
  ['1.0+dfsg', '>', '1.0'],
  ['1.0+b1', '>', '1.0'],
  ['1.0+', '>', '1.0'],
  ['1.0a', '>', '1.0'],
  ['1.0a', '<', '1.0+'],
  ['1.0a', '<', '1.0.'],
  ['1.0Z', '<', '1.0a'],
  ['1.0z', '<', '1.0+'],
  ['1.0.', '>', '1.0+'],
  ['1.0-x-1', '<', '1.0.x-1'],
  ['1a', '<', '1b'],
  ['1aa', '>', '1a'],
  ['1.0a1', '<', '1.0b'],
  ['1.0+1', '<', '1.0.1'],
  ['1+dfsg', '<', '1.0'],
  ['1.0~a', '<', '1.0a'],
  // revisions
  ['1.0', '=', '1.0-0'],
  ['1.0', '=', '1.0-00'],
  ['1.0-0', '<', '1.0-1'],
  ['1.0-1', '<', '1.0-2'],
  ['1.0-2', '<', '1.0-10'],
  ['1.0-1', '<', '1.0-1.1'],
  ['1.0-1~bpo1', '<', '1.0-1'],
  ['1.0-1', '<', '1.0-1+b1'],
  ['1.0-1', '<', '1.0a-1'],
  ['1.0-1-1', '>', '1.0-1'],
  ['1.0-1-1', '>', '1.0-2'],
  ['1.0-a', '>', '1.0'],
  ['1.0-~', '<', '1.0'],
  ['1.0-abc', '<', '1.0-abd'],
  ['1.0-1ubuntu1', '>', '1.0-1'],
  ['1.0-1ubuntu1', '<', '1.0-2'],
  ['1.0-1build1', '<', '1.0-1ubuntu1'],
  // colons in the upstream version once an epoch is there
  ['1:1:0', '>', '1:1'],
  ['1:1:0', '>', '1:1.0'],
  // real Debian and Ubuntu versions
  ['2:9.18.19-1~deb12u1', '<', '2:9.18.19-1'],
  ['2:9.18.19-1~deb12u1', '>', '2:9.18.16-1~deb12u1'],
  ['2:9.18.19-1~deb12u1', '>', '1:9.20.0-1'],
  ['1:2.38.1-5+deb12u3', '>', '1:2.38.1-5+deb12u2'],
  ['1:2.38.1-5+deb12u3', '>', '1:2.38.1-5'],
  ['1:2.38.1-5+deb12u3', '<', '1:2.38.1-6'],
  ['3.11.2-1+b1', '>', '3.11.2-1'],
  ['3.11.2-1+b1', '<', '3.11.2-2'],
  ['3.11.2-1+b1', '<', '3.11.4-1'],
  ['2.36-9+deb12u7', '>', '2.36-9+deb12u4'],
  ['2.35-0ubuntu3.8', '>', '2.35-0ubuntu3.1'],
  ['2.35-0ubuntu3.8', '<', '2.35-0ubuntu30'],
  ['3.10.6-1~22.04', '<', '3.10.6-1~22.04.1'],
  ['3.10.6-1~22.04', '<', '3.10.6-1'],
  ['7.88.1-10+deb12u5', '<', '7.88.1-10+deb12u12'],
  ['3.0.11-1~deb12u2', '>', '3.0.9-1'],
  ['1.21.22', '>', '1.21.9'],
  ['20230311', '<', '20240203'],
  ['2023.3.post1-1', '>', '2023.3-1'],
  ['5.2.15-2+b2', '>', '5.2.15-2+b1'],
  ['1:1.2.13.dfsg-1', '>', '1.3'],
  ['252.22-1~deb12u1', '<', '252.22-1'],
  ['6.1.0-18', '<', '6.1.0-18+b1'],
];

function sign(n: number): Order {
  return n < 0 ? '<' : n > 0 ? '>' : '=';
}

function flip(o: Order): Order {
  return o === '<' ? '>' : o === '>' ? '<' : '=';
}

test('compareVersions follows dpkg order on the table', () => {
  assert.ok(VECTORS.length >= 60);
  for (const [a, expected, b] of VECTORS) {
    assert.equal(sign(compareVersions(a, b)), expected, `${a} ${expected} ${b}`);
    assert.equal(sign(compareVersions(b, a)), flip(expected), `${b} ${flip(expected)} ${a}`);
    assert.equal(compareVersions(a, a), 0, `${a} = ${a}`);
  }
});

test('compareVersions returns only -1, 0 or 1', () => {
  assert.equal(compareVersions('1.0', '9.0'), -1);
  assert.equal(compareVersions('1.0z', '1.0+'), -1);
  assert.equal(compareVersions('9.0', '1.0'), 1);
  assert.equal(compareVersions('5:1', '1:1'), 1);
});

test('compareVersions ignores surrounding white space as dpkg does', () => {
  assert.equal(compareVersions(' 1.0 ', '1.0'), 0);
  assert.equal(compareVersions('1.0\n', '1.0-0'), 0);
});

test('parseVersion splits epoch, upstream and revision', () => {
  assert.deepEqual({ ...parseVersion('2:9.18.19-1~deb12u1') }, {
    epoch: 2,
    upstream: '9.18.19',
    revision: '1~deb12u1',
  });
  assert.deepEqual({ ...parseVersion('1.0') }, { epoch: 0, upstream: '1.0', revision: '' });
  assert.deepEqual({ ...parseVersion('1.0-1-2') }, { epoch: 0, upstream: '1.0-1', revision: '2' });
  assert.deepEqual({ ...parseVersion('1:1:0-3') }, { epoch: 1, upstream: '1:0', revision: '3' });
  assert.deepEqual({ ...parseVersion('007:1') }, { epoch: 7, upstream: '1', revision: '' });
  // apt and dpkg only warn about an upstream version that starts with a letter.
  assert.deepEqual({ ...parseVersion('abc-1') }, { epoch: 0, upstream: 'abc', revision: '1' });
  assert.ok(Object.isFrozen(parseVersion('1.0')));
});

test('parseVersion rejects what dpkg rejects, naming the version and where', () => {
  const bad: Array<[string, RegExp]> = [
    ['', /empty/],
    ['   ', /empty/],
    ['1 0', /white space/],
    ['1.0\t-1', /white space/],
    [':1.0', /epoch .*empty/],
    ['a:1.0', /epoch 'a' is not a number/],
    ['1.0-a:b', /epoch '1.0-a' is not a number/],
    ['-1:1.0', /epoch '-1' is not a number/],
    ['1.5:2', /epoch '1.5' is not a number/],
    ['2147483648:1', /too big/],
    ['99999999999:1', /too big/],
    ['1:', /nothing follows the epoch/],
    ['1.0-', /revision .* empty/],
    ['-1', /upstream version is empty/],
    ['1:-1', /upstream version is empty/],
    ['1.0!', /invalid character '!' in the upstream/],
    ['1.0_1', /invalid character '_' in the upstream/],
    ['1.0-1_2', /invalid character '_' in the revision/],
    ['1:1.0-a:b', /invalid character ':' in the revision/],
    ['1.0ä', /invalid character 'ä'/],
  ];
  for (const [v, re] of bad) {
    assert.throws(
      () => parseVersion(v, 'Packages:libfoo'),
      (e: unknown) =>
        e instanceof OcibuildError &&
        re.test(e.message) &&
        e.message.includes(`'${v}'`) &&
        e.where === 'Packages:libfoo' &&
        e.hint !== undefined,
      JSON.stringify(v),
    );
    assert.throws(() => compareVersions(v, '1.0'), OcibuildError, JSON.stringify(v));
    assert.throws(() => compareVersions('1.0', v), OcibuildError, JSON.stringify(v));
  }
  // An invalid version is refused even when compared with itself.
  assert.throws(() => compareVersions('1.0-', '1.0-'), OcibuildError);
});

test('satisfies applies each relation operator', () => {
  const cases: Array<[string, RelationOp, string, boolean]> = [
    ['1.0', '<<', '1.1', true],
    ['1.1', '<<', '1.1', false],
    ['1.1', '<=', '1.1', true],
    ['1.1-0', '<=', '1.1', true],
    ['1.2', '<=', '1.1', false],
    ['1.0', '=', '1.0-0', true],
    ['0:1.0', '=', '1.0', true],
    ['1.0-1', '=', '1.0', false],
    ['3.11.2-1+b1', '>=', '3.9~', true],
    ['3.9~rc1', '>=', '3.9~', true],
    ['3.8.10-1', '>=', '3.9~', false],
    ['2.36-9', '>>', '2.36', true],
    ['2.36', '>>', '2.36-0', false],
    ['1:1.0', '>>', '9.9', true],
  ];
  for (const [v, op, target, expected] of cases) {
    assert.equal(satisfies(v, op, target), expected, `${v} ${op} ${target}`);
  }
});

test('parseRelationOp normalizes the obsolete < and > to <= and >=', () => {
  assert.equal(parseRelationOp('<'), '<=');
  assert.equal(parseRelationOp('>'), '>=');
  for (const op of ['<<', '<=', '=', '>=', '>>'] as const) assert.equal(parseRelationOp(op), op);
  for (const op of ['', '==', '=<', '=>', '!=', '<>', '<<<']) assert.equal(parseRelationOp(op), undefined, op);
});

/** A small seeded generator so the cross-check is the same on every run. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function generatePairs(count: number, seed: number): Array<[string, string]> {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T;
  const digits = (): string => pick(['0', '1', '2', '9', '10', '01', '007', '11', '19', '21', '100', '123', '321', '20240101']);
  const text = (): string => pick(['.', '~', '~~', '+', 'a', 'b', 'z', 'A', 'Z', 'rc', 'dfsg', '.', '+b', '~rc', '~deb', 'ubuntu', '.post']);
  const run = (n: number, first: 'digit' | 'any'): string => {
    let s = first === 'digit' ? digits() : pick([digits, text])();
    for (let k = 0; k < n; k++) s += k % 2 === 0 ? text() : digits();
    return s;
  };
  const version = (): string => {
    const epoch = r() < 0.3 ? `${pick(['0', '1', '2', '01', '10'])}:` : '';
    let upstream = run(Math.floor(r() * 5), 'digit');
    const revision = r() < 0.5 ? run(Math.floor(r() * 4), 'any') : '';
    if (revision !== '' && r() < 0.2) upstream += `-${digits()}`;
    return epoch + upstream + (revision === '' ? '' : `-${revision}`);
  };
  const mutate = (v: string): string => {
    switch (Math.floor(r() * 7)) {
      case 0:
        return v + text() + digits();
      case 1:
        return v + '~';
      case 2:
        return v.includes(':') ? v : `0:${v}`;
      case 3:
        return v.lastIndexOf('-') > v.indexOf(':') ? v + '0' : `${v}-0`;
      case 4:
        return v.replace(/[0-9](?=[^0-9]*$)/, (d) => String((Number(d) + 1) % 10));
      case 5:
        return v.replace(/\.(?=[^.]*$)/, '~');
      default:
        return v.replace(/[0-9]+/, (d) => `0${d}`);
    }
  };
  const pairs: Array<[string, string]> = [];
  while (pairs.length < count) {
    const a = version();
    const b = r() < 0.4 ? version() : mutate(a);
    pairs.push(r() < 0.5 ? [a, b] : [b, a]);
  }
  return pairs;
}

const DPKG = '/usr/bin/dpkg';
// One shell per chunk runs all its comparisons; a process per pair would be slow.
const SCRIPT = `
while read -r a b; do
  if ${DPKG} --compare-versions "$a" lt "$b"; then echo '<'
  elif ${DPKG} --compare-versions "$a" eq "$b"; then echo '='
  else echo '>'; fi
done`;

async function dpkgOrders(pairs: Array<[string, string]>): Promise<Order[]> {
  const run = promisify(execFile);
  const chunks: Array<Array<[string, string]>> = [[], [], [], []];
  pairs.forEach((p, k) => chunks[k % chunks.length]?.push(p));
  const outputs = await Promise.all(
    chunks.map(async (chunk) => {
      const child = run('sh', ['-c', SCRIPT], { maxBuffer: 1 << 20 });
      child.child.stdin?.end(chunk.map(([a, b]) => `${a} ${b}\n`).join(''));
      const { stdout } = await child;
      return stdout.trim().split('\n') as Order[];
    }),
  );
  return pairs.map((_, k) => outputs[k % chunks.length]?.[Math.floor(k / chunks.length)] as Order);
}

test('compareVersions agrees with dpkg --compare-versions', async () => {
  assert.ok(existsSync(DPKG), `${DPKG} is the judge here and must exist`);
  const pairs: Array<[string, string]> = [
    ...VECTORS.map(([a, , b]): [string, string] => [a, b]),
    ...generatePairs(400, 20240611),
  ];
  for (const [a, b] of pairs) {
    parseVersion(a);
    parseVersion(b);
  }
  const expected = await dpkgOrders(pairs);
  assert.equal(expected.length, pairs.length);
  const counts = { '<': 0, '=': 0, '>': 0 };
  const mismatches: string[] = [];
  pairs.forEach(([a, b], k) => {
    const want = expected[k];
    assert.ok(want === '<' || want === '=' || want === '>', `dpkg said ${String(want)} for ${a} ${b}`);
    counts[want]++;
    const got = sign(compareVersions(a, b));
    if (got !== want) mismatches.push(`${a} ${want} ${b} (ours: ${got})`);
  });
  assert.deepEqual(mismatches, []);
  // The generator must exercise every outcome, or the check proves little.
  assert.ok(counts['<'] > 50 && counts['>'] > 50 && counts['='] > 10, JSON.stringify(counts));
});
