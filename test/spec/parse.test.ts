import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { OcibuildError } from '../../src/errors.js';
import { editDistance, loadSpec, nearest, parseSpec } from '../../src/spec/parse.js';

const FILE = '/work/proj/image.yaml';

function fails(yaml: string, message: RegExp, at: string, hint?: RegExp): OcibuildError {
  let caught: unknown;
  try {
    parseSpec(yaml, FILE);
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof OcibuildError, `expected an OcibuildError for:\n${yaml}\ngot ${String(caught)}`);
  assert.match(caught.message, message);
  assert.equal(caught.where, `${FILE}:${at}`, `position of: ${caught.message}`);
  assert.equal(caught.exitCode, 2);
  assert.ok(caught.hint && caught.hint.length > 0, 'every spec error has a hint');
  if (hint) assert.match(caught.hint, hint);
  return caught;
}

const FULL = `from: docker.io/library/ubuntu:22.04
apt:
  sources:
    - url: http://archive.ubuntu.com/ubuntu/
      suites: [jammy, jammy-updates, jammy-security]
      components: [main, universe]
      keyring: path/to/keyring.gpg
  packages: [python3, curl, ca-certificates, "python3-minimal=3.10.6-1~22.04", "libc6:i386", "zlib1g:i386=1:1.2.11"]
  install: dpkg
  recommends: false
  lockfile: locks/Packages-{suite}-{arch}.lock
run: [ "useradd --system app" ]
files:
  - {src: build/server, dest: /usr/local/bin/server, mode: "0755"}
  - {src: ./etc/app.conf, dest: /etc/app.conf, mode: 0644, uid: 0, gid: 1000}
config:
  env: {PATH: /usr/bin, VERSION: 1.10, DEBUG: true}
  entrypoint: [/usr/local/bin/server]
  cmd: serve --port 8080
  workdir: /
  user: ""
  labels: {org.opencontainers.image.version: 2}
  expose: [8080, "9090/tcp", 53/udp]
platforms: [linux/amd64, linux/arm64/v8]
`;

test('the full example parses into a normalized ImageSpec', () => {
  const spec = parseSpec(FULL, FILE);
  assert.equal(spec.path, FILE);
  assert.equal(spec.dir, '/work/proj');
  assert.equal(spec.from, 'docker.io/library/ubuntu:22.04');
  assert.deepEqual(spec.apt?.sources, [{
    url: 'http://archive.ubuntu.com/ubuntu',
    suites: ['jammy', 'jammy-updates', 'jammy-security'],
    components: ['main', 'universe'],
    keyring: '/work/proj/path/to/keyring.gpg',
  }]);
  assert.deepEqual(spec.apt?.packages, [
    { name: 'python3', where: `${FILE}:8:14` },
    { name: 'curl', where: `${FILE}:8:23` },
    { name: 'ca-certificates', where: `${FILE}:8:29` },
    { name: 'python3-minimal', version: '3.10.6-1~22.04', where: `${FILE}:8:46` },
    { name: 'libc6', arch: 'i386', where: `${FILE}:8:80` },
    { name: 'zlib1g', arch: 'i386', version: '1:1.2.11', where: `${FILE}:8:94` },
  ]);
  assert.equal(spec.apt?.install, 'dpkg');
  assert.equal(spec.apt?.recommends, false);
  assert.equal(spec.apt?.lockfile, '/work/proj/locks/Packages-{suite}-{arch}.lock');
  assert.equal(spec.apt?.preset, undefined);
  assert.equal(spec.apt?.presetKind, undefined);
  assert.deepEqual(spec.run?.commands, ['useradd --system app']);
  assert.deepEqual(spec.files, [
    { src: '/work/proj/build/server', dest: '/usr/local/bin/server', mode: 0o755, where: '/work/proj/image.yaml:14:5' },
    { src: '/work/proj/etc/app.conf', dest: '/etc/app.conf', mode: 0o644, uid: 0, gid: 1000, where: '/work/proj/image.yaml:15:5' },
  ]);
  assert.deepEqual(spec.config, {
    env: { PATH: '/usr/bin', VERSION: '1.10', DEBUG: 'true' },
    entrypoint: ['/usr/local/bin/server'],
    cmd: ['/bin/sh', '-c', 'serve --port 8080'],
    workdir: '/',
    user: '',
    labels: { 'org.opencontainers.image.version': '2' },
    expose: ['8080/tcp', '9090/tcp', '53/udp'],
  });
  assert.deepEqual(spec.platforms, [
    { os: 'linux', architecture: 'amd64' },
    { os: 'linux', architecture: 'arm64', variant: 'v8' },
  ]);
});

test('defaults: no apt section, one linux/amd64 platform, empty config', () => {
  const spec = parseSpec('from: docker.io/library/alpine:3.20\n', FILE);
  assert.equal(spec.apt, undefined);
  assert.equal(spec.run, undefined);
  assert.deepEqual(spec.files, []);
  assert.deepEqual(spec.config, { env: {}, labels: {}, expose: [] });
  assert.deepEqual(spec.platforms, [{ os: 'linux', architecture: 'amd64' }]);
});

test("the seed's form: ubuntu_version + apt_dependencies", () => {
  const spec = parseSpec('ubuntu_version: "22.04"\napt_dependencies: [python3, curl]\nrun: useradd app\n', FILE);
  assert.equal(spec.from, 'docker.io/library/ubuntu:22.04');
  assert.deepEqual(spec.apt?.sources, [{
    url: 'http://archive.ubuntu.com/ubuntu',
    suites: ['jammy', 'jammy-updates', 'jammy-security'],
    components: ['main', 'universe'],
  }]);
  assert.equal(spec.apt?.preset, 'ubuntu 22.04');
  assert.equal(spec.apt?.presetKind, 'ubuntu');
  assert.equal(spec.apt?.presetVersion, '22.04');
  assert.deepEqual(spec.apt?.packages.map((p) => p.name), ['python3', 'curl']);
  assert.equal(spec.apt?.packages[0]?.where, `${FILE}:2:20`);
  assert.deepEqual(spec.run?.commands, ['useradd app']);
});

test('an unquoted ubuntu_version keeps its written digits (24.10 is not 24.1)', () => {
  const spec = parseSpec('ubuntu_version: 24.10\n', FILE);
  assert.equal(spec.from, 'docker.io/library/ubuntu:24.10');
  assert.deepEqual(spec.apt?.sources[0]?.suites, ['oracular', 'oracular-updates', 'oracular-security']);
});

test('ubuntu_version keeps an explicit from (e.g. a mirror of the base image)', () => {
  const spec = parseSpec('from: registry.local/base/ubuntu-min:1\nubuntu_version: noble\napt_dependencies: [curl]\n', FILE);
  assert.equal(spec.from, 'registry.local/base/ubuntu-min:1');
  assert.equal(spec.apt?.presetVersion, '24.04');
});

test('debian_version preset, by number or codename', () => {
  for (const v of ['12', 'bookworm', '"12"']) {
    const spec = parseSpec(`debian_version: ${v}\napt: {packages: [curl]}\n`, FILE);
    assert.equal(spec.from, 'docker.io/library/debian:12');
    assert.deepEqual(spec.apt?.sources, [
      { url: 'http://deb.debian.org/debian', suites: ['bookworm', 'bookworm-updates'], components: ['main'] },
      { url: 'http://deb.debian.org/debian-security', suites: ['bookworm-security'], components: ['main'] },
    ]);
    assert.equal(spec.apt?.preset, 'debian 12');
  }
  const trixie = parseSpec('debian_version: trixie\nfrom: scratch\napt_dependencies: [base-files]\n', FILE);
  assert.equal(trixie.from, 'scratch');
  assert.equal(trixie.apt?.presetVersion, '13');
  // Nothing in scratch can run maintainer scripts, so the default is unpack.
  assert.equal(trixie.apt?.install, 'unpack');
});

test('sources derived from a debian or ubuntu base image tag', () => {
  const cases: [string, string, string][] = [
    ['debian:12', 'debian', '12'],
    ['docker.io/library/debian:bookworm', 'debian', '12'],
    ['debian:bookworm-slim', 'debian', '12'],
    ['debian:11.9', 'debian', '11'],
    ['ubuntu:22.04', 'ubuntu', '22.04'],
    ['docker.io/library/ubuntu:noble-20240801@sha256:' + 'a'.repeat(64), 'ubuntu', '24.04'],
  ];
  for (const [from, kind, version] of cases) {
    const spec = parseSpec(`from: ${from}\napt:\n  packages: [curl]\n`, FILE);
    assert.equal(spec.from, from);
    assert.equal(spec.apt?.presetKind, kind, from);
    assert.equal(spec.apt?.presetVersion, version, from);
    assert.equal(spec.apt?.install, 'dpkg');
  }
  const deb = parseSpec('from: debian:12\napt:\n  packages: [curl]\n', FILE);
  assert.deepEqual(deb.apt?.sources.map((s) => s.url), ['http://deb.debian.org/debian', 'http://deb.debian.org/debian-security']);
});

test('arm64 ubuntu uses ports.ubuntu.com, for the first platform', () => {
  const spec = parseSpec('ubuntu_version: "22.04"\napt_dependencies: [curl]\nplatforms: [linux/arm64, linux/amd64]\n', FILE);
  assert.equal(spec.apt?.sources[0]?.url, 'http://ports.ubuntu.com/ubuntu-ports');
});

test('install, recommends and a single-string run', () => {
  const spec = parseSpec('from: debian:12\napt: {packages: [curl], install: unpack, recommends: true}\nrun: "echo hi"\n', FILE);
  assert.equal(spec.apt?.install, 'unpack');
  assert.equal(spec.apt?.recommends, true);
  assert.deepEqual(spec.run?.commands, ['echo hi']);
});

test('YAML anchors and aliases are followed', () => {
  const yaml = [
    'from: debian:12',
    'apt:',
    '  packages: &pk [curl, wget]',
    'config:',
    '  env: {A: &v hello, B: *v}',
    'run: *pk',
    '',
  ].join('\n');
  const spec = parseSpec(yaml, FILE);
  assert.deepEqual(spec.config.env, { A: 'hello', B: 'hello' });
  assert.deepEqual(spec.run?.commands, ['curl', 'wget']);
});

test('malformed YAML reports the parser position', () => {
  // A bad from: is reported at its line, before apt.sources could be missed for it.
  fails('# comment\n\napt:\n  packages: [curl]\nfrom: "127.0.0.1:5001/Base:1"\n', /^from: invalid image reference "127\.0\.0\.1:5001\/Base:1": .*lower-case/, '5:7');
  fails('from: "registry.example.com/app:1 "\n', /contains spaces/, '1:7');
  fails('from: "base@sha256:abc"\n', /^from: invalid image reference/, '1:7');
  fails('from: debian:12\napt: [curl,\n', /^invalid YAML: /, '3:1');
  // files: destinations are file paths, plain, one per entry, not nested.
  fails('from: scratch\nfiles:\n  - {src: a, dest: /usr/local/bin/}\n', /names a directory; dest is the file's own path/, '3:20');
  fails('from: scratch\nfiles:\n  - {src: a, dest: /}\n', /names a directory/, '3:20');
  fails('from: scratch\nfiles:\n  - {src: a, dest: /opt/../../etc/evil}\n', /has an empty, "\." or "\.\." component/, '3:20');
  fails('from: scratch\nfiles:\n  - {src: a, dest: /opt//x}\n', /has an empty/, '3:20');
  fails('from: scratch\nfiles:\n  - {src: a, dest: /x}\n  - {src: b, dest: /x}\n', /\/x is also the dest of an earlier entry \(.*image\.yaml:3:5\)/, '4:5');
  fails('from: scratch\nfiles:\n  - {src: a, dest: /usr/local/bin/tool}\n  - {src: b, dest: /usr/local/bin/tool/sub}\n', /would be inside \/usr\/local\/bin\/tool/, '4:5');
  fails('from: debian:12\nrun: "unterminated\n', /^invalid YAML: Missing closing/, '3:1');
});

test('the document must be a mapping', () => {
  fails('- from: debian:12\n', /must be a mapping.*got a list/, '1:1');
  fails('', /must be a mapping.*got nothing/, '1:1');
  fails('just a string\n', /must be a mapping.*got the string/, '1:1');
});

test('duplicate keys name the key and the first line', () => {
  fails('from: debian:12\nrun: [a]\nfrom: debian:11\n', /^duplicate key from \(first set on line 1\)/, '3:1');
  fails('from: debian:12\napt:\n  packages: [a1]\n  recommends: true\n  packages: [b1]\n', /duplicate key apt\.packages \(first set on line 3\)/, '5:3');
});

test('unknown keys at every level, with the nearest known key', () => {
  fails('from: debian:12\nplatfrom: [linux/amd64]\n', /^unknown key platfrom$/, '2:1', /did you mean platforms\?/);
  fails('from: debian:12\nbogus: 1\n', /^unknown key bogus$/, '2:1', /known keys here: from, apt/);
  fails('from: debian:12\npackages: [curl]\n', /^unknown key packages$/, '2:1', /belongs in apt\.packages/);
  fails('from: debian:12\napt:\n  pakages: [curl]\n', /^unknown key apt\.pakages$/, '3:3', /did you mean packages\?/);
  fails('from: debian:12\napt:\n  suites: [x]\n', /^unknown key apt\.suites$/, '3:3', /belongs in an entry of apt\.sources/);
  fails('from: x\napt:\n  sources:\n    - url: http://a/\n      suite: [b]\n      components: [main]\n',
    /^unknown key apt\.sources\[0\]\.suite$/, '5:7', /did you mean suites\?/);
  fails('from: x\nfiles:\n  - {src: a, dest: /a, mdoe: "0644"}\n', /^unknown key files\[0\]\.mdoe$/, '3:24', /did you mean mode\?/);
  fails('from: x\nconfig:\n  entrypiont: [a]\n', /^unknown key config\.entrypiont$/, '3:3', /did you mean entrypoint\?/);
});

test('wrong types', () => {
  fails('from: debian:12\napt:\n  packages: python3\n', /apt\.packages: expected a list of package names, got the string "python3"/, '3:13');
  fails('from: debian:12\napt_dependencies: curl\n', /apt_dependencies: expected a list of package names/, '2:19');
  fails('from: debian:12\napt:\n  packages: [curl]\n  recommends: "yes"\n', /apt\.recommends: expected true or false, got the string "yes"/, '4:15');
  fails('from: debian:12\napt:\n  packages: [curl]\n  install: apt-get\n', /apt\.install: unknown mode "apt-get"/, '4:12');
  fails('from: [debian]\n', /from: expected a string, got a list/, '1:7');
  fails('from: x\nrun: [ls, 3]\n', /run: expected a list of commands, but this item is the number 3/, '2:11');
  fails('from: x\napt: [curl]\n', /apt: expected a mapping/, '2:6');
  fails('from: x\nconfig:\n  env: {A: [1]}\n', /config\.env\.A: expected a string, got a list/, '3:12');
  fails('from: x\nconfig:\n  env: {A: }\n', /config\.env\.A: expected a string, got nothing/, '3:12');
  fails('from: x\nconfig:\n  cmd: {a: b}\n', /config\.cmd: expected a list of strings, got a mapping/, '3:8');
  fails('from: x\nconfig:\n  workdir: app\n', /config\.workdir: "app" must be an absolute path/, '3:12');
  fails('from: x\nplatforms: linux/amd64\n', /platforms: expected a list of platforms/, '2:12');
});

test('file entries: mode, uid, required keys, absolute dest', () => {
  fails('from: x\nfiles:\n  - {src: a, dest: /a, mode: "rwx"}\n', /files\[0\]\.mode: "rwx" is not an octal file mode/, '3:30');
  fails('from: x\nfiles:\n  - {src: a, dest: /a, mode: 0789}\n', /files\[0\]\.mode: "0789" is not an octal file mode/, '3:30');
  fails('from: x\nfiles:\n  - {src: a, dest: /a, mode: [7]}\n', /files\[0\]\.mode: expected an octal string like "0755" or an integer/, '3:30');
  fails('from: x\nfiles:\n  - {src: a, dest: usr/bin/a}\n', /files\[0\]\.dest: "usr\/bin\/a" must be an absolute path/, '3:20');
  fails('from: x\nfiles:\n  - {dest: /a}\n', /files\[0\]: missing key src/, '3:5');
  fails('from: x\nfiles:\n  - src: a\n    dest: /a\n  - src: b\n', /files\[1\]: missing key dest/, '5:5');
  fails('from: x\nfiles:\n  - {src: a, dest: /a, uid: -1}\n', /files\[0\]\.uid: expected a numeric id/, '3:29');
  const spec = parseSpec('from: x\nfiles:\n  - {src: a, dest: /a, mode: 0o750}\n  - {src: b, dest: /b, mode: 4755}\n', FILE);
  assert.deepEqual(spec.files.map((f) => f.mode), [0o750, 0o4755]);
});

test('scratch with packages needs sources', () => {
  const err = fails('from: scratch\napt:\n  packages: [curl]\n',
    /^from: scratch has no distribution to derive sources from; add apt\.sources or debian_version\/ubuntu_version$/, '1:7');
  assert.match(err.format(), /hint: /);
  // Without packages there is nothing to resolve, so no sources are needed.
  assert.deepEqual(parseSpec('from: scratch\napt: {install: unpack}\n', FILE).apt?.sources, []);
});

test('other base images without sources are an error; tags that name no release too', () => {
  fails('from: docker.io/library/alpine:3.20\napt:\n  packages: [curl]\n', /apt\.sources is required: docker\.io\/library\/alpine:3\.20 is not a debian or ubuntu image/, '1:7');
  fails('from: debian:latest\napt:\n  packages: [curl]\n', /cannot tell which debian release debian:latest is/, '1:7', /known: 11 \(bullseye\)/);
  fails('from: ubuntu\napt:\n  packages: [curl]\n', /cannot tell which ubuntu release ubuntu is/, '1:7');
});

test('missing from without a preset', () => {
  fails('apt:\n  packages: [curl]\n', /^missing key from$/, '1:1');
});

test('unknown preset versions list the known ones', () => {
  fails('ubuntu_version: "23.04"\n', /unknown ubuntu_version "23\.04"/, '1:17', /22\.04 \(jammy\)/);
  fails('debian_version: buster\n', /unknown debian_version "buster"/, '1:17', /12 \(bookworm\)/);
});

test('an alias and its long form together name both lines', () => {
  fails('from: debian:12\napt:\n  packages: [curl]\napt_dependencies: [wget]\n',
    /^apt_dependencies \(line 4\) and apt\.packages \(line 3\) are both set$/, '4:1');
  fails('ubuntu_version: "22.04"\ndebian_version: "12"\n', /^ubuntu_version \(line 1\) and debian_version \(line 2\) are both set$/, '2:1');
  fails('ubuntu_version: "22.04"\napt:\n  sources:\n    - {url: http://a, suites: [b], components: [c]}\n',
    /^ubuntu_version \(line 1\) and apt\.sources \(line 3\) are both set$/, '3:3');
});

test('package names, versions and qualifiers follow Debian syntax, at the item position', () => {
  const bad: [string, RegExp][] = [
    ['Python3', /invalid package name "Python3"/],
    ['a', /invalid package name "a"/],
    ['-foo', /invalid package name "-foo"/],
    ['"foo bar"', /invalid package name "foo bar"/],
    ['"foo=1.0 beta"', /invalid version "1\.0 beta"/],
    ['"foo="', /invalid version ""/],
    ['"foo=a:1"', /invalid version "a:1"/],
    ['"foo=1.0-"', /invalid version "1\.0-"/],
    ['"foo:I386"', /invalid architecture "I386"/],
    ['42', /expected a package name, got the number 42/],
  ];
  for (const [item, message] of bad) {
    fails(`from: debian:12\napt:\n  packages:\n    - curl\n    - ${item}\n`, message, '5:7');
  }
});

test('duplicate package entries are an error at the second one', () => {
  fails('from: debian:12\napt:\n  packages:\n    - curl\n    - wget\n    - curl=7.88.1-10\n',
    /apt\.packages: curl is listed twice \(first on line 4\)/, '6:7');
  // Different architecture qualifiers are different requests.
  const spec = parseSpec('from: debian:12\napt:\n  packages: [libc6, "libc6:i386"]\n', FILE);
  assert.equal(spec.apt?.packages.length, 2);
});

test('sources: url scheme, lists, flat repositories', () => {
  const src = (body: string): string => `from: x\napt:\n  sources:\n    - ${body}\n  packages: [curl]\n`;
  fails(src('{url: ftp://a/debian, suites: [b], components: [main]}'), /apt\.sources\[0\]\.url: "ftp:\/\/a\/debian" is not an http\(s\) URL/, '4:13');
  fails(src('{url: not a url, suites: [b], components: [main]}'), /is not an http\(s\) URL/, '4:13');
  fails(src('{suites: [b], components: [main]}'), /apt\.sources\[0\]: missing key url/, '4:7');
  fails(src('{url: http://a, suites: [], components: [main]}'), /apt\.sources\[0\]\.suites: the list is empty/, '4:31');
  fails(src('{url: http://a, suites: b, components: [main]}'), /apt\.sources\[0\]\.suites: expected a list of suites/, '4:31');
  fails(src('{url: http://a, suites: [b]}'), /apt\.sources\[0\]: missing key components/, '4:7');
  fails(src('{url: http://a, suites: [b], components: [1]}'), /components: expected a list of components, but this item is the number 1/, '4:49');
  fails(src('{url: http://a, suites: [stable, ./], components: [main]}'), /"\.\/": flat repositories are not supported yet/, '4:40');
  fails('from: x\napt:\n  sources: []\n', /apt\.sources: the list is empty/, '3:12');
  const spec = parseSpec(src('{url: "https://mirror.example/debian//", suites: [b], components: [main], keyring: ../keys/k.asc}'), FILE);
  assert.deepEqual(spec.apt?.sources, [{ url: 'https://mirror.example/debian', suites: ['b'], components: ['main'], keyring: '/work/keys/k.asc' }]);
});

test('lockfile placeholders', () => {
  fails('from: debian:12\napt:\n  lockfile: lock-{release}.lock\n', /apt\.lockfile: unknown placeholder \{release\}/, '3:13');
});

test('config expose and env validation', () => {
  fails('from: x\nconfig:\n  expose: [8080, 70000]\n', /config\.expose: "70000" is not a port/, '3:18');
  fails('from: x\nconfig:\n  expose: ["80/http"]\n', /config\.expose: "80\/http" is not a port/, '3:12');
  fails('from: x\nconfig:\n  expose: [80, 80/tcp]\n', /config\.expose: 80\/tcp is listed twice \(first on line 3\)/, '3:16');
  fails('from: x\nconfig:\n  env: {"A=B": c}\n', /config\.env: invalid variable name "A=B"/, '3:9');
});

test('platforms are validated and unique', () => {
  fails('from: x\nplatforms: [linux/amd64, linux/x86_64]\n', /unknown platform architecture "x86_64"/, '2:26', /linux\/amd64/);
  fails('from: x\nplatforms: [windows/amd64]\n', /unsupported platform os "windows"/, '2:13');
  fails('from: x\nplatforms: [linux/arm64, linux/arm64/v8]\n', /platforms: linux\/arm64\/v8 is listed twice \(first on line 2\)/, '2:26');
  fails('from: x\nplatforms: []\n', /platforms: the list is empty/, '2:12');
});

test('nearest key suggestions are typo-sized only', () => {
  assert.equal(editDistance('platfrom', 'platform'), 1);
  assert.equal(editDistance('', 'abc'), 3);
  assert.equal(nearest('platfrom', ['from', 'platforms']), 'platforms');
  assert.equal(nearest('foo', ['from', 'apt']), undefined);
  assert.equal(nearest('RUN', ['from', 'run']), 'run');
});

test('loadSpec reads a file and resolves paths against its directory', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'ocibuild-spec-'));
  try {
    const file = path.join(dir, 'image.yaml');
    await writeFile(file, 'from: debian:12\nfiles: [{src: app, dest: /app}]\n');
    const spec = await loadSpec(file);
    assert.equal(spec.path, file);
    assert.equal(spec.files[0]?.src, path.join(dir, 'app'));

    const missing = path.join(dir, 'nope.yaml');
    await assert.rejects(loadSpec(missing), (err: unknown) => {
      assert.ok(err instanceof OcibuildError);
      assert.equal(err.exitCode, 2);
      assert.match(err.message, /image spec not found/);
      assert.equal(err.where, missing);
      assert.match(err.hint ?? '', /-f PATH/);
      return true;
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('annotations: a map of strings kept as written, separate from config.labels', () => {
  const spec = parseSpec([
    'from: scratch',
    'config:',
    '  labels: {com.example.label: l}',
    'annotations:',
    '  org.opencontainers.image.source: https://git.example.com/team/app',
    '  org.opencontainers.image.revision: 0123abc',
    '  org.opencontainers.image.version: 1.10',
    '  com.example.note: "two words"',
    '',
  ].join('\n'), FILE);
  assert.deepEqual(spec.annotations, {
    'org.opencontainers.image.source': 'https://git.example.com/team/app',
    'org.opencontainers.image.revision': '0123abc',
    'org.opencontainers.image.version': '1.10',
    'com.example.note': 'two words',
  });
  assert.deepEqual(spec.config.labels, { 'com.example.label': 'l' });
  assert.deepEqual(parseSpec('from: scratch\n', FILE).annotations, {});
});

test('annotations: keys ocibuild sets, bad keys, bad source and revision values, wrong places', () => {
  fails('from: scratch\nannotations: [a]\n', /annotations: expected a mapping/, '2:14');
  fails('from: scratch\nannotations:\n  org.opencontainers.image.created: "2024"\n', /annotation org\.opencontainers\.image\.created cannot be set by hand/, '3:3', /SOURCE_DATE_EPOCH/);
  fails('from: scratch\nannotations:\n  org.opencontainers.image.ref.name: x\n', /cannot be set by hand/, '3:3', /oci:DIR:TAG/);
  fails('from: scratch\nannotations:\n  org.opencontainers.image.base.digest: x\n', /cannot be set by hand/, '3:3', /from:/);
  fails('from: scratch\nannotations:\n  "a key": x\n', /invalid annotation key "a key"/, '3:3', /reverse-domain/);
  fails('from: scratch\nannotations:\n  org.opencontainers.image.source: not a url\n', /image\.source "not a url" is not a URL/, '3:36', /--source git/);
  fails('from: scratch\nannotations:\n  org.opencontainers.image.source: https://me:token@git.example.com/app\n', /contains credentials/, '3:36');
  fails('from: scratch\nannotations:\n  org.opencontainers.image.revision: "a b"\n', /revision "a b" is not a revision/, '3:38');
  fails('from: scratch\nannotations:\n  com.example.list: [a]\n', /annotations\.com\.example\.list: expected a string, got a list/, '3:21');
  fails('from: scratch\nconfig:\n  annotations: {a: b}\n', /unknown key config\.annotations/, '3:3', /belongs in the top level/);
});

test('apt.lockfile without {arch} cannot serve several architectures', () => {
  const base = 'from: scratch\ndebian_version: "12"\napt:\n  packages: [busybox]\n  lockfile: locks/busybox.lock\n';
  fails(`${base}platforms: [linux/amd64, linux/arm64]\n`, /apt\.lockfile has no \{arch\}, but the spec builds 2 architectures \(amd64, arm64\)/, '5:13', /\{arch\}/);
  // One architecture, or two platforms of one Debian architecture, share the lock.
  assert.equal(parseSpec(`${base}platforms: [linux/amd64]\n`, FILE).apt?.lockfile, '/work/proj/locks/busybox.lock');
  assert.equal(parseSpec(`${base}platforms: [linux/amd64, linux/amd64/v3]\n`, FILE).platforms.length, 2);
  assert.equal(parseSpec(base.replace('busybox.lock', 'busybox-{arch}.lock') + 'platforms: [linux/amd64, linux/arm64]\n', FILE).platforms.length, 2);
});

test('run: as a mapping with the step options, secrets and cache mounts', () => {
  const spec = parseSpec([
    'from: debian:12',
    'network: true',
    'sandbox: nspawn',
    'run:',
    '  commands: [make, "make install"]',
    '  user: "1000:1000"',
    '  workdir: /src',
    '  env: {CFLAGS: -O2, JOBS: 4}',
    '  secrets:',
    '    - {id: netrc, src: keys/netrc}',
    '    - {id: token, env: API_TOKEN}',
    '  cache: [/root/.cache/pip/, {target: /var/cache/apt, id: apt}]',
    '',
  ].join('\n'), FILE);
  assert.equal(spec.sandbox, 'nspawn');
  const run = spec.run!;
  assert.deepEqual(run.commands, ['make', 'make install']);
  assert.equal(run.network, true, 'the top-level network: is the default');
  assert.equal(run.user, '1000:1000');
  assert.equal(run.workdir, '/src');
  assert.deepEqual(run.env, { CFLAGS: '-O2', JOBS: '4' });
  assert.deepEqual(run.secrets.map((s) => [s.id, s.file, s.env]), [['netrc', path.join(path.dirname(FILE), 'keys/netrc'), undefined], ['token', undefined, 'API_TOKEN']]);
  assert.deepEqual(run.caches, [{ target: '/root/.cache/pip', id: 'path_root_.cache_pip' }, { target: '/var/cache/apt', id: 'apt' }]);
  assert.match(run.where, /image\.yaml:4:1$/);
  assert.equal(parseSpec('from: debian:12\nrun: {commands: [a], network: false}\nnetwork: true\n', FILE).run!.network, false);
  assert.equal(parseSpec('from: debian:12\n', FILE).sandbox, 'auto');
});

test('run: options are checked where they are written', () => {
  fails('from: x\nrun: {network: true}\n', /run: missing key commands/, '2:6');
  fails('from: x\nrun: {commands: [a], netwrk: true}\n', /unknown key run\.netwrk/, '2:22', /network/);
  fails('from: x\nrun: {commands: [a], sandbox: bwrap}\n', /unknown key run\.sandbox/, '2:22', /top level/);
  fails('from: x\nrun: {commands: [a], workdir: src}\n', /run\.workdir: "src" must be an absolute path/, '2:31');
  fails('from: x\nrun: {commands: [a], secrets: [{id: a/b, env: X}]}\n', /not a valid secret name/, '2:37');
  fails('from: x\nrun: {commands: [a], secrets: [{id: a}]}\n', /exactly one of src .* or env/, '2:32');
  fails('from: x\nrun: {commands: [a], secrets: [{id: a, env: X}, {id: a, env: Y}]}\n', /secret a is listed twice/, '2:54');
  fails('from: x\nrun: {commands: [a], cache: [relative]}\n', /must be an absolute path/, '2:30');
  fails('from: x\nrun: {commands: [a], cache: [/x, /x/]}\n', /\/x is listed twice/, '2:34');
  fails('from: x\nrun: {commands: [a], cache: [/]}\n', /cannot be a cache directory/, '2:30');
  fails('from: x\nsandbox: docker\n', /sandbox: unknown sandbox "docker"/, '2:10');
  fails('from: x\nnetwork: yes please\n', /network: expected true or false/, '2:10');
});
