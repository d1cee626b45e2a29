/**
 * Image references as docker and the distribution project read them:
 *
 *   reference := name [":" tag] ["@" digest]
 *   name      := [domain "/"] path-component ["/" path-component]*
 *   domain    := host [":" port]       host: DNS name, IPv4, or "[" IPv6 "]"
 *   path-component := [a-z0-9]+ ((["." | "_"] | "__" | "-"+) [a-z0-9]+)*
 *   tag       := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
 *   digest    := algorithm ":" hex
 *
 * plus docker's normalization: no domain means Docker Hub ("docker.io"), whose
 * one-component names live under "library/", and "index.docker.io" is Docker Hub.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { usageError, type OcibuildError } from '../errors.js';

export interface ImageReference {
  /** Normalized host[:port], lower-case; "docker.io" for Docker Hub. */
  registry: string;
  /** Path inside the registry; "library/ubuntu" for official Docker Hub images. */
  repository: string;
  tag?: string;
  digest?: string;
}

export const DOCKER_HUB = 'docker.io';
/** Where Docker Hub's registry API actually answers. */
export const DOCKER_HUB_API_HOST = 'registry-1.docker.io';
export const DEFAULT_TAG = 'latest';

// distribution/reference: NameTotalLengthMax, counted on the normalized name.
const MAX_NAME_LENGTH = 255;

const REFERENCE_HINT =
  'write a reference as [registry[:port]/]repository[:tag][@sha256:<64 hex digits>], ' +
  'e.g. "ubuntu:24.04", "ghcr.io/owner/app:1.2" or "localhost:5000/app@sha256:…"';

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN_NAME = /^[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*$/;
// Without the u flag \w is ASCII only, as in Go's regexp.
const TAG = /^\w[\w.-]{0,127}$/;
const DIGEST_ALGORITHM = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*$/;
// docker refuses a bare 64-hex name: it could be read as an image ID.
const IMAGE_ID = /^[a-f0-9]{64}$/;

/** Hex lengths of the algorithms go-digest (and so every registry) verifies. */
const DIGEST_HEX_LENGTH: Readonly<Record<string, number>> = { sha256: 64, sha384: 96, sha512: 128 };

/**
 * Parse a docker-style image reference. `where` names where the text came from
 * ("image.yaml:3:7", "--push") and ends up in the error.
 */
export function parseReference(text: string, where?: string): ImageReference {
  const fail = (problem: string, hint = REFERENCE_HINT): OcibuildError =>
    // JSON quoting, so that control characters show up escaped.
    usageError(`invalid image reference ${JSON.stringify(text)}: ${problem}`, where, hint);

  if (text === '') throw fail('it is empty');
  const bad = /[\s\x00-\x1f\x7f]/.exec(text);
  if (bad) throw fail(`it contains ${bad[0] === ' ' ? 'a space' : 'a control or whitespace character'}`);
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(text);
  if (scheme) {
    throw fail(`${scheme[1]}:// is a transport or URL prefix, not part of a reference`, `write it without the prefix, e.g. ${JSON.stringify(text.slice(scheme[0].length) || 'registry.example.com/app:1')}`);
  }
  if (IMAGE_ID.test(text)) {
    throw fail('a 64-hex-digit name looks like an image ID, not a repository',
      'to pin a digest write repository@sha256:<64 hex digits>, e.g. "ubuntu@sha256:…"');
  }

  let rest = text;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    const problem = digestProblem(digest);
    if (problem) throw fail(problem, 'a digest is sha256: followed by 64 lower-case hex digits, e.g. "ubuntu@sha256:<64 hex digits>"');
  }

  let tag: string | undefined;
  const colon = rest.indexOf(':', rest.lastIndexOf('/') + 1);
  if (colon >= 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (tag === '') throw fail('the tag after ":" is empty');
    if (!TAG.test(tag)) {
      throw fail(`invalid tag "${tag}": a tag is at most 128 letters, digits, "_", "." and "-", not starting with "." or "-"`);
    }
  }
  if (rest === '') throw fail('the repository name is missing');

  let registry = DOCKER_HUB;
  let domainText = '';
  let path = rest;
  const slash = rest.indexOf('/');
  if (slash >= 0) {
    const first = rest.slice(0, slash);
    // The first component is a registry when it looks like a host: it has "." or
    // ":" or is "localhost". (docker also takes an upper-case first component for a
    // host; "MyOrg/app" is far more often a mistyped Hub path, so it gets the
    // lower-case error below instead.)
    if (first.includes('.') || first.includes(':') || first === 'localhost') {
      const problem = domainProblem(first);
      if (problem) throw fail(`invalid registry "${first}": ${problem}`);
      registry = normalizeRegistry(first);
      domainText = `${first}/`;
      path = rest.slice(slash + 1);
    }
  }

  const components = path.split('/');
  for (const component of components) {
    if (component === '') {
      throw fail(path === '' ? 'the repository name is missing' : 'the repository has an empty path component ("//" or a "/" at an end)');
    }
    if (!PATH_COMPONENT.test(component)) {
      if (component !== component.toLowerCase() && PATH_COMPONENT.test(component.toLowerCase())) {
        const lower = `${domainText}${path.toLowerCase()}${text.slice(rest.length)}`;
        throw fail('the repository name must be lower-case', `write "${lower}"`);
      }
      throw fail(`invalid repository path component "${component}": use lower-case letters and digits, ` +
        'separated by ".", "_", "__" or dashes, neither first nor last');
    }
  }
  if (registry === DOCKER_HUB && components.length === 1) path = `library/${path}`;

  const name = `${registry}/${path}`;
  if (name.length > MAX_NAME_LENGTH) {
    throw fail(`the name "${name}" is ${name.length} characters long, more than the ${MAX_NAME_LENGTH} allowed`,
      'shorten the repository path');
  }

  const ref: ImageReference = { registry, repository: path };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  if (tag === undefined && digest === undefined) ref.tag = DEFAULT_TAG;
  return ref;
}

/** Why `digest` is not a digest a registry would accept, or undefined when it is one. */
export function digestProblem(digest: string): string | undefined {
  const colon = digest.indexOf(':');
  if (colon < 0) return `invalid digest "${digest}": expected algorithm:hex, e.g. sha256:<64 hex digits>`;
  const algorithm = digest.slice(0, colon);
  const hex = digest.slice(colon + 1);
  if (!DIGEST_ALGORITHM.test(algorithm)) return `invalid digest "${digest}": "${algorithm}" is not an algorithm name`;
  const length = DIGEST_HEX_LENGTH[algorithm];
  if (length === undefined) return `unsupported digest algorithm "${algorithm}" (sha256, sha384 and sha512 are)`;
  if (!/^[0-9a-fA-F]*$/.test(hex)) return `invalid digest "${digest}": the part after "${algorithm}:" must be hex digits`;
  if (hex.length !== length) return `invalid digest "${digest}": ${algorithm} takes ${length} hex digits, not ${hex.length}`;
  if (hex !== hex.toLowerCase()) return `invalid digest "${digest}": hex digits must be lower-case`;
  return undefined;
}

function domainProblem(domain: string): string | undefined {
  let host = domain;
  let port: string | undefined;
  if (domain.startsWith('[')) {
    const close = domain.indexOf(']');
    if (close < 0) return 'an IPv6 address needs a closing "]"';
    host = domain.slice(1, close);
    const after = domain.slice(close + 1);
    if (after !== '') {
      if (!after.startsWith(':')) return `unexpected "${after}" after the IPv6 address`;
      port = after.slice(1);
    }
    if (!isIPv6(host)) return `"${host}" is not an IPv6 address`;
  } else {
    const colon = domain.indexOf(':');
    if (colon >= 0) {
      host = domain.slice(0, colon);
      port = domain.slice(colon + 1);
    }
    if (host === '') return 'the host name is empty';
    if (!DOMAIN_NAME.test(host)) {
      return 'a host name is letters, digits and "-" in dot-separated labels (no "_", no "-" at a label\'s ends); ' +
        'an IPv6 address goes in brackets';
    }
  }
  if (port !== undefined) {
    if (!/^[0-9]+$/.test(port)) return `the port "${port}" is not a number`;
    const n = Number(port);
    if (n < 1 || n > 65535) return `the port ${port} is not between 1 and 65535`;
  }
  return undefined;
}

/**
 * A registry name as references and the options for it are compared: lower-case
 * host[:port], without a scheme or path, "index.docker.io" read as Docker Hub.
 * ("HTTPS://Index.Docker.io/v1/" → "docker.io", "localhost:5000/" → "localhost:5000")
 */
export function normalizeRegistry(registry: string): string {
  let host = registry.trim().replace(/^[a-z][a-z0-9+.-]*:\/\//i, '');
  const slash = host.indexOf('/');
  if (slash >= 0) host = host.slice(0, slash);
  host = host.toLowerCase();
  return host === 'index.docker.io' ? DOCKER_HUB : host;
}

/** The canonical text: "docker.io/library/ubuntu:latest", "ghcr.io/a/b:1@sha256:…". */
export function formatReference(r: ImageReference): string {
  return `${r.registry}/${r.repository}${suffix(r)}`;
}

/** The short form docker prints, for messages: "ubuntu:latest", "me/app:1", "ghcr.io/a/b:1". */
export function familiarName(r: ImageReference): string {
  if (r.registry !== DOCKER_HUB) return formatReference(r);
  const parts = r.repository.split('/');
  const repository = parts.length === 2 && parts[0] === 'library' ? parts[1]! : r.repository;
  return `${repository}${suffix(r)}`;
}

/** What to ask the registry's manifest endpoint for: the digest when pinned, else the tag. */
export function manifestReference(r: ImageReference): string {
  return r.digest ?? r.tag ?? DEFAULT_TAG;
}

function suffix(r: ImageReference): string {
  return `${r.tag === undefined ? '' : `:${r.tag}`}${r.digest === undefined ? '' : `@${r.digest}`}`;
}

/** The host[:port] whose /v2/ API serves `registry` ("docker.io" → "registry-1.docker.io"). */
export function apiHost(registry: string): string {
  const normalized = normalizeRegistry(registry);
  return normalized === DOCKER_HUB ? DOCKER_HUB_API_HOST : normalized;
}

/** Splits "host", "host:port", "[v6]", "[v6]:port" or a bare IPv6 address into its host. */
function hostOf(registry: string): string {
  const r = normalizeRegistry(registry);
  if (r.startsWith('[')) {
    const close = r.indexOf(']');
    return close < 0 ? r : r.slice(1, close);
  }
  if (maybeIPv6(r) && isIPv6(r)) return r;
  const colon = r.indexOf(':');
  return colon < 0 ? r : r.slice(0, colon);
}

/**
 * Loopback registries (localhost, 127.0.0.0/8, ::1, with or without a port) speak
 * plain HTTP, as docker's default insecure-registry list has it.
 */
/**
 * Whether `pattern` names `registry`: the same `host[:port]` (a scheme or path on the
 * pattern ignored), `*.domain` for any host below domain (any port), or an IPv4 CIDR
 * range (`10.0.0.0/8`, docker's daemon.json) holding an IPv4 host.
 */
export function matchesRegistry(pattern: string, registry: string): boolean {
  const p = pattern.trim().toLowerCase();
  const cidr = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(p);
  if (cidr) {
    const host = hostOf(registry);
    if (!isIPv4(host) || !isIPv4(cidr[1]!)) return false;
    const bits = Number(cidr[2]);
    if (bits > 32) return false;
    const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
    return ((ipv4Number(host) & mask) >>> 0) === ((ipv4Number(cidr[1]!) & mask) >>> 0);
  }
  if (p.startsWith('*.')) return hostOf(registry).endsWith(p.slice(1));
  return normalizeRegistry(p) === normalizeRegistry(registry);
}

function ipv4Number(ip: string): number {
  return ip.split('.').reduce((n, part) => ((n << 8) | Number(part)) >>> 0, 0);
}

export function isInsecureByDefault(registry: string): boolean {
  const host = hostOf(registry);
  if (host === 'localhost') return true;
  if (isIPv4(host)) return host.startsWith('127.');
  if (maybeIPv6(host) && isIPv6(host)) return new URL(`http://[${host}]/`).hostname === '[::1]';
  return false;
}

/**
 * An IPv6 address has at least two colons. Checked first because Node 20's isIPv6
 * is slow (a large regular expression: ~10 ms on its first call, ~2 ms after).
 */
function maybeIPv6(host: string): boolean {
  return host.indexOf(':') !== host.lastIndexOf(':');
}

/**
 * "http://127.0.0.1:5000", "https://ghcr.io", "https://registry-1.docker.io": plain
 * HTTP for loopback registries and for those listed in `insecureRegistries`
 * (compared after normalizeRegistry, so "http://host:5000/" lists "host:5000").
 */
export function registryBaseUrl(registry: string, insecureRegistries: readonly string[] = [], tlsConfigured = false): string {
  const normalized = normalizeRegistry(registry);
  // A loopback registry with TLS material configured for it (tls.ts) speaks HTTPS.
  const insecure = (isInsecureByDefault(normalized) && !tlsConfigured) || insecureRegistries.some((r) => matchesRegistry(r, normalized));
  return `${insecure ? 'http' : 'https'}://${apiHost(normalized)}`;
}
