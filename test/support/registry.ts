// A real registry for tests: Debian's `docker-registry` (distribution 2.8) on a free
// 127.0.0.1 port, storage in a temp dir, deletion enabled, and one of three auth modes:
// none, htpasswd (bcrypt entries) or token (a token server from ./token-server.ts).
// Also a tiny OCI image layout to push into it with skopeo.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { get } from 'node:http';
import { get as httpsGet } from 'node:https';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { startTokenServer, type AccessRule, type TokenAlgorithm, type TokenServer, type TokenUser } from './token-server.js';

export type RegistryAuth = 'none' | 'htpasswd' | 'token';

export interface RegistryOptions {
  auth?: RegistryAuth;
  /** username → password (token mode: or a user with its own access rules). Default for
   *  htpasswd and token: one user `ocibuild` with a random password. */
  users?: Record<string, string | TokenUser>;
  /** Token mode: what a request without credentials is granted (default nothing). */
  anonymous?: AccessRule[];
  /** Token mode: signing algorithm of the token server; default ES256. */
  algorithm?: TokenAlgorithm;
  /** Token mode: token lifetime in seconds. */
  expiresIn?: number;
  /** Token mode: whether the token server answers POST /token (OAuth2); default true. */
  oauth?: boolean;
  /** Answer with relative `Location` headers (`http.relativeurls`). */
  relativeUrls?: boolean;
  /** Refuse writes (`storage.maintenance.readonly`). */
  readOnly?: boolean;
  /** How long to wait for `GET /v2/` to answer; default 20 s. */
  startTimeoutMs?: number;
  /** Serve HTTPS with this certificate and key (PEM files); with `clientCa`, require client certificates it signed. */
  tls?: { cert: string; key: string; clientCa?: string };
}

export interface TestRegistry {
  /** `127.0.0.1:PORT`, what goes in an image reference. */
  host: string;
  /** `http://127.0.0.1:PORT` (`https://` with `tls`) without a trailing slash. */
  url: string;
  port: number;
  /** The docker-registry process. */
  pid: number;
  auth: RegistryAuth;
  /** The first user, for the common one-user case. */
  username?: string;
  password?: string;
  /** Every user and password. */
  users: Record<string, string>;
  /** Token mode: the token server the registry sends clients to. */
  tokenServer?: TokenServer;
  /** The storage root (docker/registry/v2/…), for tests that corrupt or inspect blobs. */
  storageDir: string;
  /** What the registry has written to stdout and stderr so far. */
  logs(): string;
  stop(): Promise<void>;
}

export const REGISTRY_BINARY = '/usr/bin/docker-registry';

/** A registry must not outlive its test process, however that process ends (a runner's
 *  timeout, SIGKILL): a watchdog shell holds a pipe from us and, when the pipe closes,
 *  sends the registry SIGTERM and, once it is gone, removes its temp dir. Closing the
 *  pipe is also how `stop()` asks the registry to go. */
const WATCHDOG = [
  'cat >/dev/null',
  'kill -TERM "$1" 2>/dev/null',
  'i=0; while kill -0 "$1" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done',
  'rm -rf "$2"',
].join('\n');

function watchdog(pid: number, dir: string): ChildProcess {
  const dog = spawn('sh', ['-c', WATCHDOG, 'registry-watchdog', String(pid), dir], { stdio: ['pipe', 'ignore', 'ignore'] });
  dog.on('error', () => undefined);
  return dog;
}

function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => ok(port));
    });
  });
}

function runTool(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((ok) => {
    execFile(cmd, args, { timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
      ok({ code, stdout, stderr });
    });
  });
}

const BCRYPT_ALPHABET = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
/** bcrypt's own base64 (no padding, its alphabet) of 16 random bytes: a 22-character salt. */
function bcryptSalt(): string {
  const bytes = randomBytes(16);
  let out = '';
  for (let i = 0; i < bytes.length; i += 3) {
    const b0 = bytes[i] ?? 0;
    const b1 = bytes[i + 1] ?? 0;
    const b2 = bytes[i + 2] ?? 0;
    const chars = [b0 >> 2, ((b0 & 3) << 4) | (b1 >> 4), ((b1 & 15) << 2) | (b2 >> 6), b2 & 63];
    const n = i + 1 >= bytes.length ? 2 : i + 2 >= bytes.length ? 3 : 4;
    for (const c of chars.slice(0, n)) out += BCRYPT_ALPHABET[c];
  }
  return out;
}

/** A bcrypt hash (the only kind distribution's htpasswd accepts), cost 5 to stay fast.
 *  htpasswd (apache2-utils) when present; otherwise perl's crypt(), which on Debian 12 is
 *  libxcrypt and knows `$2b$` (perl-base is Essential, so this always works there);
 *  otherwise python3's crypt module (gone in Python 3.13). */
export async function bcryptHash(password: string): Promise<string> {
  const valid = (h: string): boolean => /^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/.test(h);
  const htpasswd = await runTool('htpasswd', ['-nbBC', '5', 'u', password]);
  const fromHtpasswd = htpasswd.stdout.trim().replace(/^u:/, '');
  if (htpasswd.code === 0 && valid(fromHtpasswd)) return fromHtpasswd;
  const setting = `$2b$05$${bcryptSalt()}`;
  const perl = await runTool('perl', ['-e', 'print crypt($ARGV[0], $ARGV[1])', password, setting]);
  if (perl.code === 0 && valid(perl.stdout.trim())) return perl.stdout.trim();
  const python = await runTool('python3', ['-W', 'ignore', '-c', 'import crypt, sys; print(crypt.crypt(sys.argv[1], sys.argv[2]))', password, setting]);
  if (python.code === 0 && valid(python.stdout.trim())) return python.stdout.trim();
  throw new Error('registry: cannot make a bcrypt hash: install apache2-utils (htpasswd -B), or perl with a bcrypt-capable libcrypt');
}

/** 200 or 401 from `GET /v2/` means the registry is serving (over TLS: any answer to the handshake, certificates unchecked). */
function ping(url: string): Promise<boolean> {
  return new Promise((ok) => {
    const fetcher = url.startsWith('https:') ? httpsGet : get;
    const req = fetcher(`${url}/v2/`, { agent: false, timeout: 2000, rejectUnauthorized: false }, (res) => {
      res.resume();
      ok(res.statusCode === 200 || res.statusCode === 401 || (url.startsWith('https:') && res.statusCode === 400));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', (err: NodeJS.ErrnoException) => ok(url.startsWith('https:') && /certificate|handshake|alert/i.test(err.message)));
  });
}

function configYaml(o: {
  port: number; storageDir: string; htpasswdPath?: string; token?: TokenServer; certPath?: string;
  relativeUrls: boolean; readOnly: boolean; tls?: RegistryOptions['tls'];
}): string {
  const lines = [
    'version: 0.1',
    'log:',
    '  level: info',
    '  formatter: text',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${JSON.stringify(o.storageDir)}`,
    '  delete:',
    '    enabled: true',
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    ...(o.readOnly ? ['    readonly:', '      enabled: true'] : []),
    'http:',
    `  addr: 127.0.0.1:${o.port}`,
    `  secret: ${randomBytes(16).toString('hex')}`,
    ...(o.relativeUrls ? ['  relativeurls: true'] : []),
    ...(o.tls
      ? [
          '  tls:',
          `    certificate: ${JSON.stringify(o.tls.cert)}`,
          `    key: ${JSON.stringify(o.tls.key)}`,
          ...(o.tls.clientCa ? ['    clientcas:', `      - ${JSON.stringify(o.tls.clientCa)}`] : []),
        ]
      : []),
  ];
  if (o.htpasswdPath !== undefined) {
    lines.push('auth:', '  htpasswd:', '    realm: ocibuild-test', `    path: ${JSON.stringify(o.htpasswdPath)}`);
  }
  if (o.token !== undefined && o.certPath !== undefined) {
    lines.push(
      'auth:',
      '  token:',
      `    realm: ${JSON.stringify(o.token.realm)}`,
      `    service: ${JSON.stringify(o.token.service)}`,
      `    issuer: ${JSON.stringify(o.token.issuer)}`,
      `    rootcertbundle: ${JSON.stringify(o.certPath)}`,
    );
  }
  return lines.join('\n') + '\n';
}

export async function startRegistry(opts: RegistryOptions = {}): Promise<TestRegistry> {
  const auth = opts.auth ?? 'none';
  const dir = await mkdtemp(join(tmpdir(), 'ocibuild-registry-'));
  let tokenServer: TokenServer | undefined;
  try {
    const storageDir = join(dir, 'storage');
    await mkdir(storageDir);
    const userSpecs = opts.users ?? (auth === 'none' ? {} : { ocibuild: randomBytes(12).toString('hex') });
    const users = Object.fromEntries(Object.entries(userSpecs).map(([n, u]) => [n, typeof u === 'string' ? u : u.password]));

    let htpasswdPath: string | undefined;
    let certPath: string | undefined;
    if (auth === 'htpasswd') {
      htpasswdPath = join(dir, 'htpasswd');
      const entries: string[] = [];
      for (const [name, password] of Object.entries(users)) entries.push(`${name}:${await bcryptHash(password)}\n`);
      await writeFile(htpasswdPath, entries.join(''));
    } else if (auth === 'token') {
      tokenServer = await startTokenServer({
        users: userSpecs,
        ...(opts.anonymous !== undefined && { anonymous: opts.anonymous }),
        ...(opts.algorithm !== undefined && { algorithm: opts.algorithm }),
        ...(opts.expiresIn !== undefined && { expiresIn: opts.expiresIn }),
        ...(opts.oauth !== undefined && { oauth: opts.oauth }),
      });
      certPath = join(dir, 'token-root.pem');
      await writeFile(certPath, tokenServer.certificatePem);
    }

    const deadline = Date.now() + (opts.startTimeoutMs ?? 20_000);
    let output = '';
    // The port is free when we pick it and may be taken before the registry binds it:
    // then the registry exits at once and we try another.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const configPath = join(dir, 'config.yml');
      await writeFile(configPath, configYaml({ port, storageDir, htpasswdPath, token: tokenServer, certPath, relativeUrls: opts.relativeUrls ?? false, readOnly: opts.readOnly ?? false, tls: opts.tls }));
      const child = spawn(REGISTRY_BINARY, ['serve', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
      const dog = child.pid === undefined ? undefined : watchdog(child.pid, dir);
      output = '';
      const append = (d: Buffer): void => void (output += d.toString('utf8'));
      child.stdout.on('data', append);
      child.stderr.on('data', append);
      let exited = false;
      const exit = new Promise<void>((ok) => {
        const done = (): void => {
          if (exited) return;
          exited = true;
          // The registry is gone: the watchdog must not signal a pid that may be reused.
          dog?.kill('SIGKILL');
          dog?.stdin?.destroy();
          ok();
        };
        child.once('exit', done);
        child.once('error', (err) => {
          output += `spawn ${REGISTRY_BINARY}: ${err.message}\n`;
          done();
        });
      });
      const url = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
      let ready = false;
      while (!exited && Date.now() < deadline) {
        if (await ping(url)) {
          ready = true;
          break;
        }
        await Promise.race([exit, new Promise((r) => setTimeout(r, 25))]);
      }
      const stopChild = async (): Promise<void> => {
        if (exited) return;
        dog?.stdin?.end();
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exit;
        clearTimeout(timer);
      };
      if (ready) {
        const first = Object.keys(users)[0];
        let stopped: Promise<void> | undefined;
        const ts = tokenServer;
        return {
          host: `127.0.0.1:${port}`,
          url,
          port,
          pid: child.pid ?? 0,
          auth,
          ...(first !== undefined && { username: first, password: users[first] }),
          users,
          ...(ts !== undefined && { tokenServer: ts }),
          storageDir,
          logs: () => output,
          stop: () =>
            (stopped ??= (async () => {
              await stopChild();
              await ts?.close();
              await rm(dir, { recursive: true, force: true });
            })()),
        };
      }
      await stopChild();
      if (!/address already in use/.test(output) || attempt >= 5 || Date.now() >= deadline) {
        throw new Error(`docker-registry did not start (${exited ? 'it exited' : 'no answer on /v2/'}):\n${output}`);
      }
    }
  } catch (err) {
    await tokenServer?.close();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

// ---- a tiny image to push ----

export interface TinyImage {
  /** The OCI layout directory. */
  dir: string;
  tag: string;
  /** `oci:DIR:TAG`, a skopeo source. */
  ref: string;
  manifestDigest: string;
  configDigest: string;
  layerDigest: string;
  blobs: Map<string, Buffer>;
}

const sha256 = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

/** One regular file in a ustar archive with numeric owner 0 and mtime 0. */
function tarOneFile(name: string, content: Buffer): Buffer {
  const header = Buffer.alloc(512);
  const put = (offset: number, length: number, value: string): void => void header.write(value, offset, length, 'ascii');
  const octal = (n: number, width: number): string => n.toString(8).padStart(width - 1, '0') + '\0';
  put(0, 100, name);
  put(100, 8, octal(0o644, 8));
  put(108, 8, octal(0, 8));
  put(116, 8, octal(0, 8));
  put(124, 12, octal(content.length, 12));
  put(136, 12, octal(0, 12));
  put(148, 8, '        ');
  put(156, 1, '0');
  put(257, 8, 'ustar\x0000');
  let sum = 0;
  for (const b of header) sum += b;
  put(148, 8, sum.toString(8).padStart(6, '0') + '\0 ');
  const pad = Buffer.alloc((512 - (content.length % 512)) % 512);
  return Buffer.concat([header, content, pad, Buffer.alloc(1024)]);
}

/** Writes an OCI image layout holding one image: one gzip layer with `/hello.txt`
 *  (containing `content`, so different calls can make different blobs), linux/amd64. */
export async function writeTinyImage(dir: string, options: { tag?: string; content?: string } = {}): Promise<TinyImage> {
  const tag = options.tag ?? 'latest';
  const tar = tarOneFile('hello.txt', Buffer.from(options.content ?? 'hello from ocibuild tests\n'));
  const layer = gzipSync(tar, { level: 9 });
  const config = Buffer.from(JSON.stringify({
    architecture: 'amd64',
    os: 'linux',
    config: { Cmd: ['/hello.txt'] },
    rootfs: { type: 'layers', diff_ids: [sha256(tar)] },
  }));
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(layer), size: layer.length }],
  }));
  const blobs = new Map([layer, config, manifest].map((b) => [sha256(b), b]));
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  for (const [digest, bytes] of blobs) await writeFile(join(dir, 'blobs', 'sha256', digest.slice('sha256:'.length)), bytes);
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(join(dir, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [{
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: sha256(manifest),
      size: manifest.length,
      annotations: { 'org.opencontainers.image.ref.name': tag },
    }],
  }));
  return { dir, tag, ref: `oci:${dir}:${tag}`, manifestDigest: sha256(manifest), configDigest: sha256(config), layerDigest: sha256(layer), blobs };
}
