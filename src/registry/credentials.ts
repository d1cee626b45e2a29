/**
 * Registry credentials where docker and podman keep them, read the way they read
 * them, so that `docker login` or `podman login` is all a user has to do.
 *
 * Files, first match wins (podman's order, then docker's):
 *   $REGISTRY_AUTH_FILE, or else ${XDG_RUNTIME_DIR}/containers/auth.json and
 *   ${XDG_CONFIG_HOME:-~/.config}/containers/auth.json (podman skips both when
 *   REGISTRY_AUTH_FILE is set); then $DOCKER_CONFIG/config.json, or else
 *   ~/.docker/config.json.
 * In each file: `credHelpers` naming this registry (that helper alone answers for
 * the file), else an `auths` entry, else `credsStore`.
 */
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import path from 'node:path';
import { OcibuildError } from '../errors.js';
import { DOCKER_HUB, normalizeRegistry } from './reference.js';

export type Credential =
  | { kind: 'basic'; username: string; password: string }
  | { kind: 'identity-token'; username?: string; token: string };

export interface CredentialSourceOptions {
  /** Environment to read the variables above from and to run helpers in (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Home directory for ~ (default os.homedir()). */
  homeDir?: string;
  /** Runs `docker-credential-<helper> get` and returns its stdout, undefined when it has no credentials. */
  runHelper?: (helper: string, serverUrl: string) => Promise<string | undefined>;
  /** The repository being accessed: podman's auth.json may hold keys per namespace ("quay.io/org"). */
  repository?: string;
}

export interface FoundCredential {
  credential: Credential;
  /** Where it came from, for messages: "~/.docker/config.json (auths)". Never the secret. */
  source: string;
}

/** The server URL docker stores Docker Hub credentials under and passes to helpers. */
export const DOCKER_HUB_SERVER_URL = 'https://index.docker.io/v1/';

const HUB_ALIASES = new Set([DOCKER_HUB, 'index.docker.io', 'registry-1.docker.io']);

/** docker-credential-helpers' "not found" error text (credentials.errCredentialsNotFoundMessage). */
const NOT_FOUND = /credentials not found/i;

const DEFAULT_HELPER_TIMEOUT_MS = 60_000;
const MAX_HELPER_OUTPUT = 1 << 20;

interface AuthFile {
  path: string;
  /** The path as shown to people, "~/…" under the home directory. */
  display: string;
}

/** Every file findCredential looks in, in order (for "no credentials found" hints). */
export function credentialFiles(opts: CredentialSourceOptions = {}): AuthFile[] {
  const env = opts.env ?? process.env;
  const home = opts.homeDir ?? homedir();
  const files: string[] = [];
  if (env.REGISTRY_AUTH_FILE) {
    files.push(env.REGISTRY_AUTH_FILE);
  } else {
    if (env.XDG_RUNTIME_DIR) files.push(path.join(env.XDG_RUNTIME_DIR, 'containers', 'auth.json'));
    files.push(path.join(env.XDG_CONFIG_HOME || path.join(home, '.config'), 'containers', 'auth.json'));
  }
  files.push(env.DOCKER_CONFIG ? path.join(env.DOCKER_CONFIG, 'config.json') : path.join(home, '.docker', 'config.json'));
  return files.map((file) => ({ path: file, display: tildify(file, home) }));
}

function tildify(file: string, home: string): string {
  const rel = path.relative(home, file);
  return home !== '' && rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel) ? `~/${rel}` : file;
}

/** Docker Hub under any of its names is "docker.io"; everything else normalizeRegistry. */
function registryKey(registry: string): string {
  const r = normalizeRegistry(registry);
  return HUB_ALIASES.has(r) ? DOCKER_HUB : r;
}

/** The server URL docker hands a credential helper for `registry`. */
export function helperServerUrl(registry: string): string {
  const r = registryKey(registry);
  return r === DOCKER_HUB ? DOCKER_HUB_SERVER_URL : r;
}

/** Look up credentials for `registry` (host[:port], "docker.io" for Docker Hub). */
export async function findCredential(registry: string, opts: CredentialSourceOptions = {}): Promise<FoundCredential | undefined> {
  const env = opts.env ?? process.env;
  const runHelper = opts.runHelper ?? ((helper: string, serverUrl: string) => runCredentialHelper(helper, serverUrl, { env }));
  const wanted = registryKey(registry);
  for (const file of credentialFiles(opts)) {
    const config = await readConfig(file);
    if (config === undefined) continue;
    const found = await lookIn(config, file, wanted, opts.repository, runHelper);
    if (found) return found;
  }
  return undefined;
}

interface ConfigFile {
  auths: Record<string, unknown>;
  credHelpers: Record<string, unknown>;
  credsStore: string | undefined;
}

async function lookIn(
  config: ConfigFile,
  file: AuthFile,
  registry: string,
  repository: string | undefined,
  runHelper: (helper: string, serverUrl: string) => Promise<string | undefined>,
): Promise<FoundCredential | undefined> {
  const helperKey = matchingKeys(config.credHelpers, registry, undefined)[0];
  if (helperKey !== undefined) {
    const helper = config.credHelpers[helperKey];
    const field = `credHelpers["${helperKey}"]`;
    if (typeof helper !== 'string') throw malformed(file, `${field} is not a string`);
    const credential = await askHelper(runHelper, helper, registry, file, field);
    return credential && { credential, source: `${file.display} (credHelpers: docker-credential-${helper})` };
  }
  for (const key of matchingKeys(config.auths, registry, repository)) {
    const credential = decodeEntry(config.auths[key], file, key);
    if (credential) return { credential, source: `${file.display} (auths)` };
  }
  if (config.credsStore !== undefined && config.credsStore !== '') {
    const credential = await askHelper(runHelper, config.credsStore, registry, file, 'credsStore');
    if (credential) return { credential, source: `${file.display} (credsStore: docker-credential-${config.credsStore})` };
  }
  return undefined;
}

/**
 * The keys of `map` that name `registry`, best first: keys for a namespace holding
 * `repository` (podman, longest first), the key docker itself writes, then any key
 * with the same host in file order ("https://host", "host/v1/", "http://host/v2/"…,
 * as docker's ConvertToHostname reads them).
 */
function matchingKeys(map: Record<string, unknown>, registry: string, repository: string | undefined): string[] {
  const scoped: Array<{ key: string; length: number }> = [];
  const exact: string[] = [];
  const sameHost: string[] = [];
  const preferred = registry === DOCKER_HUB ? DOCKER_HUB_SERVER_URL : registry;
  for (const key of Object.keys(map)) {
    const { host, namespace } = splitKey(key);
    if (host !== registry) continue;
    if (namespace === undefined) {
      (key === preferred ? exact : sameHost).push(key);
    } else if (repository !== undefined && (repository === namespace || repository.startsWith(`${namespace}/`))) {
      scoped.push({ key, length: namespace.length });
    }
  }
  scoped.sort((a, b) => b.length - a.length);
  return [...scoped.map((s) => s.key), ...exact, ...sameHost];
}

function splitKey(key: string): { host: string; namespace: string | undefined } {
  const bare = key.trim().replace(/^https?:\/\//i, '');
  const slash = bare.indexOf('/');
  const host = registryKey(slash < 0 ? bare : bare.slice(0, slash));
  const rest = slash < 0 ? '' : bare.slice(slash + 1).replace(/^\/+|\/+$/g, '');
  // docker's legacy "host/v1/" and "host/v2/" keys mean the whole registry.
  return { host, namespace: rest === '' || rest === 'v1' || rest === 'v2' ? undefined : rest };
}

async function readConfig(file: AuthFile): Promise<ConfigFile | undefined> {
  let text: string;
  try {
    text = await readFile(file.path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw new OcibuildError(`cannot read credentials file ${file.display}: ${(err as Error).message}`, {
      where: file.display,
      hint: 'check its permissions, or point REGISTRY_AUTH_FILE or DOCKER_CONFIG elsewhere',
      cause: err,
    });
  }
  // docker reads an empty config.json as an empty configuration.
  if (text.trim() === '') return undefined;
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    // V8's message quotes the file's text, which may hold secrets: report only the position.
    const at = /position (\d+)/.exec((err as Error).message);
    const position = at ? ` (${lineColumn(text, Number(at[1]))})` : '';
    throw new OcibuildError(`credentials file ${file.display} is not valid JSON${position}`, {
      where: file.display,
      hint: 'fix the JSON by hand, or remove the file and log in again (docker login / podman login write it)',
    });
  }
  if (!isObject(json)) throw malformed(file, 'the top level is not a JSON object');
  const auths = json.auths ?? {};
  const credHelpers = json.credHelpers ?? {};
  const credsStore = json.credsStore;
  if (!isObject(auths)) throw malformed(file, '"auths" is not an object');
  if (!isObject(credHelpers)) throw malformed(file, '"credHelpers" is not an object');
  if (credsStore !== undefined && typeof credsStore !== 'string') throw malformed(file, '"credsStore" is not a string');
  return { auths, credHelpers, credsStore };
}

function lineColumn(text: string, offset: number): string {
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  const column = offset - before.lastIndexOf('\n');
  return `line ${line}, column ${column}`;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function malformed(file: AuthFile, problem: string): OcibuildError {
  return new OcibuildError(`credentials file ${file.display} is malformed: ${problem}`, {
    where: file.display,
    hint: 'fix it by hand, or remove the entry and log in again (docker login / podman login)',
  });
}

/** One `auths` entry; undefined when it holds nothing (docker writes `{}` next to a credsStore). */
function decodeEntry(entry: unknown, file: AuthFile, key: string): Credential | undefined {
  const field = `auths["${key}"]`;
  if (!isObject(entry)) throw malformed(file, `${field} is not an object`);
  const str = (name: string): string => {
    const v = entry[name];
    if (v === undefined || v === null) return '';
    if (typeof v !== 'string') throw malformed(file, `${field}.${name} is not a string`);
    return v;
  };
  let username = str('username');
  let password = str('password');
  const auth = str('auth').trim();
  if (auth !== '') {
    const decoded = /^[A-Za-z0-9+/]*={0,2}$/.test(auth) && auth.length % 4 === 0
      ? Buffer.from(auth, 'base64').toString('utf8')
      : undefined;
    const colon = decoded === undefined ? -1 : decoded.indexOf(':');
    if (decoded === undefined || colon < 0) {
      throw malformed(file, `${field}.auth is not the base64 of "username:password"`);
    }
    username = decoded.slice(0, colon);
    password = decoded.slice(colon + 1);
  }
  const token = str('identitytoken');
  if (token !== '') {
    // docker writes "<token>" as the user name of identity-token logins.
    return username !== '' && username !== '<token>' ? { kind: 'identity-token', username, token } : { kind: 'identity-token', token };
  }
  if (username === '' && password === '') return undefined;
  return { kind: 'basic', username, password };
}

async function askHelper(
  runHelper: (helper: string, serverUrl: string) => Promise<string | undefined>,
  helper: string,
  registry: string,
  file: AuthFile,
  field: string,
): Promise<Credential | undefined> {
  const program = `docker-credential-${helper}`;
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(helper)) {
    throw malformed(file, `${field} names "${helper}", which is not a credential helper name`);
  }
  const configured = `it is configured in ${file.display} (${field})`;
  let output: string | undefined;
  try {
    output = await runHelper(helper, helperServerUrl(registry));
  } catch (err) {
    if (err instanceof OcibuildError) {
      throw new OcibuildError(err.message, {
        where: err.where ?? program,
        hint: err.hint ? `${err.hint}; ${configured}` : configured,
        exitCode: err.exitCode,
        cause: err.cause,
      });
    }
    throw new OcibuildError(`credential helper ${program} failed: ${(err as Error).message}`, { where: program, hint: configured, cause: err });
  }
  if (output === undefined) return undefined;
  let answer: unknown;
  try {
    answer = JSON.parse(output);
  } catch {
    throw new OcibuildError(`credential helper ${program} answered with something that is not JSON`, {
      where: program,
      hint: `a helper prints {"Username": …, "Secret": …}; ${configured}`,
    });
  }
  const username = isObject(answer) ? answer.Username : undefined;
  const secret = isObject(answer) ? answer.Secret : undefined;
  if ((username !== undefined && typeof username !== 'string') || (secret !== undefined && typeof secret !== 'string')) {
    throw new OcibuildError(`credential helper ${program} answered without string Username and Secret fields`, {
      where: program,
      hint: `a helper prints {"Username": …, "Secret": …}; ${configured}`,
    });
  }
  if (secret === undefined || secret === '') return undefined;
  if (username === '<token>') return { kind: 'identity-token', token: secret };
  return { kind: 'basic', username: username ?? '', password: secret };
}

export interface RunHelperOptions {
  env?: NodeJS.ProcessEnv;
  /** Kill the helper after this long (default 60 s: some prompt to unlock a keychain). */
  timeoutMs?: number;
}

/**
 * Run `docker-credential-<helper> get` with the server URL on stdin, as docker does.
 * Returns its stdout; undefined when it reports "credentials not found".
 */
export async function runCredentialHelper(helper: string, serverUrl: string, options: RunHelperOptions = {}): Promise<string | undefined> {
  const program = `docker-credential-${helper}`;
  const timeoutMs = options.timeoutMs ?? DEFAULT_HELPER_TIMEOUT_MS;
  const retry = `run "printf %s ${serverUrl} | ${program} get" to see what it says, or log in again`;
  // Loaded here: most pushes never run a helper.
  const { spawn } = await import('node:child_process');
  return new Promise((resolve, reject) => {
    const child = spawn(program, ['get'], { env: options.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let settled = false;
    const finish = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      fn();
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      child.stdout.destroy();
      child.stderr.destroy();
      finish(() => reject(new OcibuildError(`credential helper ${program} did not answer within ${Math.round(timeoutMs / 100) / 10} s`, {
        where: program,
        hint: 'it may be waiting for a locked keychain or a prompt; unlock it, or log in again',
      })));
    }, timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      if (stdout.length < MAX_HELPER_OUTPUT) stdout += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      if (stderr.length < MAX_HELPER_OUTPUT) stderr += chunk;
    });
    child.on('error', (err: NodeJS.ErrnoException) => {
      finish(() => reject(err.code === 'ENOENT'
        ? new OcibuildError(`credential helper ${program} is not installed (not found on PATH)`, {
          where: program,
          hint: `install ${program}, or remove the credHelpers/credsStore entry that names "${helper}"`,
          cause: err,
        })
        : new OcibuildError(`cannot run credential helper ${program}: ${err.message}`, { where: program, cause: err })));
    });
    child.on('close', (code, signal) => {
      if (code === 0) {
        finish(() => resolve(stdout));
        return;
      }
      if (NOT_FOUND.test(stdout) || NOT_FOUND.test(stderr)) {
        finish(() => resolve(undefined));
        return;
      }
      const status = code === null ? `killed by ${signal ?? 'a signal'}` : `exit code ${code}`;
      const said = firstLine(stderr) || firstLine(stdout);
      finish(() => reject(new OcibuildError(`credential helper ${program} failed (${status})${said ? `: ${said}` : ''}`, {
        where: program,
        hint: retry,
      })));
    });
    // A helper that exits without reading stdin makes this write fail with EPIPE;
    // its exit status tells the story.
    child.stdin.on('error', () => {});
    child.stdin.end(serverUrl);
  });
}

/** The first line of a helper's error text, short, and never anything that looks like an answer. */
function firstLine(text: string): string {
  const line = text.trim().split('\n')[0]?.trim() ?? '';
  if (/secret/i.test(line)) return '';
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}

/** The Authorization header value for HTTP Basic (RFC 7617, UTF-8). */
export function basicAuthHeader(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`, 'utf8').toString('base64')}`;
}
