/**
 * HTTP to one registry (distribution-spec), in thin layers: retries with jittered
 * backoff for connection errors, 408, 429 and 5xx (honouring Retry-After); redirects
 * followed by hand so that credentials never leave the registry's origin (blob GETs
 * are redirected to object storage by Docker Hub, ghcr.io, ECR…); and authentication
 * through `RegistryAuth` (ping, challenge, token). Callers get the final response and
 * decide what its status means.
 */
import type { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { OcibuildError } from '../errors.js';
import { request, type HttpSettings, type HttpTimeouts, type ResponseBody } from '../http/client.js';
import { RegistryAuth, type AuthOptions } from './auth.js';
import { matchesRegistry, registryBaseUrl } from './reference.js';
import { registryTls, tlsError } from './tls.js';
import { errorCode, isAbortError, isTransientError, TransientStatusError } from './transient.js';

export type Method = 'GET' | 'HEAD' | 'PUT' | 'POST' | 'PATCH' | 'DELETE';

export interface RegistryRequest {
  method: Method;
  /** A path below the registry's base URL (`/v2/...`) or an absolute URL (upload Locations). */
  url: string;
  headers?: Record<string, string>;
  /** Bytes, or a factory giving a fresh stream or chunk iterable for every attempt (replayable uploads). */
  body?: Buffer | (() => Readable | AsyncIterable<Uint8Array>);
  /** Token scopes this request needs, e.g. `repository:a/b:pull,push`. */
  scopes: readonly string[];
  /** Follow 3xx redirects (GET/HEAD of blobs and manifests). Default true for GET/HEAD. */
  followRedirects?: boolean;
  /**
   * The body can be sent once only (a slice of a stream): no retry of any kind here,
   * not even after a 401; the caller replays its whole sequence instead.
   */
  noRetry?: boolean;
}

export interface RegistryResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: ResponseBody;
  /** The URL that answered (after redirects). */
  url: string;
  /** On a final 401: where the credentials the registry refused came from (undefined: none were sent). */
  refusedCredentials?: string;
}

export interface TransportOptions extends AuthOptions {
  /** Hosts to speak plain HTTP to (besides localhost and 127.0.0.0/8, unless TLS is configured for them). */
  insecureRegistries?: readonly string[];
  /** Like skopeo's --cert-dir: CA certificates and a client certificate for every registry (default: certs.d, see tls.ts). */
  certDir?: string;
  /** Registries never to talk to (patterns as matchesRegistry takes), and the files that said so. */
  blocked?: { patterns: readonly string[]; sources: readonly string[] };
  /** Retries after the first attempt (default 5). */
  retries?: number;
  /** Base of the exponential backoff in ms (default 200); tests make it small. */
  backoffMs?: number;
  signal?: AbortSignal;
  log?: (line: string) => void;
  /** Timeouts (defaults: REGISTRY_TIMEOUTS) and extra CAs for the HTTP client. */
  http?: HttpSettings;
}

const MAX_REDIRECTS = 5;
/** Retry lines logged per registry; later retries happen silently. */
const MAX_RETRY_LINES = 4;
const RETRY_STATUS = new Set([408, 429, 500, 502, 503, 504]);

/** Registry timeouts: a large PATCH or PUT may wait long for its answer while the registry stores it. */
export const REGISTRY_TIMEOUTS: Readonly<HttpTimeouts> = { connectMs: 15_000, headersMs: 60_000, idleMs: 120_000 };

export class RegistryTransport {
  readonly registry: string;
  readonly baseUrl: string;
  readonly auth: RegistryAuth;
  private readonly retries: number;
  private readonly backoffMs: number;
  private readonly http: HttpSettings;
  private retriesLogged = 0;

  constructor(
    registry: string,
    private readonly opts: TransportOptions = {},
  ) {
    this.registry = registry;
    if (opts.blocked?.patterns.some((p) => matchesRegistry(p, registry))) {
      throw new OcibuildError(`the registry ${registry} is blocked by the registries configuration`, {
        where: opts.blocked.sources.join(', ') || undefined,
        hint: 'remove its blocked = true (or its [registries.block] entry) if it should be used',
      });
    }
    const tls = registryTls(registry, opts.certDir !== undefined ? { certDir: opts.certDir } : {});
    this.baseUrl = registryBaseUrl(registry, opts.insecureRegistries ?? [], tls !== undefined);
    this.retries = opts.retries ?? 5;
    this.backoffMs = opts.backoffMs ?? 200;
    this.http = {
      ...opts.http,
      ...(tls?.ca ? { ca: tls.ca } : {}),
      ...(tls?.cert && tls.key ? { cert: tls.cert, key: tls.key } : {}),
      timeouts: { ...REGISTRY_TIMEOUTS, ...opts.http?.timeouts },
    };
    this.auth = new RegistryAuth(registry, this.baseUrl, {
      ...opts,
      send: (url, init) => this.send(url, init),
    });
  }

  /** Absolute URL for a path or a (possibly relative) Location. */
  resolve(url: string): string {
    return new URL(url, this.baseUrl).toString();
  }

  /**
   * Sends `req` with authentication, retrying transient failures when the body can
   * be replayed. Every response is returned as is (the caller reads or dumps the
   * body), except 401s the auth layer could answer.
   */
  async request(req: RegistryRequest): Promise<RegistryResponse> {
    const replayable = req.body === undefined || Buffer.isBuffer(req.body) || typeof req.body === 'function';
    for (let attempt = 0; ; attempt++) {
      this.opts.signal?.throwIfAborted();
      let res: RegistryResponse;
      try {
        res = await this.authorizedOnce(req);
      } catch (err) {
        if (req.noRetry) throw tlsError(err, this.registry, this.resolve(req.url)) ?? err;
        if (!isTransientError(err) || !replayable || attempt >= this.retries) throw tlsError(err, this.registry, this.resolve(req.url)) ?? asNetworkError(err, this.resolve(req.url));
        await this.backoff(attempt, undefined, `${req.method} ${this.resolve(req.url)}: ${describe(err)}`);
        continue;
      }
      if (RETRY_STATUS.has(res.status) && !req.noRetry && replayable && attempt < this.retries) {
        const retryAfter = headerValue(res.headers['retry-after']);
        await res.body.dump().catch(() => undefined);
        await this.backoff(attempt, retryAfter, `${req.method} ${res.url}: HTTP ${res.status}`);
        continue;
      }
      return res;
    }
  }

  /** One attempt: credentials for the scopes, and one re-try after a 401 challenge. */
  private async authorizedOnce(req: RegistryRequest): Promise<RegistryResponse> {
    await this.auth.ping();
    let scopes = [...req.scopes];
    for (let round = 0; ; round++) {
      const authorization = await this.auth.header(scopes);
      const res = await this.follow(req, authorization);
      if (res.status !== 401) return res;
      const again = round >= 2 ? undefined : await this.auth.onUnauthorized(res.headers['www-authenticate'], scopes, round);
      if (!again) {
        const source = await this.auth.credentialSource(scopes);
        return source !== undefined ? { ...res, refusedCredentials: source } : res;
      }
      if (req.noRetry) {
        // A token expired in the middle of a sequence: start it over with a fresh one.
        await res.body.dump().catch(() => undefined);
        throw new TransientStatusError(`${req.method}: HTTP 401, token renewed`, 401);
      }
      await res.body.dump().catch(() => undefined);
      scopes = again;
    }
  }

  /** Sends, following redirects; Authorization only goes to the registry's own origin. */
  private async follow(req: RegistryRequest, authorization: string | undefined): Promise<RegistryResponse> {
    const origin = new URL(this.baseUrl).origin;
    let url = this.resolve(req.url);
    const follow = req.followRedirects ?? (req.method === 'GET' || req.method === 'HEAD');
    for (let hops = 0; ; hops++) {
      const headers: Record<string, string> = { 'user-agent': 'ocibuild', ...(req.headers ?? {}) };
      if (authorization && new URL(url).origin === origin) headers.authorization = authorization;
      const body = req.body === undefined ? undefined : Buffer.isBuffer(req.body) ? req.body : req.body();
      const res = await this.send(url, { method: req.method, headers, body });
      const location = headerValue(res.headers.location);
      if (follow && [301, 302, 303, 307, 308].includes(res.status) && location && hops < MAX_REDIRECTS) {
        await res.body.dump().catch(() => undefined);
        url = new URL(location, url).toString();
        continue;
      }
      return res;
    }
  }

  /** The raw HTTP exchange (also used by the auth layer for pings and token requests). */
  async send(
    url: string,
    init: { method: Method; headers: Record<string, string>; body?: Buffer | Readable | AsyncIterable<Uint8Array> | string | undefined },
  ): Promise<RegistryResponse> {
    const res = await request(url, {
      ...this.http,
      method: init.method,
      headers: init.headers,
      ...(init.body !== undefined ? { body: init.body } : {}),
      ...(this.opts.signal ? { signal: this.opts.signal } : {}),
    });
    return { status: res.statusCode, headers: res.headers, body: res.body, url };
  }

  private async backoff(attempt: number, retryAfter: string | undefined, why: string): Promise<void> {
    let wait = Math.round(this.backoffMs * 2 ** attempt * (0.5 + Math.random() / 2));
    const seconds = retryAfter !== undefined && /^\d+$/.test(retryAfter) ? Number(retryAfter) : undefined;
    // Retry-After is honoured up to a minute; a longer one is a registry asking us to give up.
    if (seconds !== undefined) wait = Math.max(wait, Math.min(seconds, 60) * 1000);
    // Parallel blob requests to a registry that is down all retry: the first few say why.
    this.retriesLogged++;
    if (this.retriesLogged <= MAX_RETRY_LINES) this.opts.log?.(`retrying in ${wait} ms: ${why}`);
    else if (this.retriesLogged === MAX_RETRY_LINES + 1) this.opts.log?.(`(more retries to ${this.registry} are not shown)`);
    await delay(wait, undefined, this.opts.signal ? { signal: this.opts.signal } : {});
  }
}

export function headerValue(raw: string | string[] | undefined): string | undefined {
  return Array.isArray(raw) ? raw[0] : raw;
}

function describe(err: unknown): string {
  return errorCode(err) ?? (err instanceof Error ? err.message : String(err));
}

function asNetworkError(err: unknown, url: string): unknown {
  if (err instanceof OcibuildError || isAbortError(err)) return err;
  if (errorCode(err) === 'ENOTFOUND') {
    return new OcibuildError(`cannot resolve the registry's host name ${new URL(url).hostname} (ENOTFOUND)`, {
      where: url,
      hint: 'check the registry name in the reference (a first component with a dot or a port, or localhost, names a registry; otherwise it is a Docker Hub repository)',
      cause: err,
    });
  }
  if (!isTransientError(err)) return err;
  return new OcibuildError(`cannot reach the registry (${describe(err)})`, {
    where: url,
    hint: 'check that the registry is up and the host and port are right; plain-HTTP registries other than localhost need --insecure-registry HOST',
    cause: err,
  });
}

/**
 * The registry's error body (distribution-spec "Error Codes": `{"errors":[{code,
 * message, detail}]}`) as one line, or the status text.
 */
export async function registryErrorText(res: RegistryResponse): Promise<string> {
  let text = '';
  try {
    // A body already read (or dumped) has nothing left to say.
    if (!res.body.bodyUsed && !res.body.destroyed) text = await res.body.text();
  } catch {
    // The body is only decoration for the message.
  }
  try {
    const doc = JSON.parse(text) as { errors?: Array<{ code?: unknown; message?: unknown }> };
    if (Array.isArray(doc.errors) && doc.errors.length > 0) {
      return doc.errors
        .map((e) => [e.code, e.message].filter((x) => typeof x === 'string' && x !== '').join(': '))
        .filter((s) => s !== '')
        .join('; ');
    }
  } catch {
    // Not JSON: fall through.
  }
  const line = text.trim().split('\n')[0] ?? '';
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}

/** An OcibuildError for an unexpected registry answer, with a hint per status. */
export async function unexpectedResponse(res: RegistryResponse, what: string): Promise<OcibuildError> {
  const detail = await registryErrorText(res);
  if (res.status === 401 && res.refusedCredentials !== undefined) {
    return new OcibuildError(`${what}: HTTP 401: the registry refused the credentials from ${res.refusedCredentials}${detail ? ` (${detail})` : ''}`, {
      where: res.url,
      hint: 'check the user name and password or token (log in again with docker login / podman login, or pass the right --username and --password-stdin)',
    });
  }
  const hint =
    res.status === 401
      ? 'log in (docker login / podman login write credentials ocibuild reads) or pass --username and --password-stdin'
      : res.status === 403
        ? 'the credentials lack permission for this repository'
        : res.status === 404
          ? 'check the repository name and tag'
          : res.status === 429
            ? 'the registry rate-limits requests; retry later or log in'
            : undefined;
  return new OcibuildError(`${what}: HTTP ${res.status}${detail ? ` (${detail})` : ''}`, {
    where: res.url,
    ...(hint ? { hint } : {}),
  });
}

