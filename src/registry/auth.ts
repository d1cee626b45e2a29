/**
 * Registry authentication (distribution's token spec, as docker does it): one
 * `GET /v2/` ping learns the scheme from `WWW-Authenticate`; Basic sends the
 * credentials on every request; Bearer trades them at the challenge's realm for a
 * token per scope set (cached until it expires), by GET with Basic credentials or,
 * with an identity token, by the OAuth2 refresh grant (POST). A 401 with
 * `error="insufficient_scope"` widens the scopes once.
 */
import type { Readable } from 'node:stream';
import { OcibuildError } from '../errors.js';
import { insufficientScope, parseWwwAuthenticate, type Challenge } from './challenge.js';
import { basicAuthHeader, findCredential, type Credential, type CredentialSourceOptions } from './credentials.js';
import { isInsecureByDefault } from './reference.js';
import type { Method, RegistryResponse } from './transport.js';
import { TransientStatusError } from './transient.js';

export interface AuthOptions {
  /** Credentials given on the command line; `null` forces anonymous access. */
  credential?: Credential | null;
  /**
   * The registries `credential` is for (the command's own target); any other registry
   * the command talks to (a base image's, say) gets its config-file credentials, never
   * these. Without it, `credential` goes to every registry (API callers that make one
   * transport per registry).
   */
  credentialRegistries?: readonly string[];
  /** Where config-file credentials are looked up (tests point this at temp dirs). */
  credentialOptions?: CredentialSourceOptions;
  log?: (line: string) => void;
}

type Send = (
  url: string,
  init: { method: Method; headers: Record<string, string>; body?: Buffer | Readable | string | undefined },
) => Promise<RegistryResponse>;

interface Bearer {
  realm: string;
  service: string | undefined;
}

/** Tokens are renewed this long before the expiry the token server announced. */
const EXPIRY_MARGIN_MS = 10_000;
/** distribution's token spec: a token without expires_in lives 60 s. */
const DEFAULT_TOKEN_SECONDS = 60;

export class RegistryAuth {
  private pinged: Promise<void> | undefined;
  private scheme: 'none' | 'basic' | 'bearer' = 'none';
  private bearer: Bearer | undefined;
  private readonly tokens = new Map<string, { header: string; expires: number }>();
  /** Config-file lookups by repository (auth.json may hold keys per namespace). */
  private readonly credentialLookups = new Map<string, Promise<{ credential: Credential; source: string } | undefined>>();

  constructor(
    private readonly registry: string,
    private readonly baseUrl: string,
    private readonly opts: AuthOptions & { send: Send },
  ) {}

  /** `GET /v2/` once per registry (again after a failed attempt). */
  ping(): Promise<void> {
    this.pinged ??= this.doPing().catch((err: unknown) => {
      this.pinged = undefined;
      throw err;
    });
    return this.pinged;
  }

  private async doPing(): Promise<void> {
    const url = new URL('/v2/', this.baseUrl).toString();
    const res = await this.opts.send(url, { method: 'GET', headers: { 'user-agent': 'ocibuild' } });
    // Go's TLS servers answer plain HTTP with 400 "Client sent an HTTP request to an HTTPS server".
    const said = res.status === 400 ? await res.body.text().catch(() => '') : '';
    await res.body.dump().catch(() => undefined);
    if (url.startsWith('http:') && /HTTPS server|plain HTTP request was sent to HTTPS/i.test(said)) {
      throw new OcibuildError(`${this.registry} speaks HTTPS, and ocibuild talked plain HTTP to it (a loopback registry is plain HTTP unless TLS is configured for it)`, {
        where: url,
        hint: `put the registry's CA certificate in /etc/containers/certs.d/${this.registry}/ca.crt (or ~/.config/containers/certs.d/${this.registry}/), or pass --cert-dir DIR`,
      });
    }
    if (res.status === 401) {
      this.learn(parseWwwAuthenticate(res.headers['www-authenticate'] ?? []), url);
      return;
    }
    if (res.status >= 200 && res.status < 300) return;
    if (res.status >= 500 || res.status === 429 || res.status === 408) {
      // Let the transport's retry loop see it as transient.
      throw new TransientStatusError(`registry ping: HTTP ${res.status}`, res.status);
    }
    throw new OcibuildError(`${this.registry} does not answer as an OCI registry (GET /v2/: HTTP ${res.status})`, {
      where: url,
      hint: 'check the registry host and port',
    });
  }

  /** Takes the scheme from challenges: Bearer preferred (it scopes access), then Basic. */
  private learn(challenges: Challenge[], where: string): void {
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    if (bearer) {
      const realm = bearer.params.realm;
      if (!realm) {
        throw new OcibuildError('the registry asks for a Bearer token but names no realm', { where });
      }
      this.scheme = 'bearer';
      this.bearer = { realm, service: bearer.params.service };
      return;
    }
    if (challenges.some((c) => c.scheme === 'basic')) {
      this.scheme = 'basic';
      return;
    }
    const schemes = challenges.map((c) => c.scheme).join(', ') || 'none';
    throw new OcibuildError(`the registry asks for an authentication scheme ocibuild does not speak (${schemes})`, {
      where,
      hint: 'ocibuild supports Basic and Bearer (token) authentication',
    });
  }

  /** The Authorization header for a request needing `scopes`, or undefined (anonymous). */
  async header(scopes: readonly string[]): Promise<string | undefined> {
    if (this.scheme === 'none') return undefined;
    if (this.scheme === 'basic') {
      const found = await this.credential(scopes);
      if (!found) return undefined;
      if (found.credential.kind === 'basic') return basicAuthHeader(found.credential.username, found.credential.password);
      throw new OcibuildError(`${this.registry} wants Basic authentication, but the credentials from ${found.source} are an identity token`, {
        where: this.registry,
        hint: 'log in with a username and password',
      });
    }
    return this.token(scopes);
  }

  /**
   * After a 401: the scopes to try again with, or undefined when another attempt
   * would not help (the caller then reports the 401).
   */
  async onUnauthorized(raw: string | string[] | undefined, scopes: readonly string[], round: number): Promise<string[] | undefined> {
    const challenges = parseWwwAuthenticate(raw ?? []);
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    const wanted = bearer ? insufficientScope(bearer) : undefined;
    const previousScheme = this.scheme;
    if (challenges.length > 0) this.learn(challenges, this.registry);
    this.tokens.delete(scopeKey(scopes));
    if (wanted !== undefined) {
      const extra = wanted.split(' ').filter((s) => s !== '' && !scopes.includes(s));
      if (extra.length > 0) return [...scopes, ...extra];
    }
    // The ping was answered anonymously but this request was not (some registries
    // only protect repositories): one more try with what we just learned.
    if (round === 0 && previousScheme !== this.scheme) return [...scopes];
    // A cached token may have been revoked: one fresh token.
    if (round === 0 && this.scheme === 'bearer') return [...scopes];
    return undefined;
  }

  /** Where the credentials for `scopes` come from (for messages), or undefined when anonymous. */
  async credentialSource(scopes: readonly string[]): Promise<string | undefined> {
    if (this.scheme === 'none') return undefined;
    return (await this.credential(scopes))?.source;
  }

  /** The credentials for a request with `scopes`: the command line's, else the config files' for its repository. */
  private credential(scopes: readonly string[]): Promise<{ credential: Credential; source: string } | undefined> {
    if (this.opts.credential === null) return Promise.resolve(undefined);
    const forUs = this.opts.credentialRegistries === undefined || this.opts.credentialRegistries.includes(this.registry);
    if (this.opts.credential !== undefined && forUs) {
      return Promise.resolve({ credential: this.opts.credential, source: 'the command line' });
    }
    // The first scope is the repository the request is for (mount sources follow it).
    const repository = scopes.length > 0 ? /^repository:(.+):[^:]*$/.exec(scopes[0]!)?.[1] : undefined;
    let lookup = this.credentialLookups.get(repository ?? '');
    if (!lookup) {
      lookup = findCredential(this.registry, { ...this.opts.credentialOptions, ...(repository !== undefined ? { repository } : {}) });
      this.credentialLookups.set(repository ?? '', lookup);
    }
    return lookup;
  }

  private async token(scopes: readonly string[]): Promise<string | undefined> {
    const key = scopeKey(scopes);
    const cached = this.tokens.get(key);
    if (cached && cached.expires > Date.now()) return cached.header;
    const bearer = this.bearer;
    if (!bearer) return undefined;
    const found = await this.credential(scopes);
    const realm = new URL(bearer.realm);
    if (found && !this.mayReceiveCredentials(realm)) {
      throw new OcibuildError(`refusing to send credentials over plain HTTP to the token server ${realm.origin}`, {
        where: this.registry,
        hint: `list ${realm.host} with --insecure-registry if this is intended`,
      });
    }
    const res = found?.credential.kind === 'identity-token' ? await this.refreshGrant(realm, bearer, scopes, found.credential.token) : await this.tokenGet(realm, bearer, scopes, found?.credential);
    if (res.status !== 200) {
      const text = (await res.body.text().catch(() => '')).trim().slice(0, 200);
      const who = found ? `with the credentials from ${found.source}` : 'anonymously';
      throw new OcibuildError(`the token server refused access ${who} (HTTP ${res.status}${text ? `: ${text}` : ''})`, {
        where: `${realm.origin}${realm.pathname} for ${this.registry}`,
        hint: found
          ? 'check the credentials (docker login / podman login, or --username and --password-stdin)'
          : 'this registry needs credentials: docker login / podman login, or --username and --password-stdin',
      });
    }
    let doc: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      doc = (await res.body.json()) as typeof doc;
    } catch {
      throw new OcibuildError('the token server answered something that is not JSON', { where: realm.origin });
    }
    const token = typeof doc.token === 'string' && doc.token !== '' ? doc.token : typeof doc.access_token === 'string' ? doc.access_token : '';
    if (token === '') throw new OcibuildError('the token server answered without a token', { where: realm.origin });
    const seconds = typeof doc.expires_in === 'number' && doc.expires_in > 0 ? doc.expires_in : DEFAULT_TOKEN_SECONDS;
    const header = `Bearer ${token}`;
    this.tokens.set(key, { header, expires: Date.now() + seconds * 1000 - EXPIRY_MARGIN_MS });
    return header;
  }

  private tokenGet(realm: URL, bearer: Bearer, scopes: readonly string[], credential: Credential | undefined): Promise<RegistryResponse> {
    const url = new URL(realm);
    if (bearer.service !== undefined) url.searchParams.set('service', bearer.service);
    for (const s of scopes) url.searchParams.append('scope', s);
    const headers: Record<string, string> = { 'user-agent': 'ocibuild' };
    if (credential?.kind === 'basic') {
      headers.authorization = basicAuthHeader(credential.username, credential.password);
      // docker's "offline token" so that a refresh token comes back (not used further).
      url.searchParams.set('account', credential.username);
    }
    return this.opts.send(url.toString(), { method: 'GET', headers });
  }

  /** OAuth2 refresh grant with an identity token (docker login against Azure, Harbor…). */
  private refreshGrant(realm: URL, bearer: Bearer, scopes: readonly string[], refreshToken: string): Promise<RegistryResponse> {
    const form = new URLSearchParams();
    form.set('grant_type', 'refresh_token');
    form.set('refresh_token', refreshToken);
    form.set('client_id', 'ocibuild');
    if (bearer.service !== undefined) form.set('service', bearer.service);
    if (scopes.length > 0) form.set('scope', scopes.join(' '));
    return this.opts.send(realm.toString(), {
      method: 'POST',
      headers: { 'user-agent': 'ocibuild', 'content-type': 'application/x-www-form-urlencoded' },
      body: form.toString(),
    });
  }

  /** Credentials go to a token server over HTTPS, or over HTTP only on loopback / when the registry itself is plain HTTP. */
  private mayReceiveCredentials(realm: URL): boolean {
    if (realm.protocol === 'https:') return true;
    if (isInsecureByDefault(realm.host)) return true;
    return new URL(this.baseUrl).protocol === 'http:' && realm.hostname === new URL(this.baseUrl).hostname;
  }
}

function scopeKey(scopes: readonly string[]): string {
  return [...new Set(scopes)].sort().join(' ');
}
