import { test } from 'node:test';
import assert from 'node:assert/strict';
import { extendedStates } from '../../src/build/apt-states.js';
import type { LockEntry } from '../../src/apt/lockfile.js';

const entry = (pkg: string, arch: string, requiredBy: string[]): LockEntry => ({
  package: pkg, version: '1', architecture: arch, filename: `pool/${pkg}.deb`, size: 1, sha256: '0'.repeat(64), url: 'http://x', suite: 's', component: 'main', requiredBy,
});

test('dependencies are Auto-Installed, requested and essential packages manual, the base file merged', () => {
  const base = 'Package: old-auto\nArchitecture: amd64\nAuto-Installed: 1\n\nPackage: curl\nArchitecture: amd64\nAuto-Installed: 1\n';
  const text = extendedStates(
    [entry('curl', 'amd64', ['requested']), entry('libcurl4', 'amd64', ['curl']), entry('ca-certificates', 'all', ['curl']), entry('dpkg', 'amd64', ['essential'])],
    new Set(['dpkg']),
    'amd64',
    base,
  );
  assert.equal(text, [
    'Package: ca-certificates\nArchitecture: amd64\nAuto-Installed: 1\n',
    'Package: libcurl4\nArchitecture: amd64\nAuto-Installed: 1\n',
    'Package: old-auto\nArchitecture: amd64\nAuto-Installed: 1\n',
  ].join('\n'));
});
