// Ubuntu against the real archive (archive.ubuntu.com, noble = 24.04): what differs from
// Debian is exercised end to end — zstd-compressed .debs (data.tar.zst, control.tar.zst),
// Ubuntu's keyring, main + universe over three pockets, Ubuntu's Essential set.
//   1. install: unpack of python3, ca-certificates and curl: the image runs under runc;
//      the host's dpkg finds nothing half-installed or changed.
//   2. from scratch, install: dpkg (Ubuntu's essential set bootstrapped, then the
//      packages with their maintainer scripts), a RUN line with useradd: runs under runc,
//      dpkg --audit and -V clean, the CA bundle made by ca-certificates' postinst.
//
// Runs with OCIBUILD_LIVE_UBUNTU=1 (.ci/run sets it when archive.ubuntu.com answers), as
// root. The keyring comes from Ubuntu's own ubuntu-keyring package of the noble release
// pocket (frozen), checked against its pinned SHA256 before it is trusted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ocibuild } from '../support/cli.js';
import { UBUNTU_ARCHIVE as ARCHIVE, ubuntuKeyring } from '../support/ubuntu.js';

const LIVE = process.env.OCIBUILD_LIVE_UBUNTU === '1';

function spec(keyring: string, install: 'unpack' | 'dpkg', packages: string[], extra: string[]): string {
  return [
    'from: scratch',
    'apt:',
    '  sources:',
    `    - url: ${ARCHIVE}`,
    '      suites: [noble, noble-updates, noble-security]',
    '      components: [main, universe]',
    `      keyring: ${keyring}`,
    `  packages: [${packages.join(', ')}]`,
    `  install: ${install}`,
    ...extra,
    '',
  ].join('\n');
}

/** umoci unpack + runc run of the image's own command (or `args`); its stdout. */
function runImage(layout: string, bundle: string, args?: string[]): string {
  execFileSync('umoci', ['unpack', '--image', `${layout}:latest`, bundle], { stdio: 'pipe' });
  const configPath = path.join(bundle, 'config.json');
  const config = JSON.parse(readFileSync(configPath, 'utf8')) as { process: { terminal: boolean; args: string[] } };
  config.process.terminal = false;
  if (args) config.process.args = args;
  writeFileSync(configPath, JSON.stringify(config));
  return execFileSync('runc', ['run', `ocibuild-ubuntu-${process.pid}-${path.basename(bundle)}`], { cwd: bundle, timeout: 60_000 }).toString();
}

function assertDpkgClean(rootfs: string): void {
  assert.equal(execFileSync('dpkg', [`--root=${rootfs}`, '--audit']).toString(), '');
  assert.equal(execFileSync('dpkg', [`--root=${rootfs}`, '-V']).toString(), '');
}

test('live: Ubuntu noble, install: unpack and from-scratch install: dpkg; both run under runc, dpkg clean', { skip: !LIVE && 'OCIBUILD_LIVE_UBUNTU=1 not set', timeout: 20 * 60_000 }, async (t) => {
  const tmp = await mkdtemp(path.join(tmpdir(), 'ocibuild-live-ubuntu-'));
  try {
    const keyring = await ubuntuKeyring(tmp);
    const store = path.join(tmp, 'store');
    const build = async (name: string, text: string): Promise<string> => {
      const dir = path.join(tmp, name);
      execFileSync('mkdir', ['-p', dir]);
      await writeFile(path.join(dir, 'image.yaml'), text);
      const r = await ocibuild(['build', '-f', path.join(dir, 'image.yaml'), '-o', `oci:${path.join(dir, 'out')}:latest`, '--cache-dir', store, '-q']);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(existsSync(path.join(dir, 'Packages-noble-amd64.lock')), 'the lockfile is written beside the spec');
      return dir;
    };

    await t.test('install: unpack', async () => {
      const dir = await build('unpack', spec(keyring, 'unpack', ['python3', 'ca-certificates', 'curl'], [
        'config:',
        '  entrypoint: [/usr/bin/python3, -c, "import ssl; print(ssl.OPENSSL_VERSION)"]',
      ]));
      const lock = readFileSync(path.join(dir, 'Packages-noble-amd64.lock'), 'utf8');
      assert.match(lock, /^Package: python3\.12$/m);
      assert.match(lock, /ubuntu/, 'Ubuntu versions in the lock');
      const bundle = path.join(dir, 'bundle');
      assert.match(runImage(path.join(dir, 'out'), bundle), /^OpenSSL 3\.\d+\.\d+/);
      assertDpkgClean(path.join(bundle, 'rootfs'));
    });

    await t.test('from scratch, install: dpkg, RUN', async () => {
      const dir = await build('dpkg', spec(keyring, 'dpkg', ['ca-certificates', 'curl', 'passwd'], ['run:', '  - useradd app']));
      const bundle = path.join(dir, 'bundle');
      assert.match(runImage(path.join(dir, 'out'), bundle, ['sh', '-c', 'id app && curl --version']), /uid=1000\(app\)[\s\S]*^curl \d/m);
      const rootfs = path.join(bundle, 'rootfs');
      assertDpkgClean(rootfs);
      assert.match(readFileSync(path.join(rootfs, 'etc/os-release'), 'utf8'), /^VERSION_CODENAME=noble$/m);
      assert.ok(readFileSync(path.join(rootfs, 'etc/ssl/certs/ca-certificates.crt'), 'utf8').includes('BEGIN CERTIFICATE'), 'ca-certificates postinst built the bundle');
      const status = readFileSync(path.join(rootfs, 'var/lib/dpkg/status'), 'utf8');
      for (const p of ['dpkg', 'base-files', 'ca-certificates', 'curl', 'passwd']) {
        assert.match(status, new RegExp(`^Package: ${p}\\n(?:[^\\n]+\\n)*?Status: install ok installed$`, 'm'), p);
      }
    });
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
});
