/**
 * TLS material for one registry, found where docker and podman keep it: a directory
 * per registry, `certs.d/HOST[:PORT]/`, holding CA certificates (`*.crt`) and a client
 * certificate pair (`NAME.cert` with `NAME.key`) for registries that ask for one.
 * The directory is `--cert-dir DIR` when given (for every registry of the command, as
 * skopeo's option), else the first that exists of
 * `$XDG_CONFIG_HOME/containers/certs.d/HOST` (default `~/.config/…`),
 * `/etc/containers/certs.d/HOST` and `/etc/docker/certs.d/HOST`
 * (containers-certs.d(5)).
 *
 * Such a directory is also how a user says that a loopback registry speaks TLS:
 * `localhost` and `127.0.0.0/8` are plain HTTP unless TLS material is configured for
 * them (reference.ts). CA certificates are trusted on top of Node's own roots and
 * NODE_EXTRA_CA_CERTS, not instead of them.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { rootCertificates } from 'node:tls';
import { OcibuildError } from '../errors.js';
import { errorCode } from './transient.js';
import { normalizeRegistry } from './reference.js';

export interface RegistryTls {
  /** Where it came from (for messages). */
  dir: string;
  /** Every CA to trust: Node's roots, NODE_EXTRA_CA_CERTS and the directory's `*.crt`; undefined when it has none. */
  ca?: Array<string | Buffer>;
  cert?: Buffer;
  key?: Buffer;
}

export function certsDirs(registry: string, env: NodeJS.ProcessEnv = process.env): string[] {
  const host = normalizeRegistry(registry);
  const config = env.XDG_CONFIG_HOME || path.join(env.HOME || homedir(), '.config');
  return [path.join(config, 'containers/certs.d', host), path.join('/etc/containers/certs.d', host), path.join('/etc/docker/certs.d', host)];
}

/** The registry's TLS material, or undefined when no directory is configured for it. */
export function registryTls(registry: string, opts: { certDir?: string; env?: NodeJS.ProcessEnv } = {}): RegistryTls | undefined {
  const env = opts.env ?? process.env;
  let dir: string | undefined;
  if (opts.certDir !== undefined) {
    if (!isDir(opts.certDir)) throw new OcibuildError(`--cert-dir ${opts.certDir} is not a directory`, { hint: 'give a directory holding ca.crt (and client.cert/client.key when the registry asks for a client certificate)' });
    dir = opts.certDir;
  } else {
    dir = certsDirs(registry, env).find(isDir);
  }
  if (dir === undefined) return undefined;
  const names = readdirSync(dir).sort();
  const read = (name: string): Buffer => {
    try {
      return readFileSync(path.join(dir, name));
    } catch (err) {
      throw new OcibuildError(`cannot read ${path.join(dir, name)}: ${(err as Error).message}`, { where: dir, cause: err });
    }
  };
  const out: RegistryTls = { dir };
  const cas = names.filter((n) => n.endsWith('.crt')).map(read);
  if (cas.length > 0) {
    const extra = env.NODE_EXTRA_CA_CERTS && existsSync(env.NODE_EXTRA_CA_CERTS) ? [readFileSync(env.NODE_EXTRA_CA_CERTS)] : [];
    out.ca = [...rootCertificates, ...extra, ...cas];
  }
  const certName = names.find((n) => n.endsWith('.cert'));
  if (certName) {
    const keyName = `${certName.slice(0, -'.cert'.length)}.key`;
    if (!names.includes(keyName)) {
      throw new OcibuildError(`${path.join(dir, certName)} has no matching ${keyName}`, { where: dir, hint: 'a client certificate NAME.cert needs its private key NAME.key beside it' });
    }
    out.cert = read(certName);
    out.key = read(keyName);
  }
  return out;
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

const UNTRUSTED = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
]);

/**
 * A TLS failure talking to `registry` as a user-facing error (what, where, what to do),
 * or undefined when `err` is not one.
 */
export function tlsError(err: unknown, registry: string, url: string): OcibuildError | undefined {
  const code = errorCode(err);
  const message = err instanceof Error ? err.message : String(err);
  const host = normalizeRegistry(registry);
  const trust = `put the registry's CA certificate in ${certsDirs(registry)[1]}/ca.crt (or ~/.config/containers/certs.d/${host}/, /etc/docker/certs.d/${host}/), or pass --cert-dir DIR`;
  let what: string | undefined;
  let hint: string | undefined;
  if (code !== undefined && UNTRUSTED.has(code)) {
    what = `its certificate is not signed by a CA this machine trusts (${code})`;
    hint = `${trust}; for a registry without TLS, --insecure-registry ${host}`;
  } else if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') {
    what = `its certificate is ${code === 'CERT_HAS_EXPIRED' ? 'expired' : 'not valid yet'} (${code})`;
    hint = "renew the registry's certificate, or check this machine's clock";
  } else if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    what = `its certificate is for other names (${message})`;
    hint = `use the name the certificate is for, or give the registry a certificate for ${host}`;
  } else if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || (code === 'EPROTO' && /wrong version number|packet length too long/i.test(message))) {
    what = 'it does not speak TLS on this port';
    hint = `for a plain-HTTP registry, --insecure-registry ${host}`;
  } else if (code === 'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE' || code === 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED' || code === 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA') {
    what = `it refused this client's certificate, or the lack of one (${code})`;
    hint = `put a client certificate NAME.cert and its key NAME.key the registry accepts in ${certsDirs(registry)[1]}/ (or pass --cert-dir DIR)`;
  } else if (code !== undefined && /^(ERR_SSL_|ERR_TLS_|CERT_)/.test(code)) {
    // OpenSSL's messages carry file names and line numbers: the code says enough.
    what = `TLS failed (${code})`;
    hint = trust;
  }
  if (what === undefined) return undefined;
  return new OcibuildError(`cannot talk TLS to the registry ${host}: ${what}`, { where: url, hint, cause: err });
}
