import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OcibuildError } from '../../src/errors.js';
import {
  apiHost,
  digestProblem,
  familiarName,
  formatReference,
  isInsecureByDefault,
  manifestReference,
  normalizeRegistry,
  parseReference,
  registryBaseUrl,
  type ImageReference,
} from '../../src/registry/reference.js';

const D = 'sha256:' + 'a1'.repeat(32);
const D512 = 'sha512:' + '0f'.repeat(64);

// [input, registry, repository, tag, digest]
const VALID: Array<[string, string, string, string | undefined, string | undefined]> = [
  // Docker Hub, short names
  ['ubuntu', 'docker.io', 'library/ubuntu', 'latest', undefined],
  ['ubuntu:24.04', 'docker.io', 'library/ubuntu', '24.04', undefined],
  ['library/ubuntu', 'docker.io', 'library/ubuntu', 'latest', undefined],
  ['me/app:v1', 'docker.io', 'me/app', 'v1', undefined],
  ['me/team/app', 'docker.io', 'me/team/app', 'latest', undefined],
  ['docker.io/ubuntu', 'docker.io', 'library/ubuntu', 'latest', undefined],
  ['docker.io/library/ubuntu:22.04', 'docker.io', 'library/ubuntu', '22.04', undefined],
  ['index.docker.io/x', 'docker.io', 'library/x', 'latest', undefined],
  ['index.docker.io/me/x:1', 'docker.io', 'me/x', '1', undefined],
  ['Docker.IO/ubuntu', 'docker.io', 'library/ubuntu', 'latest', undefined],
  // docker keeps registry-1.docker.io as written (no library/ prefix)
  ['registry-1.docker.io/library/ubuntu', 'registry-1.docker.io', 'library/ubuntu', 'latest', undefined],
  // registries: dots, ports, localhost, IPs
  ['ghcr.io/owner/app:1.2.3', 'ghcr.io', 'owner/app', '1.2.3', undefined],
  ['host:5000/a/b:tag', 'host:5000', 'a/b', 'tag', undefined],
  ['host:5000/a', 'host:5000', 'a', 'latest', undefined],
  ['localhost/a', 'localhost', 'a', 'latest', undefined],
  ['localhost:5000/a:b', 'localhost:5000', 'a', 'b', undefined],
  ['127.0.0.1:5000/a@' + D, '127.0.0.1:5000', 'a', undefined, D],
  ['[::1]:5000/a/b', '[::1]:5000', 'a/b', 'latest', undefined],
  ['[2001:db8::1]/a', '[2001:db8::1]', 'a', 'latest', undefined],
  ['GHCR.io/owner/app', 'ghcr.io', 'owner/app', 'latest', undefined],
  ['my-registry.example.com/a', 'my-registry.example.com', 'a', 'latest', undefined],
  ['a-b.c/d', 'a-b.c', 'd', 'latest', undefined],
  // without '.', ':' or localhost the first component is a Hub path
  ['myhost/app', 'docker.io', 'myhost/app', 'latest', undefined],
  // tag and digest
  ['a/b:tag@' + D, 'docker.io', 'a/b', 'tag', D],
  ['ubuntu@' + D, 'docker.io', 'library/ubuntu', undefined, D],
  ['quay.io/a/b@' + D512, 'quay.io', 'a/b', undefined, D512],
  ['localhost:5000/x:1.0@' + D, 'localhost:5000', 'x', '1.0', D],
  // tag grammar: \w start, then \w . -, up to 128
  ['a:_x', 'docker.io', 'library/a', '_x', undefined],
  ['a:V1.0-RC_2', 'docker.io', 'library/a', 'V1.0-RC_2', undefined],
  ['a:' + 't'.repeat(128), 'docker.io', 'library/a', 't'.repeat(128), undefined],
  // 'localhost:5000' alone is name "localhost" with tag "5000", as in docker
  ['localhost:5000', 'docker.io', 'library/localhost', '5000', undefined],
  // path-component separators: '.', '_', '__', one or more '-'
  ['x/a.b_c__d---e/f0', 'docker.io', 'x/a.b_c__d---e/f0', 'latest', undefined],
  ['0/1/2/3', 'docker.io', '0/1/2/3', 'latest', undefined],
];

for (const [input, registry, repository, tag, digest] of VALID) {
  test(`parseReference(${JSON.stringify(input.length > 60 ? input.slice(0, 60) + '…' : input)})`, () => {
    const expected: ImageReference = { registry, repository };
    if (tag !== undefined) expected.tag = tag;
    if (digest !== undefined) expected.digest = digest;
    const ref = parseReference(input);
    assert.deepEqual(ref, expected);
    // the canonical form parses back to the same reference
    assert.deepEqual(parseReference(formatReference(ref)), ref);
    assert.deepEqual(parseReference(familiarName(ref)), ref);
  });
}

// [input, message pattern]
const INVALID: Array<[string, RegExp]> = [
  ['', /is empty/],
  ['Ubuntu', /must be lower-case/],
  ['me/App:1', /must be lower-case/],
  ['ghcr.io/Owner/app', /must be lower-case/],
  ['MyOrg/app', /must be lower-case/],
  ['ubuntu:', /tag after ":" is empty/],
  ['ubuntu:.x', /invalid tag "\.x"/],
  ['ubuntu:-x', /invalid tag "-x"/],
  ['ubuntu:a+b', /invalid tag "a\+b"/],
  ['ubuntu:' + 't'.repeat(129), /invalid tag/],
  ['a:b:c', /invalid tag "b:c"/],
  ['ubuntu@sha256:abc', /sha256 takes 64 hex digits, not 3/],
  ['ubuntu@sha256:' + 'A1'.repeat(32), /hex digits must be lower-case/],
  ['ubuntu@sha256:' + 'g1'.repeat(32), /must be hex digits/],
  ['ubuntu@md5:' + 'a'.repeat(32), /unsupported digest algorithm "md5"/],
  ['ubuntu@' + 'a'.repeat(64), /expected algorithm:hex/],
  ['ubuntu@', /expected algorithm:hex/],
  ['ubuntu@1sha:' + 'a'.repeat(64), /not an algorithm name/],
  ['a@' + D + '@' + D, /invalid digest/],
  ['a'.repeat(64), /looks like an image ID/],
  ['a//b', /empty path component/],
  ['a/', /empty path component/],
  ['/a', /empty path component/],
  ['ghcr.io/', /repository name is missing/],
  [':tag', /repository name is missing/],
  ['@' + D, /repository name is missing/],
  ['-a/b', /invalid repository path component "-a"/],
  ['a_/b', /invalid repository path component "a_"/],
  ['a___b', /invalid repository path component "a___b"/],
  ['a/b.', /invalid repository path component "b\."/],
  ['a b', /contains a space/],
  ['a\tb', /control or whitespace/],
  ['exa_mple.com/a', /invalid registry "exa_mple\.com"/],
  // a '.' makes the first component a host, where '_' is not allowed
  ['a.b_c/d', /invalid registry "a\.b_c"/],
  ['-host.com/a', /invalid registry/],
  ['host.com:port/a', /port "port" is not a number/],
  ['host.com:70000/a', /port 70000 is not between/],
  ['host.com:/a', /port "" is not a number/],
  ['[::1/a', /closing "\]"/],
  ['[::g]:5000/a', /not an IPv6 address/],
  ['[::1]x/a', /unexpected "x"/],
  [':5000/a', /host name is empty/],
  ['docker://127.0.0.1:5000/base:1', /docker:\/\/ is a transport or URL prefix, not part of a reference/],
  ['https://ghcr.io/a/b', /https:\/\/ is a transport or URL prefix/],
  ['ghcr.io/' + 'a'.repeat(250), /characters long, more than the 255 allowed/],
  // the 255 limit counts the normalized name: docker.io/library/ + 238 = 256
  ['b'.repeat(238), /more than the 255 allowed/],
];

for (const [input, message] of INVALID) {
  test(`parseReference rejects ${JSON.stringify(input.length > 60 ? input.slice(0, 60) + '…' : input)}`, () => {
    let caught: unknown;
    try {
      parseReference(input, 'image.yaml:3:7');
    } catch (err) {
      caught = err;
    }
    assert.ok(caught instanceof OcibuildError, `expected an OcibuildError, got ${String(caught)}`);
    assert.match(caught.message, message);
    assert.ok(caught.message.startsWith(`invalid image reference ${JSON.stringify(input)}: `), caught.message);
    assert.equal(caught.where, 'image.yaml:3:7');
    assert.equal(caught.exitCode, 2);
    assert.ok(caught.hint && caught.hint.length > 0, 'every reference error has a hint');
  });
}

test('the longest accepted name is 255 characters', () => {
  const ref = parseReference('b'.repeat(237));
  assert.equal(`${ref.registry}/${ref.repository}`.length, 255);
});

test('the lower-case error suggests the fixed reference, keeping registry, tag and digest', () => {
  const cases: Array<[string, string]> = [
    ['Ubuntu:24.04', 'write "ubuntu:24.04"'],
    ['ghcr.io/Owner/App:V1@' + D, `write "ghcr.io/owner/app:V1@${D}"`],
    ['Foo.io/Foo', 'write "Foo.io/foo"'],
  ];
  for (const [input, hint] of cases) {
    assert.throws(() => parseReference(input, '--push'), (err: unknown) =>
      err instanceof OcibuildError && err.hint === hint && err.where === '--push');
  }
});

test('errors without a where leave it undefined and format with the hint', () => {
  try {
    parseReference('a//b');
    assert.fail('expected an error');
  } catch (err) {
    assert.ok(err instanceof OcibuildError);
    assert.equal(err.where, undefined);
    assert.match(err.format(), /^invalid image reference "a\/\/b": .*\n {2}hint: write a reference as/);
  }
});

test('formatReference and familiarName', () => {
  const cases: Array<[string, string, string]> = [
    ['ubuntu', 'docker.io/library/ubuntu:latest', 'ubuntu:latest'],
    ['me/app:1', 'docker.io/me/app:1', 'me/app:1'],
    ['library/a/b', 'docker.io/library/a/b:latest', 'library/a/b:latest'],
    ['ubuntu@' + D, `docker.io/library/ubuntu@${D}`, `ubuntu@${D}`],
    ['a:t@' + D, `docker.io/library/a:t@${D}`, `a:t@${D}`],
    ['ghcr.io/o/a:1', 'ghcr.io/o/a:1', 'ghcr.io/o/a:1'],
    ['localhost:5000/x', 'localhost:5000/x:latest', 'localhost:5000/x:latest'],
  ];
  for (const [input, canonical, familiar] of cases) {
    const ref = parseReference(input);
    assert.equal(formatReference(ref), canonical, input);
    assert.equal(familiarName(ref), familiar, input);
  }
  assert.equal(formatReference({ registry: 'r.io', repository: 'a' }), 'r.io/a');
});

test('manifestReference prefers the digest', () => {
  assert.equal(manifestReference(parseReference('a:1@' + D)), D);
  assert.equal(manifestReference(parseReference('a:1')), '1');
  assert.equal(manifestReference({ registry: 'r.io', repository: 'a' }), 'latest');
});

test('digestProblem', () => {
  assert.equal(digestProblem(D), undefined);
  assert.equal(digestProblem('sha384:' + 'c'.repeat(96)), undefined);
  assert.equal(digestProblem(D512), undefined);
  assert.match(digestProblem('sha512:' + 'c'.repeat(64)) ?? '', /sha512 takes 128/);
  assert.match(digestProblem('sha256') ?? '', /expected algorithm:hex/);
});

test('normalizeRegistry', () => {
  const cases: Array<[string, string]> = [
    ['docker.io', 'docker.io'],
    ['index.docker.io', 'docker.io'],
    ['https://index.docker.io/v1/', 'docker.io'],
    ['HTTPS://GHCR.IO', 'ghcr.io'],
    ['http://host:5000/', 'host:5000'],
    ['localhost:5000', 'localhost:5000'],
    ['[::1]:5000', '[::1]:5000'],
    [' quay.io ', 'quay.io'],
  ];
  for (const [input, expected] of cases) assert.equal(normalizeRegistry(input), expected, input);
});

test('apiHost', () => {
  const cases: Array<[string, string]> = [
    ['docker.io', 'registry-1.docker.io'],
    ['index.docker.io', 'registry-1.docker.io'],
    ['registry-1.docker.io', 'registry-1.docker.io'],
    ['ghcr.io', 'ghcr.io'],
    ['localhost:5000', 'localhost:5000'],
  ];
  for (const [input, expected] of cases) assert.equal(apiHost(input), expected, input);
});

test('isInsecureByDefault: loopback only', () => {
  const cases: Array<[string, boolean]> = [
    ['localhost', true],
    ['localhost:5000', true],
    ['LOCALHOST:5000', true],
    ['127.0.0.1', true],
    ['127.0.0.1:5000', true],
    ['127.255.3.4:80', true],
    ['[::1]', true],
    ['[::1]:5000', true],
    ['::1', true],
    ['[0:0:0:0:0:0:0:1]:5000', true],
    ['128.0.0.1:5000', false],
    ['10.0.0.1:5000', false],
    ['127.example.com', false],
    ['localhost.example.com', false],
    ['[::2]:5000', false],
    ['ghcr.io', false],
    ['docker.io', false],
  ];
  for (const [input, expected] of cases) assert.equal(isInsecureByDefault(input), expected, input);
});

test('registryBaseUrl', () => {
  const cases: Array<[string, readonly string[], string]> = [
    ['127.0.0.1:5000', [], 'http://127.0.0.1:5000'],
    ['localhost:5000', [], 'http://localhost:5000'],
    ['[::1]:5000', [], 'http://[::1]:5000'],
    ['ghcr.io', [], 'https://ghcr.io'],
    ['docker.io', [], 'https://registry-1.docker.io'],
    ['registry.lan:5000', [], 'https://registry.lan:5000'],
    ['registry.lan:5000', ['registry.lan:5000'], 'http://registry.lan:5000'],
    ['registry.lan:5000', ['http://Registry.LAN:5000/'], 'http://registry.lan:5000'],
    ['registry.lan:5000', ['registry.lan'], 'https://registry.lan:5000'],
    ['registry.lan', ['registry.lan:5000'], 'https://registry.lan'],
  ];
  for (const [registry, insecure, expected] of cases) {
    assert.equal(registryBaseUrl(registry, insecure), expected, `${registry} ${insecure.join(',')}`);
  }
  assert.equal(registryBaseUrl('127.0.0.1:5000'), 'http://127.0.0.1:5000');
  // TLS configured for a loopback registry (certs.d, --cert-dir) makes it HTTPS; --insecure-registry still wins.
  assert.equal(registryBaseUrl('127.0.0.1:5000', [], true), 'https://127.0.0.1:5000');
  assert.equal(registryBaseUrl('localhost:5000', ['localhost:5000'], true), 'http://localhost:5000');
  assert.equal(registryBaseUrl('ghcr.io', [], true), 'https://ghcr.io');
});
