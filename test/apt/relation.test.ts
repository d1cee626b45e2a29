import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  formatOrGroup,
  formatRelation,
  parseProvides,
  parseRelations,
  type OrGroup,
  type Relation,
} from '../../src/apt/relation.js';
import { OcibuildError } from '../../src/errors.js';

/** Plain copies, so deepEqual does not trip over frozen objects or absent keys. */
function plain(groups: OrGroup[]): Relation[][] {
  return groups.map((g) => g.map((r) => JSON.parse(JSON.stringify(r)) as Relation));
}

const GOOD: Array<[string, Relation[][]]> = [
  ['', []],
  ['   \n ', []],
  ['libc6', [[{ name: 'libc6' }]]],
  [
    'libc6 (>= 2.34), libssl3 (>= 3.0.0), python3:any (>= 3.9~)',
    [
      [{ name: 'libc6', op: '>=', version: '2.34' }],
      [{ name: 'libssl3', op: '>=', version: '3.0.0' }],
      [{ name: 'python3', archQualifier: 'any', op: '>=', version: '3.9~' }],
    ],
  ],
  ['default-mta | mail-transport-agent', [[{ name: 'default-mta' }, { name: 'mail-transport-agent' }]]],
  [
    'libc6 (>= 2.36), libcurl4 (= 7.88.1-10+deb12u5), zlib1g (>= 1:1.1.4)',
    [
      [{ name: 'libc6', op: '>=', version: '2.36' }],
      [{ name: 'libcurl4', op: '=', version: '7.88.1-10+deb12u5' }],
      [{ name: 'zlib1g', op: '>=', version: '1:1.1.4' }],
    ],
  ],
  [
    // A folded field as it stands in a Packages file.
    'debconf (>= 0.5) | debconf-2.0,\n libc6 (>= 2.34),\n libgcc-s1 (>= 3.0),\n perl:any',
    [
      [{ name: 'debconf', op: '>=', version: '0.5' }, { name: 'debconf-2.0' }],
      [{ name: 'libc6', op: '>=', version: '2.34' }],
      [{ name: 'libgcc-s1', op: '>=', version: '3.0' }],
      [{ name: 'perl', archQualifier: 'any' }],
    ],
  ],
  ['dpkg (<< 1.22.0), base-files (>> 12)', [
    [{ name: 'dpkg', op: '<<', version: '1.22.0' }],
    [{ name: 'base-files', op: '>>', version: '12' }],
  ]],
  // Obsolete operators are read as dpkg reads them.
  ['foo (< 1.0), bar (> 2)', [[{ name: 'foo', op: '<=', version: '1.0' }], [{ name: 'bar', op: '>=', version: '2' }]]],
  // dpkg reads a bare version as an exact match.
  ['foo (1.0)', [[{ name: 'foo', op: '=', version: '1.0' }]]],
  ['foo(>=1.0)|bar', [[{ name: 'foo', op: '>=', version: '1.0' }, { name: 'bar' }]]],
  ['foo ( >= 1.0 ) ,bar', [[{ name: 'foo', op: '>=', version: '1.0' }], [{ name: 'bar' }]]],
  ['\tlibstdc++6 (>= 13.1),\r\n g++-12:native', [
    [{ name: 'libstdc++6', op: '>=', version: '13.1' }],
    [{ name: 'g++-12', archQualifier: 'native' }],
  ]],
  ['libc6:amd64, libc6.1 | libc0.3', [[{ name: 'libc6', archQualifier: 'amd64' }], [{ name: 'libc6.1' }, { name: 'libc0.3' }]]],
  ['a, b,', [[{ name: 'a' }], [{ name: 'b' }]]],
  // Build-Depends style restrictions.
  [
    'debhelper-compat (= 13), libsystemd-dev [linux-any] <!stage1>, python3-pytest <!nocheck> <stage1 cross>, gcc-multilib [amd64 !i386]',
    [
      [{ name: 'debhelper-compat', op: '=', version: '13' }],
      [{ name: 'libsystemd-dev', archRestrictions: ['linux-any'], buildProfiles: [['!stage1']] }],
      [{ name: 'python3-pytest', buildProfiles: [['!nocheck'], ['stage1', 'cross']] }],
      [{ name: 'gcc-multilib', archRestrictions: ['amd64', '!i386'] }],
    ],
  ],
  [
    'libfoo-dev (>= 1.2) [!hurd-any] | libbar-dev',
    [[{ name: 'libfoo-dev', op: '>=', version: '1.2', archRestrictions: ['!hurd-any'] }, { name: 'libbar-dev' }]],
  ],
];

test('parseRelations reads real field shapes', () => {
  for (const [field, expected] of GOOD) {
    assert.deepEqual(plain(parseRelations(field, 'test')), expected, JSON.stringify(field));
  }
});

test('parseRelations memoizes by field text and freezes the shared result', () => {
  const field = 'libc6 (>= 2.34), libzstd1 (>= 1.5.2)';
  const a = parseRelations(field);
  const b = parseRelations(field, 'another package');
  assert.equal(a, b);
  assert.ok(Object.isFrozen(a) && Object.isFrozen(a[0]) && Object.isFrozen(a[0]?.[0]));
  assert.throws(() => {
    (a[0] as Relation[]).push({ name: 'x' });
  }, TypeError);
});

const BAD: Array<[string, RegExp]> = [
  ['a,,b', /package name is missing at ',b'/],
  [', a', /package name is missing at ', a'/],
  ['a | | b', /package name is missing at '\| b'/],
  ['a (>= 1.0) | ', /package name is missing at the end/],
  ['+a', /must start with a letter or digit at '\+a'/],
  ['a!b', /invalid character '!' in package name 'a'/],
  ['a b', /unexpected text after 'a' at 'b'/],
  ['a :any', /unexpected text after 'a' at ':any'/],
  ['a:', /architecture must follow 'a:'/],
  ['a:any:any', /unexpected text after 'a:any' at ':any'/],
  ['a (>= 1.0', /expected '\)' after the version of 'a' at the end/],
  ['a (>= 1.0 2)', /expected '\)' after the version of 'a' at '2\)'/],
  ['a (>= )', /version is missing for 'a' at '\(>= \)'/],
  ['a (=< 1.0)', /unknown version relation '=<' for 'a'/],
  ['a (== 1.0)', /unknown version relation '=='/],
  ['a (>= 1.0) (<= 2)', /unexpected text after 'a \(>= 1.0\)' at '\(<= 2\)'/],
  ['a (>= 1.0-)', /bad version for 'a' \(invalid version '1.0-': the revision .* empty\) at '\(>= 1.0-\)'/],
  ['a (= 1:)', /invalid version '1:'/],
  ['a (>= a!b)', /invalid version 'a!b'/],
  ['a [amd64', /architecture name is expected in the restriction list of 'a' at the end/],
  ['a []', /empty architecture restriction list for 'a'/],
  ['a <>', /empty build profile list for 'a'/],
  ['a <!nocheck', /build profile name is expected for 'a'/],
  ['libc6 (>= 2.34)\n libssl3 (>= 3)', /unexpected text after 'libc6 \(>= 2.34\)' at 'libssl3 \(>= 3\)'/],
];

test('parseRelations rejects malformed fields, naming where and the text', () => {
  for (const [field, re] of BAD) {
    assert.throws(
      () => parseRelations(field, 'Packages: foo 1.0 Depends'),
      (e: unknown) => {
        assert.ok(e instanceof OcibuildError, `${field}: not an OcibuildError`);
        assert.match(e.message, re, field);
        assert.ok(e.message.includes('malformed relationship field'), e.message);
        assert.equal(e.where, 'Packages: foo 1.0 Depends');
        assert.ok(e.hint?.includes('policy 7.1'));
        assert.equal(e.exitCode, 1);
        return true;
      },
      JSON.stringify(field),
    );
  }
});

test('an error quotes the field with folded white space collapsed', () => {
  assert.throws(
    () => parseRelations('libc6 (>= 2.34),\n libfoo (>= )'),
    (e: unknown) =>
      e instanceof OcibuildError &&
      e.message.startsWith("malformed relationship field 'libc6 (>= 2.34), libfoo (>= )': ") &&
      e.where === undefined,
  );
});

test('parseProvides reads names and exact versions', () => {
  assert.deepEqual(parseProvides(''), []);
  assert.deepEqual(
    parseProvides('mail-transport-agent, default-mta'),
    [{ name: 'mail-transport-agent' }, { name: 'default-mta' }],
  );
  assert.deepEqual(
    parseProvides('libgcc1 (= 1:12.2.0-14), libgcc-s1-dev,\n python3-foo (= 2.0)'),
    [{ name: 'libgcc1', version: '1:12.2.0-14' }, { name: 'libgcc-s1-dev' }, { name: 'python3-foo', version: '2.0' }],
  );
  const field = 'awk, c-shell (= 1)';
  assert.equal(parseProvides(field), parseProvides(field));
  assert.ok(Object.isFrozen(parseProvides(field)));
});

test('parseProvides rejects what Provides does not allow', () => {
  const bad: Array<[string, RegExp]> = [
    ['foo (>= 1.0)', /only '=' versions, not 'foo \(>= 1.0\)'/],
    ['foo (<< 1.0)', /only '=' versions/],
    ['foo | bar', /cannot have alternatives \('foo \| bar'\)/],
    ['foo:any', /cannot qualify 'foo:any'/],
    ['foo [amd64]', /cannot qualify 'foo \[amd64\]'/],
    ['foo,,bar', /package name is missing/],
    ['foo (= )', /version is missing/],
  ];
  for (const [field, re] of bad) {
    assert.throws(
      () => parseProvides(field, 'Packages: bar 2.0 Provides'),
      (e: unknown) => e instanceof OcibuildError && re.test(e.message) && e.where === 'Packages: bar 2.0 Provides',
      field,
    );
  }
});

test('formatRelation and formatOrGroup write fields back for messages', () => {
  assert.equal(formatOrGroup([{ name: 'libfoo', op: '>=', version: '2.0' }, { name: 'libbar' }]), 'libfoo (>= 2.0) | libbar');
  assert.equal(formatRelation({ name: 'python3', archQualifier: 'any', op: '>=', version: '3.9~' }), 'python3:any (>= 3.9~)');
  assert.equal(
    formatRelation({ name: 'gcc', archRestrictions: ['amd64', '!i386'], buildProfiles: [['!nocheck'], ['stage1', 'cross']] }),
    'gcc [amd64 !i386] <!nocheck> <stage1 cross>',
  );
  // Parsing then formatting gives the canonical text back.
  const field = 'libc6 (>= 2.34), default-mta | mail-transport-agent, perl:any, foo (<= 1.0)';
  assert.equal(parseRelations('libc6(>=2.34),default-mta|mail-transport-agent,\n perl:any, foo (< 1.0)').map(formatOrGroup).join(', '), field);
});
