// apt downloads follow a mirror's redirects (http → https, mirror redirectors) up to
// five hops, carrying a resumed download's Range header along; the HTTP client itself
// never follows them.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fetchBuffer, fetchToFile } from '../../src/apt/http.js';
import { OcibuildError } from '../../src/errors.js';
import { serveDirectory, type TestServer } from '../support/http.js';
import { scratchDirs } from '../support/scratch.js';
import { selfSignedCert, serveHttp, serveHttps, type LocalServer } from './servers.js';

const freshDir = await scratchDirs('mirror-redirects');
const closers: Array<{ close(): Promise<void> }> = [];
after(() => Promise.all(closers.map((c) => c.close())));

const content = Buffer.from(Array.from({ length: 5000 }, (_, i) => `line ${i}\n`).join(''));

const mirrorDir = await freshDir('mirror');
await writeFile(join(mirrorDir, 'InRelease'), content);
const mirror: TestServer = await serveDirectory(mirrorDir);
closers.push(mirror);

/** A redirector: /hop/N/<path> answers 302 to /hop/N-1/<path>, and /hop/0/<path> to `target`<path>. */
async function redirector(target: string): Promise<LocalServer> {
  const srv = await serveHttp((req, res) => {
    const m = /^\/hop\/(\d+)(\/.*)$/.exec(req.url ?? '');
    if (!m) {
      res.writeHead(404, { 'content-length': 0 });
      res.end();
      return;
    }
    const n = Number(m[1]);
    const location = n === 0 ? `${target}${m[2]}` : `/hop/${n - 1}${m[2]}`;
    res.writeHead(302, { location, 'content-length': 0 });
    res.end();
  });
  closers.push(srv);
  return srv;
}

test('five redirects are followed; a sixth is an error naming the URL', async () => {
  const r = await redirector(mirror.url);
  assert.deepEqual(await fetchBuffer(`${r.url}/hop/4/InRelease`, { backoffMs: 1 }), content);
  const url = `${r.url}/hop/5/InRelease`;
  await assert.rejects(fetchBuffer(url, { backoffMs: 1 }), (err: unknown) => {
    assert.ok(err instanceof OcibuildError);
    assert.equal(err.message, `HTTP 302 while downloading ${url}`);
    assert.equal(err.where, url);
    return true;
  });
});

test('a resumed download keeps its Range across a redirect', async () => {
  const r = await redirector(mirror.url);
  const file = join(await freshDir('resume'), 'InRelease.partial');
  await writeFile(file, content.subarray(0, 1234));
  const before = mirror.requests.length;
  const got = await fetchToFile(`${r.url}/hop/1/InRelease`, file, content.length, { backoffMs: 1 });
  assert.deepEqual(got, { size: content.length, resumed: true });
  assert.deepEqual(await readFile(file), content);
  assert.deepEqual(mirror.requests.slice(before), [{ method: 'GET', path: '/InRelease', status: 206, range: 'bytes=1234-' }]);
});

test('an http mirror redirecting to https (a private CA passed through the options)', async (t) => {
  const cert = await selfSignedCert(await freshDir('tls'));
  if (!cert) {
    t.skip('no openssl CLI to make a certificate');
    return;
  }
  const tls = await serveHttps(cert, async (req, res) => {
    const body = await readFile(join(mirrorDir, (req.url ?? '/').slice(1))).catch(() => undefined);
    res.writeHead(body ? 200 : 404, { 'content-length': body?.length ?? 0 });
    res.end(body);
  });
  closers.push(tls);
  const r = await redirector(tls.url);
  assert.deepEqual(await fetchBuffer(`${r.url}/hop/0/InRelease`, { backoffMs: 1, http: { ca: cert.cert } }), content);
  // Without the CA the certificate is refused for good: no retries, a plain error.
  await assert.rejects(fetchBuffer(`${r.url}/hop/0/InRelease`, { backoffMs: 1 }), (err: unknown) => {
    assert.match(String((err as { code?: unknown }).code), /SELF_SIGNED|UNABLE_TO_VERIFY/);
    return true;
  });
  assert.equal(tls.connections(), 1);
});
