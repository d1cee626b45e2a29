/**
 * Which registries are plain HTTP and which are blocked, from the files podman and
 * docker users already keep:
 *
 * - containers-registries.conf(5): `$CONTAINERS_REGISTRIES_CONF` when set, else
 *   `~/.config/containers/registries.conf` when it exists, else
 *   `/etc/containers/registries.conf`; then the drop-ins `registries.conf.d/*.conf`
 *   beside it, in name order, later ones overriding earlier ones for the same
 *   location. Version 2 `[[registry]]` tables (`location` or `prefix`, `insecure`,
 *   `blocked`; a location with a namespace, `host/team`, is left out: ocibuild chooses
 *   HTTP or HTTPS per registry) and the version 1 `[registries.insecure]` and
 *   `[registries.block]` lists.
 * - docker's `/etc/docker/daemon.json`: `insecure-registries` (hosts, `host:port`, and
 *   IPv4 CIDR ranges).
 *
 * "insecure" means plain HTTP here (containers/image also accepts unverified TLS
 * under it; ocibuild verifies every certificate it is shown). Mirrors, aliases and
 * short-name search are not read. A file that does not parse is an error naming it.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { OcibuildError } from '../errors.js';

export interface RegistryPolicy {
  /** Patterns (`host[:port]`, `*.domain`, IPv4 CIDR) of registries spoken to over plain HTTP. */
  insecure: string[];
  /** Patterns of registries never to talk to. */
  blocked: string[];
  /** The files read, for messages. */
  sources: string[];
}

export interface PolicyFiles {
  env?: NodeJS.ProcessEnv;
  /** Default /etc/containers/registries.conf. */
  systemConf?: string;
  /** Default /etc/docker/daemon.json. */
  daemonJson?: string;
}

type Toml = Record<string, unknown>;

export async function loadRegistryPolicy(files: PolicyFiles = {}): Promise<RegistryPolicy> {
  const env = files.env ?? process.env;
  const policy: RegistryPolicy = { insecure: [], blocked: [], sources: [] };
  const conf = registriesConfPath(env, files.systemConf ?? '/etc/containers/registries.conf');
  // Per location, the last file to mention it wins (drop-ins override the main file).
  const byLocation = new Map<string, { insecure?: boolean; blocked?: boolean }>();
  const confFiles = conf ? [conf, ...dropIns(`${conf}.d`)] : [];
  for (const file of confFiles) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    // Most files only set aliases or search registries: not parsed (the TOML parser
    // is loaded only for a file that can say something read here).
    if (!/^\s*(insecure|blocked|\[registries\.(insecure|block)\])/m.test(text)) continue;
    const doc = await parseToml(file, text);
    policy.sources.push(file);
    for (const entry of registryTables(doc, file)) {
      const prev = byLocation.get(entry.location) ?? {};
      byLocation.set(entry.location, { ...prev, ...entry.settings });
    }
  }
  for (const [location, s] of byLocation) {
    if (s.insecure) policy.insecure.push(location);
    if (s.blocked) policy.blocked.push(location);
  }
  const daemon = files.daemonJson ?? '/etc/docker/daemon.json';
  if (existsSync(daemon)) {
    let doc: unknown;
    try {
      doc = JSON.parse(readFileSync(daemon, 'utf8'));
    } catch (err) {
      throw new OcibuildError(`cannot read ${daemon}: ${(err as Error).message}`, { where: daemon, hint: 'fix the JSON, or move the file away' });
    }
    const list = (doc as { 'insecure-registries'?: unknown } | null)?.['insecure-registries'];
    if (Array.isArray(list)) policy.insecure.push(...list.filter((x): x is string => typeof x === 'string'));
    policy.sources.push(daemon);
  }
  return policy;
}

function registriesConfPath(env: NodeJS.ProcessEnv, system: string): string | undefined {
  if (env.CONTAINERS_REGISTRIES_CONF) return env.CONTAINERS_REGISTRIES_CONF;
  const config = env.XDG_CONFIG_HOME || path.join(env.HOME || homedir(), '.config');
  const user = path.join(config, 'containers/registries.conf');
  return existsSync(user) ? user : system;
}

function dropIns(dir: string): string[] {
  try {
    return readdirSync(dir)
      .filter((n) => n.endsWith('.conf'))
      .sort()
      .map((n) => path.join(dir, n));
  } catch {
    return [];
  }
}

async function parseToml(file: string, text: string): Promise<Toml> {
  const { parse } = await import('smol-toml');
  try {
    return parse(text);
  } catch (err) {
    const e = err as { message: string; line?: number };
    throw new OcibuildError(`cannot read ${file}: ${e.message.split('\n')[0]}`, { where: e.line ? `${file}:${e.line}` : file, hint: 'fix the TOML (containers-registries.conf(5)), or move the file away' });
  }
}

function registryTables(doc: Toml, file: string): Array<{ location: string; settings: { insecure?: boolean; blocked?: boolean } }> {
  const out: Array<{ location: string; settings: { insecure?: boolean; blocked?: boolean } }> = [];
  const tables = doc.registry;
  if (Array.isArray(tables)) {
    for (const t of tables as Array<Record<string, unknown>>) {
      const location = typeof t.prefix === 'string' && t.prefix !== '' ? t.prefix : t.location;
      if (typeof location !== 'string' || location === '') continue;
      // Namespaced entries (host/team/…) describe repositories, not registries.
      if (location.includes('/')) continue;
      const settings: { insecure?: boolean; blocked?: boolean } = {};
      if (typeof t.insecure === 'boolean') settings.insecure = t.insecure;
      if (typeof t.blocked === 'boolean') settings.blocked = t.blocked;
      out.push({ location: location.toLowerCase(), settings });
    }
  } else if (tables !== undefined) {
    throw new OcibuildError(`${file}: "registry" must be a list of [[registry]] tables`, { where: file });
  }
  // Version 1: [registries.insecure] registries = [...], [registries.block] registries = [...].
  const v1 = doc.registries as Record<string, { registries?: unknown }> | undefined;
  if (v1 && typeof v1 === 'object') {
    for (const [kind, key] of [['insecure', 'insecure'], ['block', 'blocked']] as const) {
      const list = v1[kind]?.registries;
      if (Array.isArray(list)) for (const r of list) if (typeof r === 'string' && r !== '') out.push({ location: r.toLowerCase(), settings: { [key]: true } });
    }
  }
  return out;
}
