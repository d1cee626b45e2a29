import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Descriptor, Platform } from '../../src/oci/descriptor.js';
import { selectPlatform } from '../../src/registry/pull.js';

const M = 'application/vnd.oci.image.manifest.v1+json';
const d = (n: number, platform?: Platform, mediaType = M): Descriptor => ({ mediaType, digest: `sha256:${String(n).repeat(64).slice(0, 64)}`, size: n, ...(platform ? { platform } : {}) });

const index = [
  d(1, { os: 'linux', architecture: 'amd64' }),
  d(2, { os: 'linux', architecture: 'arm', variant: 'v6' }),
  d(3, { os: 'linux', architecture: 'arm', variant: 'v7' }),
  d(4, { os: 'linux', architecture: 'arm64', variant: 'v8' }),
  d(5, { os: 'unknown', architecture: 'unknown' }), // buildkit attestation manifests
  d(6, { os: 'windows', architecture: 'amd64', 'os.version': '10.0.17763' }),
  d(7, { os: 'linux', architecture: 's390x' }, 'application/vnd.oci.image.index.v1+json'),
];

const cases: Array<[string, Platform, number | RegExp]> = [
  ['exact os/arch', { os: 'linux', architecture: 'amd64' }, 1],
  ['arm64 without variant matches v8', { os: 'linux', architecture: 'arm64' }, 4],
  ['arm64/v8 asked matches v8', { os: 'linux', architecture: 'arm64', variant: 'v8' }, 4],
  ['arm/v6 exact', { os: 'linux', architecture: 'arm', variant: 'v6' }, 2],
  ['arm without variant: the highest', { os: 'linux', architecture: 'arm' }, 3],
  ['windows', { os: 'windows', architecture: 'amd64' }, 6],
  ['missing variant is an error listing what there is', { os: 'linux', architecture: 'arm', variant: 'v5' }, /no image for linux\/arm\/v5/],
  ['nested index entries are not images', { os: 'linux', architecture: 's390x' }, /no image for linux\/s390x/],
];

for (const [name, want, expected] of cases) {
  test(`selectPlatform: ${name}`, () => {
    if (typeof expected === 'number') assert.equal(selectPlatform(index, want, 'img').size, expected);
    else assert.throws(() => selectPlatform(index, want, 'img'), (err: Error & { hint?: string }) => expected.test(err.message) && /linux\/amd64/.test(err.hint ?? '') && !/unknown/.test(err.hint ?? ''));
  });
}

test('selectPlatform: an entry without variant is preferred when none is asked for', () => {
  const two = [d(1, { os: 'linux', architecture: 'amd64', variant: 'v3' }), d(2, { os: 'linux', architecture: 'amd64' })];
  assert.equal(selectPlatform(two, { os: 'linux', architecture: 'amd64' }, 'img').size, 2);
});
