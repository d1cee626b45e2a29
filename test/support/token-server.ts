// A Docker token server (the "Bearer realm" of a registry) on 127.0.0.1 for tests.
//
// It speaks the protocol distribution's token auth expects:
//   GET  /token?service=S&scope=repository:a/b:pull,push&scope=…   (Basic credentials, optional)
//   POST /token  grant_type=password|refresh_token (OAuth2 form; refresh_token when access_type=offline)
// and signs JWTs (ES256 or RS256) whose header carries the signing certificate in `x5c`.
// distribution 2.8 verifies that chain against its `rootcertbundle`, then checks `iss`,
// `aud` (one string, not a list, in 2.8), `exp`/`nbf` (±60 s leeway) and the `access` claim.
// The certificate is self-signed and written here as DER: node:crypto signs but cannot
// issue certificates, and openssl's CLI is not on a minimal Debian.
import { createHash, generateKeyPairSync, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import { listenOnFreePort } from './http.js';

export type TokenAlgorithm = 'ES256' | 'RS256';

/** What a caller may be granted. `name` is a glob where `*` matches any run of characters
 *  (slashes included); `actions` may hold '*' for "every action asked for". */
export interface AccessRule {
  /** Resource type; default 'repository'. */
  type?: string;
  name: string;
  actions: string[];
}

export interface TokenUser {
  password: string;
  /** Default: everything (every repository, every action, and the catalog). */
  access?: AccessRule[];
}

export interface TokenServerOptions {
  /** The `service` the registry names in its challenge and expects as `aud`. */
  service?: string;
  issuer?: string;
  /** username → password (full access) or a user with its own rules. */
  users?: Record<string, string | TokenUser>;
  /** What a request without credentials is granted; default nothing (an empty `access`). */
  anonymous?: AccessRule[];
  algorithm?: TokenAlgorithm;
  /** Lifetime of access tokens in seconds; default 300. */
  expiresIn?: number;
  /** Answer POST /token (OAuth2); false answers 404 there, like token servers that only do GET. */
  oauth?: boolean;
  /** Which field(s) carry the token in GET answers; default both `token` and `access_token`. */
  tokenFields?: 'both' | 'token' | 'access_token';
}

/** One entry of a token's `access` claim. */
export interface ResourceAccess { type: string; name: string; actions: string[] }

export interface TokenRequest {
  method: string;
  /** Path and query as received. */
  url: string;
  service?: string;
  /** Scopes asked for, one per entry, split on spaces as well as on repeated parameters. */
  scopes: string[];
  /** How the request authenticated: Authorization header kind, or the OAuth2 grant. */
  auth: 'none' | 'basic' | 'bearer' | 'other' | 'password-grant' | 'refresh-grant';
  /** Username given (Basic or form), whether or not it was accepted. */
  username?: string;
  /** POST form fields, with `password` and `refresh_token` values replaced by '<redacted>'. */
  form?: Record<string, string>;
  headers: IncomingHttpHeaders;
  status: number;
  /** The `access` claim of the token handed out, when one was. */
  granted?: ResourceAccess[];
}

export interface MintOptions {
  subject?: string;
  /** Seconds from now; negative makes an expired token. Default: the server's expiresIn. */
  expiresIn?: number;
  audience?: string;
  issuer?: string;
  /** Sign with a fresh certificate the registry does not trust (an `invalid_token` case). */
  untrusted?: boolean;
}

export interface TokenServer {
  /** Base URL without a trailing slash. */
  url: string;
  /** The realm to configure in the registry: `${url}/token`. */
  realm: string;
  service: string;
  issuer: string;
  algorithm: TokenAlgorithm;
  /** PEM of the self-signed signing certificate: the registry's `rootcertbundle`. */
  certificatePem: string;
  /** Every request in arrival order. */
  requests: TokenRequest[];
  /** A refresh token (docker's "identity token") for `username`, as POST with access_type=offline returns. */
  issueRefreshToken(username: string): string;
  /** A signed token with exactly `access`, bypassing the users' rules (for expired, foreign-audience… tokens). */
  mintToken(access: ResourceAccess[], options?: MintOptions): string;
  close(): Promise<void>;
}

// ---- DER, just enough for one self-signed certificate ----

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}
const tlv = (tag: number, ...content: Buffer[]): Buffer => {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
};
const seq = (...items: Buffer[]): Buffer => tlv(0x30, ...items);
const derSet = (...items: Buffer[]): Buffer => tlv(0x31, ...items);
const derNull = Buffer.from([0x05, 0x00]);
const derTrue = Buffer.from([0x01, 0x01, 0xff]);
const derInt = (bytes: Buffer): Buffer => {
  let b = bytes;
  while (b.length > 1 && b[0] === 0 && (b[1] ?? 0) < 0x80) b = b.subarray(1);
  return tlv(0x02, (b[0] ?? 0) >= 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b);
};
const derOid = (dotted: string): Buffer => {
  const [a = 0, b = 0, ...rest] = dotted.split('.').map(Number);
  const out = [40 * a + b];
  for (const n of rest) {
    const groups: number[] = [];
    for (let v = n; ; v = Math.floor(v / 128)) {
      groups.unshift(v % 128);
      if (v < 128) break;
    }
    out.push(...groups.map((g, i) => (i < groups.length - 1 ? g | 0x80 : g)));
  }
  return tlv(0x06, Buffer.from(out));
};
const derTime = (d: Date): Buffer => {
  // RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime after.
  const iso = d.toISOString().replace(/[-:T]/g, '').slice(0, 14) + 'Z';
  return d.getUTCFullYear() < 2050 ? tlv(0x17, Buffer.from(iso.slice(2))) : tlv(0x18, Buffer.from(iso));
};
const derName = (cn: string): Buffer => seq(derSet(seq(derOid('2.5.4.3'), tlv(0x0c, Buffer.from(cn)))));

interface SigningIdentity { key: KeyObject; certDer: Buffer; certPem: string }

function makeIdentity(algorithm: TokenAlgorithm, commonName: string): SigningIdentity {
  const { privateKey, publicKey } =
    algorithm === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('rsa', { modulusLength: 2048 });
  const sigAlg = algorithm === 'ES256' ? seq(derOid('1.2.840.10045.4.3.2')) : seq(derOid('1.2.840.113549.1.1.11'), derNull);
  const serial = randomBytes(16);
  serial[0] = ((serial[0] ?? 0) & 0x7f) | 0x01;
  const now = Date.now();
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const extensions = seq(
    // basicConstraints (critical): CA, so Go's verifier accepts it as its own root.
    seq(derOid('2.5.29.19'), derTrue, tlv(0x04, seq(derTrue))),
    // keyUsage (critical): digitalSignature | keyCertSign.
    seq(derOid('2.5.29.15'), derTrue, tlv(0x04, Buffer.from([0x03, 0x02, 0x02, 0x84]))),
    // subjectKeyIdentifier: SHA-1 of the key, as RFC 5280 4.2.1.2 method (1) suggests.
    seq(derOid('2.5.29.14'), tlv(0x04, tlv(0x04, createHash('sha1').update(spki).digest()))),
  );
  const tbs = seq(
    tlv(0xa0, derInt(Buffer.from([2]))),
    derInt(serial),
    sigAlg,
    derName(commonName),
    seq(derTime(new Date(now - 3600_000)), derTime(new Date(now + 7 * 86400_000))),
    derName(commonName),
    spki,
    tlv(0xa3, extensions),
  );
  const signature = sign('sha256', tbs, privateKey); // DER-encoded ECDSA, as X.509 wants
  const certDer = seq(tbs, sigAlg, tlv(0x03, Buffer.from([0]), signature));
  const cert = new X509Certificate(certDer);
  if (!cert.verify(publicKey)) throw new Error('token server: generated certificate does not verify');
  return { key: privateKey, certDer, certPem: cert.toString() };
}

// ---- JWT ----

const b64url = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

function signJwt(identity: SigningIdentity, algorithm: TokenAlgorithm, claims: object): string {
  const header = { typ: 'JWT', alg: algorithm, x5c: [identity.certDer.toString('base64')] };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  // JWS (RFC 7518 3.4): ECDSA signatures are r||s, not DER.
  const signature =
    algorithm === 'ES256'
      ? sign('sha256', Buffer.from(input), { key: identity.key, dsaEncoding: 'ieee-p1363' })
      : sign('sha256', Buffer.from(input), identity.key);
  return `${input}.${b64url(signature)}`;
}

// ---- scopes and rules ----

/** `repository:a/b:pull,push` → {type, name, actions}; a name may itself hold ':' (a port). */
export function parseScope(scope: string): ResourceAccess | undefined {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first < 0 || last <= first) return undefined;
  const actions = scope.slice(last + 1).split(',').filter((a) => a !== '');
  return { type: scope.slice(0, first), name: scope.slice(first + 1, last), actions };
}

const globMatch = (glob: string, name: string): boolean =>
  new RegExp('^' + glob.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*') + '$').test(name);

const FULL_ACCESS: AccessRule[] = [
  { type: 'repository', name: '*', actions: ['*'] },
  { type: 'registry', name: 'catalog', actions: ['*'] },
];

function grant(rules: AccessRule[], wanted: ResourceAccess[]): ResourceAccess[] {
  const out: ResourceAccess[] = [];
  for (const w of wanted) {
    const allowed = new Set<string>();
    for (const r of rules) {
      if ((r.type ?? 'repository') !== w.type || !globMatch(r.name, w.name)) continue;
      for (const a of w.actions) if (r.actions.includes('*') || r.actions.includes(a)) allowed.add(a);
    }
    const actions = w.actions.filter((a) => allowed.has(a));
    if (actions.length > 0) out.push({ type: w.type, name: w.name, actions });
  }
  return out;
}

// ---- server ----

export async function startTokenServer(options: TokenServerOptions = {}): Promise<TokenServer> {
  const algorithm = options.algorithm ?? 'ES256';
  const service = options.service ?? 'ocibuild-test-registry';
  const issuer = options.issuer ?? 'ocibuild-test-token-server';
  const expiresIn = options.expiresIn ?? 300;
  const tokenFields = options.tokenFields ?? 'both';
  const identity = makeIdentity(algorithm, issuer);
  const users = new Map<string, TokenUser>(
    Object.entries(options.users ?? {}).map(([name, u]) => [name, typeof u === 'string' ? { password: u } : u]),
  );
  const refreshTokens = new Map<string, string>();
  const requests: TokenRequest[] = [];

  let stranger: SigningIdentity | undefined;
  const mint = (access: ResourceAccess[], m: MintOptions = {}): string => {
    const now = Math.floor(Date.now() / 1000);
    const signer = m.untrusted ? (stranger ??= makeIdentity(algorithm, issuer)) : identity;
    return signJwt(signer, algorithm, {
      iss: m.issuer ?? issuer,
      sub: m.subject ?? '',
      aud: m.audience ?? service,
      exp: now + (m.expiresIn ?? expiresIn),
      nbf: now - 1,
      iat: now,
      jti: randomBytes(12).toString('hex'),
      access,
    });
  };
  const issueRefreshToken = (username: string): string => {
    const t = randomBytes(24).toString('base64url');
    refreshTokens.set(t, username);
    return t;
  };
  const rulesFor = (username: string | undefined): AccessRule[] =>
    username === undefined ? options.anonymous ?? [] : users.get(username)?.access ?? FULL_ACCESS;

  const readBody = (req: IncomingMessage): Promise<string> =>
    new Promise((ok, fail) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (d: string) => (body += d));
      req.on('end', () => ok(body));
      req.on('error', fail);
    });

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const entry: TokenRequest = { method: req.method ?? '', url: req.url ?? '', scopes: [], auth: 'none', headers: req.headers, status: 0 };
    requests.push(entry);
    const reply = (status: number, body: object, headers: Record<string, string> = {}): void => {
      entry.status = status;
      const text = JSON.stringify(body);
      res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...headers });
      res.end(text);
    };
    const authz = req.headers.authorization;
    if (authz !== undefined) {
      const scheme = authz.split(' ')[0]?.toLowerCase();
      entry.auth = scheme === 'basic' ? 'basic' : scheme === 'bearer' ? 'bearer' : 'other';
    }

    if (url.pathname !== '/token') return reply(404, { error: 'not_found' });

    if (req.method === 'GET') {
      const svc = url.searchParams.get('service');
      if (svc !== null) entry.service = svc;
      entry.scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter((s) => s !== '');
      let username: string | undefined;
      if (entry.auth === 'basic') {
        const decoded = Buffer.from(authz?.slice(6).trim() ?? '', 'base64').toString('utf8');
        const colon = decoded.indexOf(':');
        const name = colon < 0 ? decoded : decoded.slice(0, colon);
        entry.username = name;
        if (colon < 0 || users.get(name)?.password !== decoded.slice(colon + 1)) {
          return reply(401, { errors: [{ code: 'UNAUTHORIZED', message: 'invalid username or password' }] }, { 'WWW-Authenticate': `Basic realm="${issuer}"` });
        }
        username = name;
      }
      if (svc !== null && svc !== service) return reply(400, { errors: [{ code: 'DENIED', message: `unknown service ${svc}` }] });
      const wanted = entry.scopes.map(parseScope).filter((s): s is ResourceAccess => s !== undefined);
      entry.granted = grant(rulesFor(username), wanted);
      const token = mint(entry.granted, username === undefined ? {} : { subject: username });
      const body: Record<string, string | number> = { expires_in: expiresIn, issued_at: new Date().toISOString() };
      if (tokenFields !== 'access_token') body.token = token;
      if (tokenFields !== 'token') body.access_token = token;
      if (username !== undefined && url.searchParams.get('offline_token') === 'true') body.refresh_token = issueRefreshToken(username);
      return reply(200, body);
    }

    if (req.method === 'POST') {
      if (options.oauth === false) return reply(404, { error: 'not_found' });
      const form = new URLSearchParams(await readBody(req));
      entry.form = Object.fromEntries([...form].map(([k, v]) => [k, k === 'password' || k === 'refresh_token' ? '<redacted>' : v]));
      const svc = form.get('service');
      if (svc !== null) entry.service = svc;
      entry.scopes = form.getAll('scope').flatMap((s) => s.split(' ')).filter((s) => s !== '');
      const grantType = form.get('grant_type');
      let username: string | undefined;
      if (grantType === 'password') {
        entry.auth = 'password-grant';
        const name = form.get('username') ?? '';
        entry.username = name;
        const user = users.get(name);
        if (!user || user.password !== form.get('password')) return reply(400, { error: 'invalid_grant', error_description: 'invalid username or password' });
        username = name;
      } else if (grantType === 'refresh_token') {
        entry.auth = 'refresh-grant';
        username = refreshTokens.get(form.get('refresh_token') ?? '');
        if (username === undefined) return reply(400, { error: 'invalid_grant', error_description: 'unknown refresh token' });
        entry.username = username;
      } else {
        return reply(400, { error: 'unsupported_grant_type' });
      }
      if (svc !== null && svc !== service) return reply(400, { error: 'invalid_request', error_description: `unknown service ${svc}` });
      const wanted = entry.scopes.map(parseScope).filter((s): s is ResourceAccess => s !== undefined);
      entry.granted = grant(rulesFor(username), wanted);
      const body: Record<string, string | number> = {
        access_token: mint(entry.granted, { subject: username }),
        scope: entry.granted.map((g) => `${g.type}:${g.name}:${g.actions.join(',')}`).join(' '),
        expires_in: expiresIn,
        issued_at: new Date().toISOString(),
      };
      if (form.get('access_type') === 'offline') {
        body.refresh_token = grantType === 'refresh_token' ? form.get('refresh_token') ?? '' : issueRefreshToken(username);
      }
      return reply(200, body);
    }

    return reply(405, { error: 'method_not_allowed' }, { Allow: 'GET, POST' });
  };

  const { server, port } = await listenOnFreePort(handle);
  const url = `http://127.0.0.1:${port}`;

  return {
    url,
    realm: `${url}/token`,
    service,
    issuer,
    algorithm,
    certificatePem: identity.certPem,
    requests,
    issueRefreshToken,
    mintToken: mint,
    close: () =>
      new Promise<void>((ok, fail) => {
        server.close((err) => (err ? fail(err) : ok()));
        server.closeAllConnections();
      }),
  };
}

/** The claims of a JWT, unverified (for tests that look at what was granted). */
export function decodeJwtClaims(token: string): Record<string, unknown> {
  const part = token.split('.')[1];
  if (part === undefined) throw new Error('not a JWT');
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>;
}
