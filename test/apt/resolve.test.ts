import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolve, installOrder, type ResolveOptions } from '../../src/apt/resolve.js';
import type { InstalledPackage, PackageRecord, PackageUniverse } from '../../src/apt/types.js';
import { OcibuildError } from '../../src/errors.js';

type Rec = Partial<PackageRecord> & { package: string; version: string };

function universe(recs: Rec[], arch = 'amd64'): PackageUniverse {
  return {
    arch,
    origins: [
      { url: 'http://deb.example/debian', suite: 'bookworm', component: 'main', arch },
      { url: 'http://deb.example/debian', suite: 'bookworm-updates', component: 'main', arch },
      { url: 'http://deb.example/debian', suite: 'bookworm-backports', component: 'main', arch, pin: 100 },
      { url: 'http://deb.example/debian', suite: 'experimental', component: 'main', arch, pin: 1 },
    ],
    records: recs.map((r) => ({
      architecture: arch,
      multiArch: 'no',
      essential: false,
      priority: 'optional',
      preDepends: '',
      depends: '',
      recommends: '',
      conflicts: '',
      breaks: '',
      provides: '',
      filename: `pool/main/${r.package}_${r.version}_${r.architecture ?? arch}.deb`,
      size: 100,
      sha256: '0'.repeat(64),
      source: '',
      origin: 0,
      ...r,
    })),
  };
}

function names(opts: ResolveOptions): string[] {
  return resolve(opts).packages.map((p) => `${p.record.package}=${p.record.version}`);
}

function req(...n: string[]): ResolveOptions['packages'] {
  return n.map((x) => {
    const [name, version] = x.split('=');
    return version === undefined ? { name: name!, where: 'image.yaml:3:5' } : { name: name!, version, where: 'image.yaml:3:5' };
  });
}

function installed(pkg: string, version: string, extra: Partial<InstalledPackage> = {}): InstalledPackage {
  return { package: pkg, version, architecture: 'amd64', multiArch: 'no', essential: false, provides: '', depends: '', preDepends: '', conflicts: '', breaks: '', ...extra };
}

test('a dependency chain installs dependencies first', () => {
  const u = universe([
    { package: 'app', version: '1', depends: 'libfoo (>= 1.0)' },
    { package: 'libfoo', version: '1.2', depends: 'libc6' },
    { package: 'libc6', version: '2.36' },
    { package: 'unrelated', version: '1' },
  ]);
  assert.deepEqual(names({ universe: u, packages: req('app') }), ['libc6=2.36', 'libfoo=1.2', 'app=1']);
});

test('the highest version across all indices wins; a pin selects an exact one', () => {
  const u = universe([
    { package: 'a', version: '1.0' },
    { package: 'a', version: '1.0+deb12u1', origin: 1 },
    { package: 'a', version: '1:0.5' },
  ]);
  assert.deepEqual(names({ universe: u, packages: req('a') }), ['a=1:0.5']);
  assert.deepEqual(names({ universe: u, packages: req('a=1.0+deb12u1') }), ['a=1.0+deb12u1']);
  assert.throws(() => resolve({ universe: u, packages: req('a=9') }), (e: unknown) => e instanceof OcibuildError && /version 9 of a is not available/.test(e.message) && /1:0.5, 1.0\+deb12u1, 1.0/.test(e.hint ?? ''));
});

test('alternatives: the first installable alternative is chosen', () => {
  const u = universe([
    { package: 'a', version: '1', depends: 'b | c' },
    { package: 'b', version: '1' },
    { package: 'c', version: '1' },
  ]);
  assert.deepEqual(names({ universe: u, packages: req('a') }), ['b=1', 'a=1']);
  const u2 = universe([
    { package: 'a', version: '1', depends: 'missing | c' },
    { package: 'c', version: '1' },
  ]);
  assert.deepEqual(names({ universe: u2, packages: req('a') }), ['c=1', 'a=1']);
});

test('an alternative whose own dependencies fail is discarded for the next one', () => {
  const u = universe([
    { package: 'a', version: '1', depends: 'b | c' },
    { package: 'b', version: '1', depends: 'libnew (>= 3)' },
    { package: 'libnew', version: '2' },
    { package: 'c', version: '1' },
  ]);
  assert.deepEqual(names({ universe: u, packages: req('a') }), ['c=1', 'a=1']);
});

test('an alternative already satisfied by another requested package is not installed twice', () => {
  const u = universe([
    { package: 'a', version: '1', depends: 'b | c' },
    { package: 'b', version: '1' },
    { package: 'c', version: '1' },
  ]);
  // c is requested too, so a's "b | c" is already met when a resolves.
  assert.deepEqual(names({ universe: u, packages: req('a', 'c') }).sort(), ['a=1', 'c=1']);
});

test('virtual packages: a real package beats a provider; providers sorted by priority', () => {
  const u = universe([
    { package: 'a', version: '1', depends: 'foo' },
    { package: 'foo', version: '1' },
    { package: 'bar', version: '1', provides: 'foo' },
  ]);
  assert.deepEqual(names({ universe: u, packages: req('a') }), ['foo=1', 'a=1']);
  const u2 = universe([
    { package: 'mutt', version: '1', depends: 'mail-transport-agent' },
    { package: 'postfix', version: '3', provides: 'mail-transport-agent', priority: 'optional' },
    { package: 'exim4-daemon-light', version: '4', provides: 'mail-transport-agent', priority: 'standard' },
  ]);
  assert.deepEqual(names({ universe: u2, packages: req('mutt') }), ['exim4-daemon-light=4', 'mutt=1']);
});

test('versioned provides: only a provide with a matching version satisfies a versioned dependency', () => {
  const u = universe([
    { package: 'a', version: '1', depends: 'v (>= 2)' },
    { package: 'p0', version: '1', provides: 'v' },
    { package: 'p1', version: '1', provides: 'v (= 1)' },
    { package: 'p2', version: '1', provides: 'v (= 2.5)' },
  ]);
  assert.deepEqual(names({ universe: u, packages: req('a') }), ['p2=1', 'a=1']);
});

test('requesting a virtual package: one provider is selected, several are an error', () => {
  const u = universe([
    { package: 'mawk', version: '1.3', provides: 'awk', priority: 'required' },
    { package: 'x', version: '1', provides: 'editor' },
    { package: 'y', version: '1', provides: 'editor' },
  ]);
  assert.deepEqual(names({ universe: u, packages: req('awk') }), ['mawk=1.3']);
  assert.throws(() => resolve({ universe: u, packages: req('editor') }), /editor is a virtual package provided by x, y/);
});

test('an unknown package names the nearest existing names', () => {
  const u = universe([{ package: 'python3', version: '3.11' }, { package: 'python3-apt', version: '2' }, { package: 'perl', version: '5' }]);
  assert.throws(
    () => resolve({ universe: u, packages: req('pyhton3') }),
    (e: unknown) => e instanceof OcibuildError && /unknown package pyhton3/.test(e.message) && /python3/.test(e.hint ?? '') && e.where === 'image.yaml:3:5',
  );
});

test('several unknown packages are named together, each with its guesses', () => {
  const u = universe([{ package: 'nginx', version: '1.22' }, { package: 'curl', version: '7' }]);
  assert.throws(
    () => resolve({ universe: u, packages: [{ name: 'curl', where: 'image.yaml:4:5' }, { name: 'nginxx', where: 'image.yaml:5:5' }, { name: 'libfoo-nope', where: 'image.yaml:6:5' }] }),
    (e: unknown) => {
      assert.ok(e instanceof OcibuildError);
      assert.match(e.message, /unknown packages nginxx \(image\.yaml:5:5\), libfoo-nope \(image\.yaml:6:5\): no index of the configured sources has them/);
      assert.match(e.hint ?? '', /nginxx: nginx\?/);
      assert.equal(e.where, 'image.yaml:5:5');
      return true;
    },
  );
});

test('an unsatisfiable dependency is the only reason given: installable dependencies marking never reached are not blamed', () => {
  // As anytun in sid: a missing library, and libc6 / libgcc-s1 (a dependency cycle) that
  // apt never marked because it stopped at the missing one.
  const u = universe([
    { package: 'app', version: '1', depends: 'libmissing (>= 1.83), libc6, libstdc++6' },
    { package: 'libc6', version: '2.40', depends: 'libgcc-s1' },
    { package: 'libgcc-s1', version: '14', depends: 'gcc-base, libc6' },
    { package: 'libstdc++6', version: '14', depends: 'gcc-base, libc6, libgcc-s1' },
    { package: 'gcc-base', version: '14' },
  ]);
  assert.throws(
    () => resolve({ universe: u, packages: req('app') }),
    (e: unknown) => {
      assert.ok(e instanceof OcibuildError);
      assert.match(e.message, /app → libmissing \(>= 1\.83\), but no package libmissing exists in the configured sources/);
      assert.doesNotMatch(e.message, /gcc-base|libgcc-s1|cannot be installed$/m);
      assert.equal(e.message.split('\n').length, 2, e.message);
      return true;
    },
  );
});

test('an impossible version constraint shows the chain and the newest version', () => {
  const u = universe([
    { package: 'app', version: '1', depends: 'mid' },
    { package: 'mid', version: '1', depends: 'libfoo (>= 2.0)' },
    { package: 'libfoo', version: '1.8' },
  ]);
  assert.throws(
    () => resolve({ universe: u, packages: req('app') }),
    (e: unknown) => {
      assert.ok(e instanceof OcibuildError);
      assert.match(e.message, /app → mid → libfoo \(>= 2\.0\), but the newest libfoo is 1\.8 in bookworm\/main/);
      return true;
    },
  );
});

test('conflicts: a conflicting alternative is skipped; requested packages that conflict are an error', () => {
  const u = universe([
    { package: 'a', version: '1', depends: 'b | c' },
    { package: 'b', version: '1', conflicts: 'a' },
    { package: 'c', version: '1' },
  ]);
  assert.deepEqual(names({ universe: u, packages: req('a') }), ['c=1', 'a=1']);
  const u2 = universe([
    { package: 'x', version: '1' },
    { package: 'y', version: '1', breaks: 'x (<< 2)' },
  ]);
  assert.throws(() => resolve({ universe: u2, packages: req('x', 'y') }), /y breaks x \(<< 2\), but x 1 is to be installed/);
});

test('a package may conflict with a virtual name it provides itself', () => {
  const u = universe([{ package: 'mta1', version: '1', provides: 'mail-transport-agent', conflicts: 'mail-transport-agent' }]);
  assert.deepEqual(names({ universe: u, packages: req('mta1') }), ['mta1=1']);
});

test('dependency cycles resolve, and Pre-Depends order the cycle', () => {
  const u = universe([
    { package: 'a', version: '1', depends: 'b' },
    { package: 'b', version: '1', depends: 'a' },
    { package: 'c', version: '1', depends: 'd' },
    { package: 'd', version: '1', preDepends: 'c' },
  ]);
  assert.deepEqual(names({ universe: u, packages: req('a') }), ['a=1', 'b=1']);
  // c depends on d, d pre-depends on c: c must be configured first.
  assert.deepEqual(names({ universe: u, packages: req('d') }), ['c=1', 'd=1']);
});

test('installed packages satisfy dependencies and are upgraded only when required', () => {
  const u = universe([
    { package: 'a', version: '1', depends: 'libc6 (>= 2.30)' },
    { package: 'b', version: '1', depends: 'libc6 (>= 2.36)' },
    { package: 'libc6', version: '2.36' },
  ]);
  const base = [installed('libc6', '2.31')];
  assert.deepEqual(names({ universe: u, packages: req('a'), installed: base }), ['a=1']);
  assert.deepEqual(names({ universe: u, packages: req('b'), installed: base }), ['libc6=2.36', 'b=1']);
  const r = resolve({ universe: u, packages: req('libc6'), installed: [installed('libc6', '2.36')] });
  assert.deepEqual(r.packages, []);
  assert.deepEqual(r.alreadyInstalled, ['libc6']);
});

test(':any needs Multi-Arch: allowed', () => {
  const u = universe([
    { package: 'tool', version: '1', depends: 'python3:any (>= 3.9~)' },
    { package: 'python3', version: '3.11.2-1', multiArch: 'allowed' },
  ]);
  assert.deepEqual(names({ universe: u, packages: req('tool') }), ['python3=3.11.2-1', 'tool=1']);
  const u2 = universe([
    { package: 'tool', version: '1', depends: 'perl:any' },
    { package: 'perl', version: '5' },
  ]);
  assert.throws(() => resolve({ universe: u2, packages: req('tool') }), /perl:any/);
});

test('arch: all packages count as native; other architectures are ignored', () => {
  const u = universe([
    { package: 'a', version: '1', depends: 'data' },
    { package: 'data', version: '1', architecture: 'all' },
    { package: 'data', version: '9', architecture: 'arm64' },
  ]);
  assert.deepEqual(names({ universe: u, packages: req('a') }), ['data=1', 'a=1']);
});

test('Recommends are followed only when asked', () => {
  const u = universe([
    { package: 'a', version: '1', recommends: 'r' },
    { package: 'r', version: '1' },
  ]);
  assert.deepEqual(names({ universe: u, packages: req('a') }), ['a=1']);
  assert.deepEqual(names({ universe: u, packages: req('a'), recommends: true }), ['r=1', 'a=1']);
});

test('the Essential set joins the request when bootstrapping', () => {
  const u = universe([
    { package: 'dpkg', version: '1.21', essential: true, preDepends: 'libc6' },
    { package: 'base-files', version: '12', essential: true },
    { package: 'libc6', version: '2.36' },
    { package: 'hello', version: '2' },
  ]);
  const r = resolve({ universe: u, packages: req('hello'), essential: true });
  const got = r.packages.map((p) => `${p.record.package}:${p.reasons.join('+')}`);
  assert.deepEqual(got.sort(), ['base-files:essential', 'dpkg:essential', 'hello:requested', 'libc6:dpkg']);
});

test('reasons name the packages that depend on each one', () => {
  const u = universe([
    { package: 'a', version: '1', depends: 'c' },
    { package: 'b', version: '1', depends: 'c' },
    { package: 'c', version: '1' },
  ]);
  const r = resolve({ universe: u, packages: req('a', 'b') });
  const c = r.packages.find((p) => p.record.package === 'c')!;
  assert.deepEqual(c.reasons, ['a', 'b']);
  assert.equal(r.packages[0]!.record.package, 'c');
});

test('installOrder is deterministic whatever the input order', () => {
  const edges = new Map([
    ['a', { pre: [], dep: ['b', 'c'] }],
    ['b', { pre: [], dep: ['c'] }],
    ['c', { pre: [], dep: [] }],
    ['x', { pre: [], dep: ['y'] }],
    ['y', { pre: [], dep: ['x'] }],
  ]);
  const one = installOrder(['a', 'b', 'c', 'x', 'y'], edges);
  const two = installOrder(['y', 'x', 'c', 'b', 'a'].sort(), edges);
  assert.deepEqual(one, two);
  assert.ok(one.indexOf('c') < one.indexOf('b') && one.indexOf('b') < one.indexOf('a'));
});

test('a relation qualified with an unconfigured architecture matches nothing (libc6-i386:x32)', () => {
  const u = universe([
    { package: 'libc6-x32', version: '2.36', conflicts: 'libc6-i386:x32, libc6-x32:i386' },
    { package: 'libc6-i386', version: '2.36', conflicts: 'libc6-x32:i386' },
    { package: 'multi', version: '1', depends: 'libc6-x32, libc6-i386, tool:amd64' },
    { package: 'tool', version: '1' },
  ]);
  assert.deepEqual(names({ universe: u, packages: req('multi') }).sort(), ['libc6-i386=2.36', 'libc6-x32=2.36', 'multi=1', 'tool=1']);
  const u2 = universe([{ package: 'a', version: '1', depends: 'tool:arm64' }, { package: 'tool', version: '1' }]);
  assert.throws(() => resolve({ universe: u2, packages: req('a') }), /tool:arm64/);
});

test('pin priorities as apt: backports and experimental lose to the release, but serve what only they have', () => {
  const u = universe([
    { package: 'tool', version: '1.0' },
    { package: 'tool', version: '2.0', origin: 2 },
    { package: 'tool', version: '3.0~rc1', origin: 3 },
    { package: 'only-bpo', version: '5', origin: 2 },
    { package: 'only-exp', version: '6', origin: 3 },
    { package: 'needs-new', version: '1', depends: 'tool (>= 2.0)' },
  ]);
  assert.deepEqual(names({ universe: u, packages: req('tool', 'only-bpo', 'only-exp') }).sort(), ['only-bpo=5', 'only-exp=6', 'tool=1.0']);
  // apt does not reach into backports for a dependency: the user pins it.
  assert.throws(() => resolve({ universe: u, packages: req('needs-new') }), /needs-new → tool \(>= 2\.0\), but the candidate tool is 1\.0; 2\.0 in bookworm-backports would do but its suite has a lower pin priority \(request tool=2\.0 to use it\)/);
  assert.deepEqual(names({ universe: u, packages: req('tool=2.0', 'needs-new') }), ['tool=2.0', 'needs-new=1']);
  // An installed version is priority 100: backports (100) upgrades it, experimental (1) does not.
  const base = [installed('only-bpo', '4'), installed('only-exp', '5')];
  assert.deepEqual(names({ universe: u, packages: req('only-bpo', 'only-exp'), installed: base }), ['only-bpo=5']);
});
