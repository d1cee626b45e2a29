// Pin priorities against the real apt-get: a backports-like suite (NotAutomatic +
// ButAutomaticUpgrades) and an experimental-like one (NotAutomatic) beside the release.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadUniverse } from '../../src/apt/repository.js';
import { resolve } from '../../src/apt/resolve.js';
import { parseDpkgStatus } from '../../src/apt/dpkg-status.js';
import { Store } from '../../src/store/store.js';
import { OcibuildError } from '../../src/errors.js';
import { buildAptRepo } from '../support/aptrepo.js';
import { serveDirectory } from '../support/http.js';
import { createAptSandbox, AptOracleError, diffPackageSets } from '../support/apt-oracle.js';
import { scratchDirs } from '../support/scratch.js';

const freshDir = await scratchDirs('pin-oracle');

test('backports and experimental suites: ocibuild chooses as apt-get does', async () => {
  const repo = await buildAptRepo(await freshDir('repo'), [
    { name: 'stable', components: { main: [
      { name: 'tool', version: '1.0' },
      { name: 'needs-new', version: '1', depends: 'tool (>= 2.0)' },
      { name: 'app', version: '1', depends: 'only-bpo' },
    ] } },
    { name: 'stable-backports', releaseFields: { NotAutomatic: 'yes', ButAutomaticUpgrades: 'yes' }, components: { main: [
      { name: 'tool', version: '2.0' },
      { name: 'only-bpo', version: '5' },
      { name: 'held', version: '3' },
    ] } },
    { name: 'experimental', releaseFields: { NotAutomatic: 'yes' }, components: { main: [
      { name: 'tool', version: '3.0~rc1' },
      { name: 'only-exp', version: '6' },
      { name: 'held', version: '9' },
    ] } },
  ]);
  const server = await serveDirectory(repo.dir);
  after(() => server.close());
  const suites = ['stable', 'stable-backports', 'experimental'];
  const sources = [{ url: server.url, suites, components: ['main'], keyring: repo.keyringPath }];
  const universe = await loadUniverse(sources, 'amd64', { store: new Store(await freshDir('store')) });
  assert.deepEqual(universe.origins.map((o) => o.pin ?? 500), [500, 100, 1]);

  // An installed set: `held` 1 is installed; backports (100) upgrades it, experimental (1) would not.
  const status = [
    'Package: held', 'Status: install ok installed', 'Version: 1', 'Architecture: amd64', 'Maintainer: x <x@example.org>', 'Description: x', '',
  ].join('\n');
  const statusFile = join(await freshDir('status'), 'status');
  await writeFile(statusFile, status);

  const outcomes = new Map<string, string>();
  const requests: string[][] = [['tool'], ['only-bpo'], ['only-exp'], ['app'], ['needs-new'], ['tool=2.0', 'needs-new'], ['held'], ['held=9']];
  for (const withStatus of [false, true]) {
    const apt = await createAptSandbox({ sources, arch: 'amd64', ...(withStatus ? { statusFile } : {}) });
    try {
      await apt.update();
      for (const request of requests) {
        const installed = withStatus ? parseDpkgStatus(status, statusFile, 'amd64') : [];
        let aptSet: Map<string, string> | undefined;
        try {
          aptSet = await apt.installSimulate(request);
        } catch (err) {
          if (!(err instanceof AptOracleError)) throw err;
        }
        const packages = request.map((r) => {
          const [name, version] = r.split('=');
          return version === undefined ? { name: name! } : { name: name!, version };
        });
        let ours: Map<string, string> | undefined;
        try {
          ours = new Map(resolve({ universe, packages, installed }).packages.map((p) => [p.record.package, p.record.version]));
        } catch (err) {
          if (!(err instanceof OcibuildError)) throw err;
        }
        const label = `[${request.join(' ')}]${withStatus ? ' with held 1 installed' : ''}`;
        assert.equal(ours === undefined, aptSet === undefined, `${label}: apt ${aptSet ? 'installs' : 'refuses'}, ocibuild ${ours ? 'resolves' : 'refuses'}`);
        if (aptSet && ours) assert.equal(diffPackageSets(aptSet, ours), '', label);
        outcomes.set(label, aptSet ? [...aptSet].map(([n, v]) => `${n}=${v}`).sort().join(' ') : 'refused');
      }
    } finally {
      await apt.close();
    }
  }
  // The cases mean something: apt's own answers, as the pin rules predict.
  assert.equal(outcomes.get('[tool]'), 'tool=1.0');
  assert.equal(outcomes.get('[app]'), 'app=1 only-bpo=5');
  assert.equal(outcomes.get('[needs-new]'), 'refused');
  assert.equal(outcomes.get('[tool=2.0 needs-new]'), 'needs-new=1 tool=2.0');
  assert.equal(outcomes.get('[held] with held 1 installed'), 'held=3');
});
