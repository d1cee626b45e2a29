// Registries over TLS, with Debian's docker-registry serving HTTPS with certificates
// made here by openssl: a CA from --cert-dir or from /etc/containers/certs.d/HOST (as
// docker and podman find it; a loopback registry is HTTPS once TLS is configured for
// it), client certificates for a registry that requires them, and the failures a user
// meets said in plain words: an untrusted certificate, TLS to a plain-HTTP port, plain
// HTTP to a TLS port. skopeo judges what was pushed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CLI, ocibuild, run } from '../support/cli.js';
import { startRegistry, writeTinyImage, type TestRegistry, type TinyImage } from '../support/registry.js';

let tmp: string;
let tls: TestRegistry;
let mtls: TestRegistry;
let plain: TestRegistry;
let image: TinyImage;
/** --cert-dir directories: the right CA; the right CA and a client certificate; another CA. */
let caDir: string;
let clientDir: string;
let wrongDir: string;

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A CA, and a certificate it signs for `cn` with the extensions given (openssl -extfile syntax). */
function makeCa(dir: string, name: string): void {
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=ocibuild test ${name}`], dir);
}

function makeCert(dir: string, ca: string, name: string, ext: string): void {
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`], dir);
  writeFileSync(path.join(dir, `${name}.ext`), `${ext}\n`);
  openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', '-extfile', `${name}.ext`], dir);
}

before(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'ocibuild-tls-'));
  const pki = path.join(tmp, 'pki');
  mkdirSync(pki);
  makeCa(pki, 'ca');
  makeCa(pki, 'other-ca');
  makeCert(pki, 'ca', 'server', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth');
  makeCert(pki, 'ca', 'client', 'extendedKeyUsage=clientAuth');
  const dir = (name: string, files: Array<[string, string]>): string => {
    const d = path.join(tmp, name);
    mkdirSync(d);
    for (const [from, to] of files) copyFileSync(path.join(pki, from), path.join(d, to));
    return d;
  };
  caDir = dir('certs-ca', [['ca.crt', 'ca.crt']]);
  clientDir = dir('certs-client', [['ca.crt', 'ca.crt'], ['client.crt', 'client.cert'], ['client.key', 'client.key']]);
  wrongDir = dir('certs-wrong', [['other-ca.crt', 'ca.crt']]);
  const server = { cert: path.join(pki, 'server.crt'), key: path.join(pki, 'server.key') };
  tls = await startRegistry({ tls: server });
  mtls = await startRegistry({ tls: { ...server, clientCa: path.join(pki, 'ca.crt') } });
  plain = await startRegistry();
  image = await writeTinyImage(path.join(tmp, 'image'));
});

after(async () => {
  await tls?.stop();
  await mtls?.stop();
  await plain?.stop();
  await rm(tmp, { recursive: true, force: true });
});

function skopeoDigest(ref: string, certDir: string): string {
  return execFileSync('skopeo', ['inspect', '--format', '{{.Digest}}', `--cert-dir=${certDir}`, `docker://${ref}`], { encoding: 'utf8' }).trim();
}

test('a loopback registry with TLS: --cert-dir makes it HTTPS with that CA; skopeo sees the same digest', async () => {
  const ref = `${tls.host}/tls/app:1`;
  const r = await ocibuild(['push', image.ref, ref, '--cert-dir', caDir]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), image.manifestDigest);
  assert.equal(skopeoDigest(ref, caDir), image.manifestDigest);
  // And back: a pull over TLS.
  const out = path.join(tmp, 'pulled');
  const p = await ocibuild(['pull', ref, '-o', `oci:${out}:x`, '--cert-dir', caDir, '--cache-dir', path.join(tmp, 'store')]);
  assert.equal(p.code, 0, p.stderr);
});

test('NODE_EXTRA_CA_CERTS is trusted (bin/ocibuild hands it to the HTTP client instead of Node\'s start-up)', async () => {
  // A certs.d directory without a CA: HTTPS with the default trust, which is where the variable counts.
  const empty = path.join(tmp, 'certs-empty');
  mkdirSync(empty, { recursive: true });
  const ok = await ocibuild(['push', image.ref, `${tls.host}/tls/extra:1`, '--cert-dir', empty], { NODE_EXTRA_CA_CERTS: path.join(caDir, 'ca.crt') });
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout.trim(), image.manifestDigest);
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  const without = await run(CLI, ['push', image.ref, `${tls.host}/tls/extra:2`, '--cert-dir', empty], env);
  assert.notEqual(without.code, 0);
  assert.match(without.stderr, /not signed by a CA this machine trusts/);
  // Node itself did not read it at start-up (it warns then about a file it cannot load);
  // ocibuild does, at its first https connection.
  const missing = path.join(tmp, 'no-such-ca.pem');
  const quiet = await ocibuild(['--version'], { NODE_EXTRA_CA_CERTS: missing });
  assert.equal(quiet.code, 0);
  assert.equal(quiet.stderr, '');
  const tlsUse = await ocibuild(['push', image.ref, `${tls.host}/tls/extra:3`, '--cert-dir', empty], { NODE_EXTRA_CA_CERTS: missing });
  assert.match(tlsUse.stderr, /Ignoring extra certs from `.*no-such-ca\.pem`/);
});

test('/etc/containers/certs.d/HOST/ca.crt is found without options', async () => {
  const certsD = path.join('/etc/containers/certs.d', tls.host);
  mkdirSync(certsD, { recursive: true });
  try {
    copyFileSync(path.join(caDir, 'ca.crt'), path.join(certsD, 'ca.crt'));
    const r = await ocibuild(['push', image.ref, `${tls.host}/tls/certsd:1`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), image.manifestDigest);
  } finally {
    rmSync(certsD, { recursive: true, force: true });
  }
});

test('a registry that requires client certificates: NAME.cert + NAME.key from the directory', async () => {
  const ok = await ocibuild(['push', image.ref, `${mtls.host}/mtls/app:1`, '--cert-dir', clientDir]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout.trim(), image.manifestDigest);
  const without = await ocibuild(['push', image.ref, `${mtls.host}/mtls/app:2`, '--cert-dir', caDir]);
  assert.notEqual(without.code, 0);
  assert.match(without.stderr, new RegExp(`cannot talk TLS to the registry ${mtls.host.replace(/\./g, '\\.')}: it refused this client's certificate`));
  assert.match(without.stderr, /NAME\.cert and its key NAME\.key/);
  assert.doesNotMatch(without.stderr, /internal error|    at /);
});

test('failures said plainly: an untrusted certificate, TLS to a plain port, plain HTTP to a TLS port', async () => {
  const untrusted = await ocibuild(['push', image.ref, `${tls.host}/tls/bad:1`, '--cert-dir', wrongDir]);
  assert.notEqual(untrusted.code, 0);
  assert.match(untrusted.stderr, /cannot talk TLS to the registry 127\.0\.0\.1:\d+: its certificate is not signed by a CA this machine trusts/);
  assert.match(untrusted.stderr, /certs\.d\/127\.0\.0\.1:\d+\/ca\.crt/);

  const notTls = await ocibuild(['push', image.ref, `${plain.host}/plain/bad:1`, '--cert-dir', caDir]);
  assert.notEqual(notTls.code, 0);
  assert.match(notTls.stderr, /it does not speak TLS on this port/);

  const notPlain = await ocibuild(['push', image.ref, `${tls.host}/tls/bad:2`]);
  assert.notEqual(notPlain.code, 0);
  assert.match(notPlain.stderr, /speaks HTTPS, and ocibuild talked plain HTTP to it/);
  assert.match(notPlain.stderr, /--cert-dir/);
  for (const r of [untrusted, notTls, notPlain]) assert.doesNotMatch(r.stderr, /internal error|    at /);
});
