// The node:http client against real local servers: keep-alive, bodies cut short,
// abort, timeouts, streamed request bodies, HEAD, https with a private CA.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { getEventListeners } from 'node:events';
import { Readable } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import {
  DUMP_LIMIT,
  HTTP_CONNECT_TIMEOUT,
  HTTP_HEADERS_TIMEOUT,
  HTTP_IDLE_TIMEOUT,
  HTTP_REQUEST_BODY_LENGTH,
  request,
} from '../../src/http/client.js';
import { isAbortError, isTransientError } from '../../src/registry/transient.js';
import { scratchDirs } from '../support/scratch.js';
import { selfSignedCert, serveHttp, serveHttps, silentTcp, type Handler, type LocalServer } from './servers.js';

const freshDir = await scratchDirs('http-client');

const servers: LocalServer[] = [];
after(() => Promise.all(servers.map((s) => s.close())));

async function server(handler: Handler): Promise<LocalServer> {
  const s = await serveHttp(handler);
  servers.push(s);
  return s;
}

/** A promise and its resolver, for a server to say where it got to. */
function signal<T = void>(): { promise: Promise<T>; fire(v: T): void } {
  let fire!: (v: T) => void;
  const promise = new Promise<T>((r) => (fire = r));
  return { promise, fire };
}

test('sequential requests to one origin reuse one keep-alive connection', async () => {
  const srv = await server((req, res) => {
    res.end(`hello ${req.url}`);
  });
  for (const path of ['/a', '/b', '/c']) {
    const res = await request(`${srv.url}${path}`);
    assert.equal(res.statusCode, 200);
    assert.equal(await res.body.text(), `hello ${path}`);
  }
  assert.equal(srv.connections(), 1);
});

test('a reused connection carries no listener of an earlier exchange', async () => {
  const srv = await server((_req, res) => res.end('x'));
  const counts: number[] = [];
  for (let i = 0; i < 15; i++) {
    const res = await request(srv.url);
    counts.push(res.body.socket.listenerCount('timeout'));
    await res.body.dump();
  }
  assert.equal(srv.connections(), 1);
  assert.deepEqual(new Set(counts).size, 1, `timeout listeners per request: ${counts.join(' ')}`);
});

test('response headers are lower-case; a repeated header is an array in order', async () => {
  const srv = await server((_req, res) => {
    res.setHeader('WWW-Authenticate', ['Basic realm="a"', 'Bearer realm="b"']);
    res.setHeader('Docker-Content-Digest', 'sha256:00');
    res.end();
  });
  const res = await request(srv.url);
  await res.body.dump();
  assert.deepEqual(res.headers['www-authenticate'], ['Basic realm="a"', 'Bearer realm="b"']);
  assert.equal(res.headers['docker-content-digest'], 'sha256:00');
});

test('a body cut short of its Content-Length (server closes) is a transient error, not an end', async () => {
  const srv = await server((_req, res) => {
    res.writeHead(200, { 'content-length': 1000 });
    res.write(Buffer.alloc(100, 1), () => res.socket?.end());
  });
  const res = await request(srv.url);
  assert.equal(res.headers['content-length'], '1000');
  let got = 0;
  await assert.rejects(
    (async () => {
      for await (const chunk of res.body as AsyncIterable<Buffer>) got += chunk.length;
    })(),
    (err: unknown) => {
      assert.equal((err as { code?: unknown }).code, 'ECONNRESET');
      assert.ok(isTransientError(err));
      return true;
    },
  );
  assert.equal(got, 100);
  // text() sees the same failure.
  const again = await request(srv.url);
  await assert.rejects(again.body.text(), { code: 'ECONNRESET' });
});

test('abort before the headers: the request rejects with an AbortError', async () => {
  const arrived = signal();
  const srv = await server(() => {
    arrived.fire();
    // Never answers; the client's abort ends the exchange.
  });
  const ac = new AbortController();
  const pending = request(srv.url, { signal: ac.signal });
  await arrived.promise;
  ac.abort();
  await assert.rejects(pending, (err: unknown) => {
    assert.equal((err as Error).name, 'AbortError');
    assert.ok(isAbortError(err));
    assert.ok(!isTransientError(err));
    return true;
  });
  await assert.rejects(request(srv.url, { signal: ac.signal }), { name: 'AbortError' });
});

test('abort mid-body: the body fails with an AbortError and the connection is closed', async () => {
  const closed = signal();
  const srv = await server((req, res) => {
    req.socket.once('close', () => closed.fire());
    res.writeHead(200, { 'content-length': 1_000_000 });
    res.write(Buffer.alloc(1000));
    // ...and nothing more: a download stuck in the middle.
  });
  const ac = new AbortController();
  const res = await request(srv.url, { signal: ac.signal });
  await assert.rejects(
    (async () => {
      for await (const _chunk of res.body) ac.abort();
    })(),
    { name: 'AbortError' },
  );
  assert.ok(res.body.destroyed);
  // The server sees its end of the connection close.
  await closed.promise;
  assert.equal(getEventListeners(ac.signal, 'abort').length, 0);
});

test('a signal shared by many requests keeps no listener once they are done', async () => {
  const srv = await server((_req, res) => res.end('ok'));
  const ac = new AbortController();
  for (let i = 0; i < 12; i++) {
    const res = await request(srv.url, { signal: ac.signal });
    if (i % 2 === 0) await res.body.text();
    else await res.body.dump();
  }
  assert.equal(getEventListeners(ac.signal, 'abort').length, 0);
});

test('a closed port: ECONNREFUSED, transient', async () => {
  const srv = await serveHttp(() => undefined);
  await srv.close();
  await assert.rejects(request(`${srv.url}/x`), (err: unknown) => {
    assert.equal((err as { code?: unknown }).code, 'ECONNREFUSED');
    assert.ok(isTransientError(err));
    return true;
  });
});

test('idle timeout: a body that stops coming fails with HTTP_IDLE_TIMEOUT', async () => {
  const srv = await server((_req, res) => {
    res.writeHead(200, { 'content-length': 10_000 });
    res.write(Buffer.alloc(500));
  });
  const res = await request(srv.url, { timeouts: { idleMs: 300 } });
  assert.equal(res.statusCode, 200);
  let got = 0;
  await assert.rejects(
    (async () => {
      for await (const chunk of res.body as AsyncIterable<Buffer>) got += chunk.length;
    })(),
    (err: unknown) => {
      assert.equal((err as { code?: unknown }).code, HTTP_IDLE_TIMEOUT);
      assert.ok(isTransientError(err));
      return true;
    },
  );
  assert.equal(got, 500);
});

test('headers timeout: a server that never answers fails with HTTP_HEADERS_TIMEOUT', async () => {
  const srv = await server(() => undefined);
  await assert.rejects(request(srv.url, { timeouts: { headersMs: 300 } }), (err: unknown) => {
    assert.equal((err as { code?: unknown }).code, HTTP_HEADERS_TIMEOUT);
    assert.ok(isTransientError(err));
    return true;
  });
});

test('connect timeout: a TLS handshake that never completes fails with HTTP_CONNECT_TIMEOUT', async () => {
  const tcp = await silentTcp();
  try {
    await assert.rejects(request(`https://127.0.0.1:${tcp.port}/`, { timeouts: { connectMs: 300 } }), (err: unknown) => {
      assert.equal((err as { code?: unknown }).code, HTTP_CONNECT_TIMEOUT);
      assert.ok(isTransientError(err));
      return true;
    });
  } finally {
    await tcp.close();
  }
});

test('a streamed request body is sent with back-pressure: the source runs at most a few MiB ahead of the reader', async () => {
  const total = 96 * 1024 * 1024;
  const chunk = Buffer.alloc(64 * 1024, 7);
  let pulled = 0;
  let received = 0;
  let maxAhead = 0;
  const srv = await server(async (req, res) => {
    const hash = createHash('sha256');
    // A slow reader: one event-loop turn per chunk.
    for await (const c of req as AsyncIterable<Buffer>) {
      received += c.length;
      hash.update(c);
      await tick();
    }
    res.end(hash.digest('hex'));
  });
  async function* source(): AsyncGenerator<Buffer> {
    while (pulled < total) {
      maxAhead = Math.max(maxAhead, pulled - received);
      pulled += chunk.length;
      yield chunk;
    }
  }
  const expected = createHash('sha256');
  for (let n = 0; n < total; n += chunk.length) expected.update(chunk);
  const res = await request(`${srv.url}/upload`, {
    method: 'PUT',
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(total) },
    body: source(),
  });
  assert.equal(res.statusCode, 200);
  assert.equal(await res.body.text(), expected.digest('hex'));
  assert.equal(received, total);
  // Without back-pressure the generator is drained into memory long before the reader catches up.
  assert.ok(maxAhead < 32 * 1024 * 1024, `the source ran ${maxAhead} bytes ahead of the server`);
});

test('a Readable request body and a Buffer body arrive whole', async () => {
  const srv = await server(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
    res.end(`${req.method} ${req.headers['content-length'] ?? 'chunked'} ${Buffer.concat(chunks).toString()}`);
  });
  const a = await request(srv.url, { method: 'POST', body: Readable.from([Buffer.from('one '), Buffer.from('two')]) });
  assert.equal(await a.body.text(), 'POST chunked one two');
  const b = await request(srv.url, { method: 'PUT', body: Buffer.from('bytes') });
  assert.equal(await b.body.text(), 'PUT 5 bytes');
  const c = await request(srv.url, { method: 'POST', body: 'grant_type=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
  assert.equal(await c.body.text(), 'POST 12 grant_type=x');
});

test('a streamed request body shorter than its Content-Length fails the request (transient)', async () => {
  const srv = await server(async (req, res) => {
    for await (const _c of req) {
      // Reads what comes; the client gives up first.
    }
    res.end('unexpected');
  });
  await assert.rejects(
    request(srv.url, { method: 'PATCH', headers: { 'content-length': '100' }, body: Readable.from([Buffer.alloc(60)]) }),
    (err: unknown) => {
      assert.equal((err as { code?: unknown }).code, HTTP_REQUEST_BODY_LENGTH);
      assert.ok(isTransientError(err));
      return true;
    },
  );
});

test('a request body stream that fails fails the request with its error', async () => {
  const srv = await server(async (req, res) => {
    for await (const _c of req) {
      // Reads until the client breaks off.
    }
    res.end();
  });
  async function* broken(): AsyncGenerator<Buffer> {
    yield Buffer.alloc(10);
    throw new Error('disk read failed');
  }
  await assert.rejects(request(srv.url, { method: 'PUT', body: broken() }), /disk read failed/);
});

test('HEAD: headers with Content-Length, no body, and the connection serves the next request', async () => {
  const srv = await server((req, res) => {
    res.writeHead(200, { 'content-length': 123_456, 'docker-content-digest': 'sha256:ab' });
    res.end(req.method === 'HEAD' ? undefined : Buffer.alloc(123_456));
  });
  const head = await request(srv.url, { method: 'HEAD' });
  assert.equal(head.statusCode, 200);
  assert.equal(head.headers['content-length'], '123456');
  assert.equal(await head.body.text(), '');
  const get = await request(srv.url);
  let n = 0;
  for await (const c of get.body as AsyncIterable<Buffer>) n += c.length;
  assert.equal(n, 123_456);
  assert.equal(srv.connections(), 1);
});

test('dump(): a small body is drained and the connection kept; a large one closes the connection', async () => {
  const srv = await server((req, res) => {
    if (req.url === '/large-chunked') {
      // No Content-Length: the size shows only while reading.
      res.writeHead(500);
      for (let i = 0; i < 16; i++) res.write(Buffer.alloc(DUMP_LIMIT / 2));
      res.end();
      return;
    }
    const size = req.url === '/large' ? DUMP_LIMIT * 8 : 1000;
    res.writeHead(404, { 'content-length': size });
    res.end(Buffer.alloc(size));
  });
  const small = await request(`${srv.url}/small`);
  await small.body.dump();
  assert.ok(small.body.bodyUsed);
  await (await request(`${srv.url}/small`)).body.dump();
  assert.equal(srv.connections(), 1);
  await (await request(`${srv.url}/large`)).body.dump();
  await (await request(`${srv.url}/small`)).body.dump();
  assert.equal(srv.connections(), 2);
  await (await request(`${srv.url}/large-chunked`)).body.dump();
  await (await request(`${srv.url}/small`)).body.dump();
  assert.equal(srv.connections(), 3);
});

test('text(), json() and bodyUsed', async () => {
  const srv = await server((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ path: req.url }));
  });
  const res = await request(`${srv.url}/token`);
  assert.equal(res.body.bodyUsed, false);
  assert.deepEqual(await res.body.json(), { path: '/token' });
  assert.equal(res.body.bodyUsed, true);
  const bad = await request(srv.url, { method: 'GET' });
  assert.equal(await bad.body.text(), '{"path":"/"}');
});

test('redirects are returned, not followed', async () => {
  const srv = await server((_req, res) => {
    res.writeHead(307, { location: '/elsewhere', 'content-length': 0 });
    res.end();
  });
  const res = await request(`${srv.url}/here`);
  assert.equal(res.statusCode, 307);
  assert.equal(res.headers.location, '/elsewhere');
  await res.body.dump();
});

test('https: a self-signed server is refused, accepted with its certificate as `ca`, and kept alive', async (t) => {
  const cert = await selfSignedCert(await freshDir('tls'));
  if (!cert) {
    t.skip('no openssl CLI to make a certificate');
    return;
  }
  const srv = await serveHttps(cert, (req, res) => res.end(`tls ${req.url}`));
  servers.push(srv);
  await assert.rejects(request(`${srv.url}/x`), (err: unknown) => {
    assert.match(String((err as { code?: unknown }).code), /SELF_SIGNED|UNABLE_TO_VERIFY/);
    assert.ok(!isTransientError(err));
    return true;
  });
  for (const path of ['/a', '/b']) {
    const res = await request(`${srv.url}${path}`, { ca: cert.cert });
    assert.equal(await res.body.text(), `tls ${path}`);
  }
  // The refused handshake was one connection; both requests shared the next.
  assert.equal(srv.connections(), 1);
});
