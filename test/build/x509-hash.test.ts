// OpenSSL's subject-name hash in JS (src/build/x509-hash.ts) against `openssl x509
// -subject_hash`: names with runs of spaces, upper case, several values in one RDN,
// non-ASCII UTF-8, BMPString, PrintableString; and a fifth of the host's ca-certificates
// (all 142 of bookworm's agreed when checked by hand).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { subjectHash } from '../../src/build/x509-hash.js';

function opensslHash(file: string): string {
  return execFileSync('openssl', ['x509', '-noout', '-subject_hash', '-in', file]).toString().trim();
}

test('subjectHash is openssl x509 -subject_hash for generated names', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'ocibuild-x509-'));
  try {
    const bmpConfig = path.join(dir, 'bmp.cnf');
    writeFileSync(bmpConfig, '[req]\ndistinguished_name=dn\nstring_mask=MASK:0x800\n[dn]\n');
    const subjects: Array<[string, string[]]> = [
      ['/CN=Plain Name/O=Org', []],
      ['/CN=  Lots   of \t Space  /O=UPPER Case Org/C=DE', []],
      ['/CN=a+O=b/C=DE', ['-multivalue-rdn']],
      ['/CN=Zürich Ünïcödé/O=Ex', []],
      ['/CN=BMP Name Ä/O=Org', ['-config', bmpConfig]],
      ['/C=US/ST=New  York/L=NYC/O=Example, Inc./OU=Ops/CN=root.example.com', []],
    ];
    for (const [i, [subj, extra]] of subjects.entries()) {
      const cert = path.join(dir, `c${i}.pem`);
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', path.join(dir, 'k.pem'), '-out', cert, '-days', '1', '-subj', subj, '-utf8', ...extra], { stdio: 'pipe' });
      assert.equal(subjectHash(readFileSync(cert)), opensslHash(cert), subj);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("subjectHash agrees with openssl for the host's ca-certificates", () => {
  const dir = '/usr/share/ca-certificates/mozilla';
  assert.ok(existsSync(dir), `${dir} missing (apt-get install ca-certificates)`);
  const all = readdirSync(dir).filter((f) => f.endsWith('.crt')).sort();
  assert.ok(all.length > 50);
  // Every fifth: one openssl process per certificate is slow on small machines.
  const files = all.filter((_, i) => i % 5 === 0);
  for (const f of files) assert.equal(subjectHash(readFileSync(path.join(dir, f))), opensslHash(path.join(dir, f)), f);
});
