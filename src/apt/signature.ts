/**
 * OpenPGP verification of apt Release files with openpgp.js v6.
 *
 * Checked against the live archive (deb.debian.org bookworm InRelease, July 2026)
 * and /usr/share/keyrings/debian-archive-keyring.gpg: the keyring holds 9 keys
 * (RSA 4096 archive/security keys and ed25519 "Stable Release" keys); InRelease
 * carries 3 signatures (two RSA/SHA-256 made by subkeys, one EdDSA/SHA-256).
 * openpgp's defaults accept all of them: minRSABits is 2047, rejectHashAlgorithms
 * only holds MD5 and RIPEMD-160, rejectMessageHashAlgorithms adds SHA-1 (apt
 * rejects SHA-1 too), rejectPublicKeyAlgorithms only ElGamal/DSA, rejectCurves only
 * secp256k1. So no config override is needed, and we deliberately pass none.
 * With `expectSigned: true`, openpgp's verify() resolves when ANY signature is valid
 * (util.anyPromise), which is apt's rule: a signature by a key the keyring lacks,
 * or by an expired key, does not spoil the others.
 */
import { readFile } from 'node:fs/promises';
import * as openpgp from 'openpgp';
import { OcibuildError } from '../errors.js';

export type Key = openpgp.Key;

/**
 * Reads a binary (.gpg: concatenated transferable public keys) or armored (.asc)
 * keyring. Each key is parsed on its own, so one malformed or unsupported key
 * does not make the others unusable.
 */
export async function loadKeyring(path: string): Promise<Key[]> {
  let data: Buffer;
  try {
    data = await readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new OcibuildError(`cannot read keyring (${code})`, {
      where: path,
      hint: 'set `keyring:` on the apt source to a readable OpenPGP keyring (.gpg or .asc)',
      cause: err,
    });
  }
  const keys: Key[] = [];
  const failures: string[] = [];
  const parse = async (input: Uint8Array | string): Promise<void> => {
    try {
      keys.push(
        ...(typeof input === 'string'
          ? await openpgp.readKeys({ armoredKeys: input })
          : await openpgp.readKeys({ binaryKeys: input })),
      );
    } catch (err) {
      failures.push(err instanceof Error ? err.message : String(err));
    }
  };
  const head = data.subarray(0, 64).toString('latin1').trimStart();
  if (head.startsWith('-----BEGIN PGP')) {
    for (const block of armorBlocks(data.toString('utf8'))) await parse(block);
  } else {
    for (const chunk of splitBinaryKeyring(data)) await parse(chunk);
  }
  if (keys.length === 0) {
    const why = failures.length > 0 ? `: ${failures[0]}` : '';
    throw new OcibuildError(`the keyring holds no usable OpenPGP public key${why}`, {
      where: path,
      hint: 'point `keyring:` at a binary (.gpg) or armored (.asc) OpenPGP public keyring',
    });
  }
  return keys;
}

/** Verifies an InRelease file and returns the signed text (only that may be trusted). */
export async function verifyInRelease(signedText: string, keys: Key[], where: string): Promise<string> {
  // apt refuses InRelease files with data around the signed block; text outside it
  // is unsigned and must not be parsed as if it were.
  const trimmed = signedText.replace(/^\s+/, '');
  if (!trimmed.startsWith('-----BEGIN PGP SIGNED MESSAGE-----')) {
    throw badSignature('InRelease is not an OpenPGP clear-signed message', where);
  }
  const end = '-----END PGP SIGNATURE-----';
  const endAt = trimmed.indexOf(end);
  if (endAt < 0 || trimmed.slice(endAt + end.length).trim() !== '') {
    throw badSignature('InRelease has data after its signature', where);
  }
  let message: openpgp.CleartextMessage;
  try {
    message = await openpgp.readCleartextMessage({ cleartextMessage: trimmed });
  } catch (err) {
    throw badSignature(`InRelease cannot be read: ${errMessage(err)}`, where, err);
  }
  const result = await checkSignatures(
    () => openpgp.verify({ message, verificationKeys: keys, expectSigned: true, format: 'utf8' }),
    where,
  );
  return String(result.data);
}

/**
 * The text of a clear-signed InRelease WITHOUT verifying it, for --insecure-no-verify
 * only (the caller logs the warning).
 */
export async function readInReleaseUnverified(signedText: string, where: string): Promise<string> {
  try {
    const message = await openpgp.readCleartextMessage({ cleartextMessage: signedText.replace(/^\s+/, '') });
    return message.getText();
  } catch (err) {
    throw new OcibuildError(`InRelease cannot be read: ${errMessage(err)}`, { where, cause: err });
  }
}

/** Verifies a detached signature (Release.gpg) over the exact bytes of Release. */
export async function verifyDetached(
  releaseText: string | Uint8Array,
  signature: Uint8Array | string,
  keys: Key[],
  where: string,
): Promise<void> {
  let sig: openpgp.Signature;
  try {
    const armored = typeof signature === 'string' ? signature : maybeArmored(signature);
    sig =
      armored !== undefined
        ? await openpgp.readSignature({ armoredSignature: armored })
        : await openpgp.readSignature({ binarySignature: signature as Uint8Array });
  } catch (err) {
    throw badSignature(`the signature cannot be read: ${errMessage(err)}`, where, err);
  }
  // Binary literal data: the signature covers the bytes as served, with no EOL rewriting.
  const bytes = typeof releaseText === 'string' ? new TextEncoder().encode(releaseText) : releaseText;
  const message = await openpgp.createMessage({ binary: bytes });
  await checkSignatures(
    () => openpgp.verify({ message, signature: sig, verificationKeys: keys, expectSigned: true, format: 'binary' }),
    where,
  );
}

async function checkSignatures<T extends { signatures: Array<{ keyID: { toHex(): string }; verified: Promise<unknown> }> }>(
  run: () => Promise<T>,
  where: string,
): Promise<T> {
  let result: T;
  try {
    result = await run();
  } catch (err) {
    throw badSignature(`no valid signature from a trusted key: ${errMessage(err)}`, where, err);
  }
  // Belt and braces: do not depend on expectSigned semantics alone.
  const valid: string[] = [];
  for (const s of result.signatures) {
    if (await s.verified.then(() => true, () => false)) valid.push(s.keyID.toHex());
  }
  if (valid.length === 0) throw badSignature('no valid signature from a trusted key', where);
  return result;
}

function badSignature(message: string, where: string, cause?: unknown): OcibuildError {
  return new OcibuildError(message, {
    where,
    hint:
      'check the keyring of this source (`keyring:`) matches the archive; ' +
      'to proceed without verification (unsafe) pass --insecure-no-verify',
    cause,
  });
}

function errMessage(err: unknown): string {
  const m = err instanceof Error ? err.message : String(err);
  return m.replace(/^Error verifying signed message: /, '');
}

function maybeArmored(data: Uint8Array): string | undefined {
  const text = Buffer.from(data.subarray(0, 64)).toString('latin1').trimStart();
  return text.startsWith('-----BEGIN PGP') ? Buffer.from(data).toString('utf8') : undefined;
}

/** Each "-----BEGIN PGP PUBLIC KEY BLOCK-----" ... END block of an armored file. */
function armorBlocks(text: string): string[] {
  const re = /-----BEGIN PGP PUBLIC KEY BLOCK-----[\s\S]*?-----END PGP PUBLIC KEY BLOCK-----/g;
  return text.match(re) ?? [text];
}

/**
 * Splits a binary keyring at each top-level Public-Key (tag 6) or Secret-Key (tag 5)
 * packet, following the packet framing of RFC 9580 section 4.2 (old and new format
 * headers). If the framing is broken, the rest is handed to openpgp as one piece;
 * the keys in the chunks before the damage still load.
 */
export function splitBinaryKeyring(data: Uint8Array): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  let start = 0;
  let pos = 0;
  while (pos < data.length) {
    const header = packetHeader(data, pos);
    if (header === undefined) break;
    if ((header.tag === 6 || header.tag === 5) && pos > start) {
      chunks.push(data.subarray(start, pos));
      start = pos;
    }
    pos = header.end;
  }
  if (start < data.length) chunks.push(data.subarray(start));
  return chunks;
}

function packetHeader(d: Uint8Array, pos: number): { tag: number; end: number } | undefined {
  const b0 = d[pos];
  if (b0 === undefined || (b0 & 0x80) === 0) return undefined;
  if (b0 & 0x40) {
    const tag = b0 & 0x3f;
    const o1 = d[pos + 1];
    if (o1 === undefined) return undefined;
    let len: number;
    let hlen: number;
    if (o1 < 192) {
      len = o1;
      hlen = 2;
    } else if (o1 < 224) {
      const o2 = d[pos + 2];
      if (o2 === undefined) return undefined;
      len = ((o1 - 192) << 8) + o2 + 192;
      hlen = 3;
    } else if (o1 === 255) {
      if (pos + 6 > d.length) return undefined;
      len = ((d[pos + 2]! << 24) >>> 0) + (d[pos + 3]! << 16) + (d[pos + 4]! << 8) + d[pos + 5]!;
      hlen = 6;
    } else {
      // Partial body lengths never occur in key material.
      return undefined;
    }
    const end = pos + hlen + len;
    return end <= d.length ? { tag, end } : undefined;
  }
  const tag = (b0 >> 2) & 0x0f;
  const lenType = b0 & 0x03;
  if (lenType === 3) return { tag, end: d.length };
  const n = lenType === 0 ? 1 : lenType === 1 ? 2 : 4;
  if (pos + 1 + n > d.length) return undefined;
  let len = 0;
  for (let i = 0; i < n; i++) len = len * 256 + d[pos + 1 + i]!;
  const end = pos + 1 + n + len;
  return end <= d.length ? { tag, end } : undefined;
}
