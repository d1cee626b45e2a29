import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as openpgp from 'openpgp';
import { OcibuildError } from '../../src/errors.js';
import { loadKeyring, readInReleaseUnverified, splitBinaryKeyring, verifyDetached, verifyInRelease } from '../../src/apt/signature.js';

const RELEASE = 'Origin: Test\nSuite: stable\nSHA256:\n ' + 'a'.repeat(64) + ' 12 main/binary-amd64/Packages\n';

async function eccKey(name: string): Promise<openpgp.PrivateKey> {
  const { privateKey } = await openpgp.generateKey({ type: 'ecc', curve: 'ed25519Legacy', userIDs: [{ name }], format: 'object' });
  return privateKey;
}

// Debian's archive keys are RSA 4096 and sign with SHA-256/SHA-512: prove that path.
const rsa = openpgp
  .generateKey({ type: 'rsa', rsaBits: 4096, userIDs: [{ name: 'rsa archive' }], format: 'object' })
  .then((k) => k.privateKey);
const ecc = eccKey('ecc archive');
const stranger = eccKey('stranger');

async function clearsign(text: string, keys: openpgp.PrivateKey[], hash?: number): Promise<string> {
  const message = await openpgp.createCleartextMessage({ text });
  return openpgp.sign({ message, signingKeys: keys, ...(hash ? { config: { preferredHashAlgorithm: hash } } : {}) });
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'ocibuild-sig-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function isSigError(err: unknown): boolean {
  assert.ok(err instanceof OcibuildError, String(err));
  assert.equal(err.where, 'http://m/dists/stable/InRelease');
  assert.match(err.hint ?? '', /--insecure-no-verify/);
  assert.equal(err.exitCode, 1);
  return true;
}

test('loadKeyring: binary keyring of concatenated keys (RSA + EdDSA)', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'k.gpg');
    const [a, b] = [await rsa, await ecc];
    await writeFile(path, Buffer.concat([a.toPublic().write(), b.toPublic().write()]));
    const keys = await loadKeyring(path);
    assert.deepEqual(keys.map((k) => k.getKeyID().toHex()), [a.getKeyID().toHex(), b.getKeyID().toHex()]);
    assert.equal(keys.every((k) => !k.isPrivate()), true);
  });
});

test('loadKeyring: armored .asc, several blocks', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'k.asc');
    const [a, b] = [await ecc, await stranger];
    await writeFile(path, `${a.toPublic().armor()}\n${b.toPublic().armor()}`);
    assert.equal((await loadKeyring(path)).length, 2);
  });
});

test('loadKeyring: a damaged key does not make the others unusable', async () => {
  await withDir(async (dir) => {
    const [a, b] = [await ecc, await stranger];
    // A Public-Key packet (new format, tag 6) whose body is garbage, between two good keys.
    const junk = Buffer.from([0xc0 | 6, 5, 4, 0, 0, 0, 0]);
    const path = join(dir, 'k.gpg');
    const bin = Buffer.concat([a.toPublic().write(), junk, b.toPublic().write()]);
    await writeFile(path, bin);
    assert.equal(splitBinaryKeyring(bin).length, 3);
    const keys = await loadKeyring(path);
    assert.deepEqual(keys.map((k) => k.getKeyID().toHex()).sort(), [a.getKeyID().toHex(), b.getKeyID().toHex()].sort());
  });
});

test('loadKeyring: missing, empty and garbage files are OcibuildErrors naming the path', async () => {
  await withDir(async (dir) => {
    const empty = join(dir, 'empty.gpg');
    const garbage = join(dir, 'garbage.gpg');
    await writeFile(empty, '');
    await writeFile(garbage, 'this is not a keyring\n');
    for (const [path, re] of [
      [join(dir, 'missing.gpg'), /cannot read keyring \(ENOENT\)/],
      [empty, /no usable OpenPGP public key/],
      [garbage, /no usable OpenPGP public key/],
    ] as const) {
      await assert.rejects(loadKeyring(path), (err: unknown) => {
        assert.ok(err instanceof OcibuildError);
        assert.match(err.message, re);
        assert.equal(err.where, path);
        assert.match(err.hint ?? '', /keyring/);
        return true;
      });
    }
  });
});

test('loadKeyring: the host Debian archive keyring loads', { skip: !existsSync('/usr/share/keyrings/debian-archive-keyring.gpg') }, async () => {
  const keys = await loadKeyring('/usr/share/keyrings/debian-archive-keyring.gpg');
  assert.ok(keys.length >= 3);
});

test('verifyInRelease: RSA 4096 / SHA-512 signature verifies and returns the signed text', async () => {
  const key = await rsa;
  const signed = await clearsign(RELEASE, [key], openpgp.enums.hash.sha512);
  // CleartextMessage.signature exists at run time but is not in openpgp's type declarations.
  const message = (await openpgp.readCleartextMessage({ cleartextMessage: signed })) as unknown as { signature: openpgp.Signature };
  const sig = message.signature.packets[0];
  assert.equal(sig?.hashAlgorithm, openpgp.enums.hash.sha512);
  const text = await verifyInRelease(signed, [key.toPublic()], 'http://m/dists/stable/InRelease');
  assert.equal(text, RELEASE);
});

test('verifyInRelease: one valid signature among several (unknown key) is enough', async () => {
  const signed = await clearsign(RELEASE, [await stranger, await ecc]);
  await verifyInRelease(signed, [(await ecc).toPublic()], 'w');
});

test('verifyInRelease: wrong key → error with --insecure-no-verify hint', async () => {
  const signed = await clearsign(RELEASE, [await stranger]);
  await assert.rejects(verifyInRelease(signed, [(await ecc).toPublic()], 'http://m/dists/stable/InRelease'), isSigError);
});

test('verifyInRelease: tampered text is rejected', async () => {
  const signed = await clearsign(RELEASE, [await ecc]);
  const tampered = signed.replace('Suite: stable', 'Suite: stab1e');
  await assert.rejects(verifyInRelease(tampered, [(await ecc).toPublic()], 'http://m/dists/stable/InRelease'), isSigError);
});

test('verifyInRelease: unsigned text, or data outside the signed block, is rejected', async () => {
  const keys = [(await ecc).toPublic()];
  const signed = await clearsign(RELEASE, [await ecc]);
  await assert.rejects(verifyInRelease(RELEASE, keys, 'http://m/dists/stable/InRelease'), isSigError);
  await assert.rejects(verifyInRelease(`${signed}\nSHA256:\n evil\n`, keys, 'http://m/dists/stable/InRelease'), isSigError);
  await assert.rejects(verifyInRelease(`Origin: evil\n${signed}`, keys, 'http://m/dists/stable/InRelease'), isSigError);
});

test('readInReleaseUnverified returns the text regardless of the key', async () => {
  const signed = await clearsign(RELEASE, [await stranger]);
  assert.equal(await readInReleaseUnverified(signed, 'w'), RELEASE);
});

test('verifyDetached: armored and binary signatures over the exact bytes', async () => {
  const key = await rsa;
  const bytes = Buffer.from(RELEASE);
  const message = await openpgp.createMessage({ binary: bytes });
  const armored = await openpgp.sign({ message, signingKeys: key, detached: true });
  const binary = await openpgp.sign({ message: await openpgp.createMessage({ binary: bytes }), signingKeys: key, detached: true, format: 'binary' });
  const keys = [key.toPublic()];
  await verifyDetached(bytes, armored, keys, 'w');
  await verifyDetached(RELEASE, Buffer.from(armored), keys, 'w');
  await verifyDetached(bytes, binary, keys, 'w');
  await assert.rejects(verifyDetached(Buffer.from(RELEASE + ' '), armored, keys, 'http://m/dists/stable/InRelease'), isSigError);
  await assert.rejects(verifyDetached(bytes, armored, [(await stranger).toPublic()], 'http://m/dists/stable/InRelease'), isSigError);
  await assert.rejects(verifyDetached(bytes, 'not a signature', keys, 'http://m/dists/stable/InRelease'), isSigError);
});

// Live check against the real archive (DESIGN: opt-in with OCIBUILD_LIVE=1).
test('live: Debian bookworm InRelease verifies against the host keyring', { skip: process.env.OCIBUILD_LIVE !== '1' }, async () => {
  const res = await fetch('http://deb.debian.org/debian/dists/bookworm/InRelease');
  assert.equal(res.status, 200);
  const keys = await loadKeyring('/usr/share/keyrings/debian-archive-keyring.gpg');
  const text = await verifyInRelease(await res.text(), keys, 'deb.debian.org bookworm');
  assert.match(text, /^Codename: bookworm$/m);
});
