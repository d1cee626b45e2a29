// Issue 5's live case against the real Debian archive: `from: scratch`, bookworm,
// `install: dpkg` (the essential set bootstrapped, then python3, ca-certificates, curl
// and passwd installed by dpkg with their maintainer scripts), RUN lines that use
// Python's ssl module and useradd. The image runs under runc (via umoci unpack); the
// host's dpkg finds nothing half-installed or changed; a second build in another store
// (sharing only the downloaded .debs), run rootless by an unprivileged user with
// subordinate ids, gives the same digest.
//
// Runs only with OCIBUILD_LIVE=1 (network), as root (the sandbox, umoci, runc, and
// setting up the rootless user).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ocibuild } from '../support/cli.js';
import { rootlessUser } from '../support/rootless-user.js';

const LIVE = process.env.OCIBUILD_LIVE === '1';

const SPEC = `from: scratch
debian_version: "12"
apt:
  packages: [python3, ca-certificates, curl, passwd]
  install: dpkg
run:
  - python3 -c 'import ssl; print(ssl.OPENSSL_VERSION)'
  - useradd app
config:
  entrypoint: [/usr/bin/python3, -c, "import ssl; print(ssl.OPENSSL_VERSION)"]
`;

test('live: from scratch, install: dpkg, RUN; runs under runc; dpkg --audit and -V clean; rebuilt rootless to the same digest', { skip: !LIVE && 'OCIBUILD_LIVE=1 not set', timeout: 20 * 60_000 }, async () => {
  const tmp = await mkdtemp(path.join(tmpdir(), 'ocibuild-live-dpkg-'));
  try {
    await writeFile(path.join(tmp, 'image.yaml'), SPEC);
    const build = (store: string, out: string): ReturnType<typeof ocibuild> =>
      ocibuild(['build', '-f', path.join(tmp, 'image.yaml'), '-o', `oci:${out}:latest`, '--cache-dir', store, '-q']);
    const first = await build(path.join(tmp, 'store'), path.join(tmp, 'out'));
    assert.equal(first.code, 0, first.stderr);

    const bundle = path.join(tmp, 'bundle');
    execFileSync('umoci', ['unpack', '--image', `${path.join(tmp, 'out')}:latest`, bundle], { stdio: 'pipe' });
    const rootfs = path.join(bundle, 'rootfs');
    const config = JSON.parse(readFileSync(path.join(bundle, 'config.json'), 'utf8')) as { process: { terminal: boolean } };
    config.process.terminal = false;
    writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(config));
    const ran = execFileSync('runc', ['run', `ocibuild-live-${process.pid}`], { cwd: bundle, timeout: 60_000 }).toString();
    assert.match(ran, /^OpenSSL \d+\.\d+\.\d+/);

    assert.equal(execFileSync('dpkg', [`--root=${rootfs}`, '--audit']).toString(), '');
    assert.equal(execFileSync('dpkg', [`--root=${rootfs}`, '-V']).toString(), '');
    const status = readFileSync(path.join(rootfs, 'var/lib/dpkg/status'), 'utf8');
    for (const p of ['dpkg', 'python3', 'ca-certificates', 'curl', 'passwd', 'base-files']) {
      assert.match(status, new RegExp(`^Package: ${p}\\n(?:[^\\n]+\\n)*?Status: install ok installed$`, 'm'), p);
    }
    assert.ok(readFileSync(path.join(rootfs, 'etc/ssl/certs/ca-certificates.crt'), 'utf8').includes('BEGIN CERTIFICATE'), 'ca-certificates postinst built the bundle');
    assert.equal(readlinkSync(path.join(rootfs, 'etc/alternatives/awk')), '/usr/bin/mawk', 'update-alternatives ran');
    assert.match(readFileSync(path.join(rootfs, 'etc/passwd'), 'utf8'), /^app:x:1000:1000:/m);
    for (const volatile of ['var/log/dpkg.log', 'var/log/alternatives.log', 'var/cache/ldconfig/aux-cache', 'usr/sbin/policy-rc.d']) {
      assert.ok(!existsSync(path.join(rootfs, volatile)), `${volatile} is not in the image`);
    }

    // install: unpack of the same packages makes what ca-certificates' and base-passwd's
    // scripts made in the dpkg build, byte for byte (src/build/unpack-scripts.ts).
    const unpackDir = path.join(tmp, 'unpack');
    execFileSync('mkdir', ['-p', unpackDir]);
    await writeFile(path.join(unpackDir, 'image.yaml'), 'from: scratch\ndebian_version: "12"\napt:\n  packages: [python3, ca-certificates, curl, base-passwd, apt]\n  install: unpack\n');
    const unpacked = await ocibuild(['build', '-f', path.join(unpackDir, 'image.yaml'), '-o', `oci:${path.join(unpackDir, 'out')}:latest`, '--cache-dir', path.join(tmp, 'store'), '-q']);
    assert.equal(unpacked.code, 0, unpacked.stderr);
    const unpackedRoot = path.join(unpackDir, 'bundle', 'rootfs');
    execFileSync('umoci', ['unpack', '--image', `${path.join(unpackDir, 'out')}:latest`, path.join(unpackDir, 'bundle')], { stdio: 'pipe' });
    for (const f of ['etc/ca-certificates.conf', 'etc/ssl/certs/ca-certificates.crt']) {
      assert.ok(readFileSync(path.join(unpackedRoot, f)).equals(readFileSync(path.join(rootfs, f))), `${f} as ca-certificates' postinst made it`);
    }
    const certLinks = (root: string): string => execFileSync('sh', ['-c', 'cd "$1"/etc/ssl/certs && for f in *; do if [ -L "$f" ]; then printf "%s %s\\n" "$f" "$(readlink "$f")"; fi; done', 'sh', root]).toString();
    assert.equal(certLinks(unpackedRoot), certLinks(rootfs), 'NAME.pem and the HASH.N links openssl rehash makes');
    for (const f of ['passwd', 'group']) {
      assert.equal(readFileSync(path.join(unpackedRoot, 'etc', f), 'utf8'), readFileSync(path.join(unpackedRoot, `usr/share/base-passwd/${f}.master`), 'utf8'));
    }
    // With apt, the sources it was locked from, as mmdebstrap writes them.
    assert.equal(
      readFileSync(path.join(unpackedRoot, 'etc/apt/sources.list'), 'utf8'),
      'deb http://deb.debian.org/debian bookworm main\ndeb http://deb.debian.org/debian bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n',
    );
    assert.equal(execFileSync('chroot', [unpackedRoot, 'python3', '-c', 'import ssl; print(ssl.create_default_context().cert_store_stats()["x509_ca"] > 100)']).toString().trim(), 'True');

    // Only the .debs are shared: no layer, no rootfs, no lock of the first store. The
    // second build runs without root (src/cli/rootless.ts), with the lock root wrote.
    await chmod(tmp, 0o755);
    const user = await rootlessUser(tmp);
    const store2 = await user.dir(path.join(tmp, 'store2'));
    execFileSync('cp', ['-a', path.join(tmp, 'store', 'blobs'), store2]);
    execFileSync('chown', ['-R', `${user.uid}:${user.gid}`, store2]);
    execFileSync('sh', ['-c', 'chmod a+r "$1"/image.yaml "$1"/*.lock', 'sh', tmp]);
    const out2 = await user.dir(path.join(tmp, 'out2'));
    const second = await user.ocibuild(['build', '--locked', '-f', path.join(tmp, 'image.yaml'), '-o', `oci:${out2}/layout:latest`, '--cache-dir', store2, '-q']);
    assert.equal(second.code, 0, second.stderr);
    assert.equal(second.stdout, first.stdout, 'the same digest from a second, independent, rootless build');
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
});
