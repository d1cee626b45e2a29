// Ubuntu's archive keyring for live tests, from Ubuntu's own ubuntu-keyring package of
// the noble release pocket (frozen), checked against its pinned SHA256 before it is
// trusted (Debian 12 does not package it).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';

export const UBUNTU_ARCHIVE = 'http://archive.ubuntu.com/ubuntu';
const KEYRING_DEB = `${UBUNTU_ARCHIVE}/pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1_all.deb`;
const KEYRING_DEB_SHA256 = '36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8';

/** The archive keyring out of Ubuntu's keyring package, which must be the pinned one. */
export async function ubuntuKeyring(dir: string): Promise<string> {
  const res = await fetch(KEYRING_DEB);
  assert.equal(res.status, 200, `GET ${KEYRING_DEB}`);
  const deb = Buffer.from(await res.arrayBuffer());
  assert.equal(createHash('sha256').update(deb).digest('hex'), KEYRING_DEB_SHA256, 'ubuntu-keyring .deb is not the pinned one');
  const file = path.join(dir, 'ubuntu-keyring.deb');
  await writeFile(file, deb);
  const extracted = path.join(dir, 'keyring-deb');
  execFileSync('dpkg-deb', ['-x', file, extracted]);
  return path.join(extracted, 'usr/share/keyrings/ubuntu-archive-keyring.gpg');
}

