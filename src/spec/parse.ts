import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Document, LineCounter, isAlias, isMap, isScalar, isSeq, parseDocument, type Node, type Scalar } from 'yaml';
import { OcibuildError, usageError } from '../errors.js';
import { parseReference } from '../registry/reference.js';
import { annotationProblem } from './annotations.js';
import { DEFAULT_PLATFORM, debianArch, formatPlatform, parsePlatform, samePlatform } from './platform.js';
import { knownReleases, presetRelease, sourcesPreset, type PresetKind } from './presets.js';
import type {
  AptSection, AptSource, FileEntry, ImageConfigSpec, ImageSpec, InstallMode, PackageRequest, Platform,
  RunCache, RunSecret, RunSection, SandboxChoiceSpec,
} from './types.js';

const TOP_KEYS = ['from', 'apt', 'run', 'files', 'config', 'annotations', 'platforms', 'sandbox', 'network', 'ubuntu_version', 'debian_version', 'apt_dependencies'];
const RUN_KEYS = ['commands', 'network', 'user', 'workdir', 'env', 'secrets', 'cache'];
const RUN_MOVED: Readonly<Record<string, string>> = { sandbox: 'the top level (it applies to every sandboxed step)' };
const SECRET_KEYS = ['id', 'src', 'env'];
const CACHE_KEYS = ['target', 'id'];
// Secret and cache ids name a file or directory: no slashes, no dot names.
const MOUNT_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const APT_KEYS = ['sources', 'packages', 'install', 'recommends', 'lockfile'];
const SOURCE_KEYS = ['url', 'suites', 'components', 'keyring'];
const FILE_KEYS = ['src', 'dest', 'mode', 'uid', 'gid'];
const CONFIG_KEYS = ['env', 'entrypoint', 'cmd', 'workdir', 'user', 'labels', 'expose'];
const CONFIG_MOVED: Readonly<Record<string, string>> = { annotations: 'the top level (annotations: go on the manifest, labels: on the config)' };

/** Keys people write at the wrong level, and where they belong. */
const TOP_MOVED: Readonly<Record<string, string>> = {
  packages: 'apt.packages', sources: 'apt.sources', install: 'apt.install', recommends: 'apt.recommends',
  env: 'config.env', entrypoint: 'config.entrypoint', cmd: 'config.cmd', workdir: 'config.workdir',
  user: 'config.user', labels: 'config.labels', expose: 'config.expose',
};
const APT_MOVED: Readonly<Record<string, string>> = {
  url: 'an entry of apt.sources', suites: 'an entry of apt.sources',
  components: 'an entry of apt.sources', keyring: 'an entry of apt.sources',
};

// Debian policy 5.6.1: lower case letters, digits, + - . ; at least two characters,
// starting with an alphanumeric character.
const PACKAGE_NAME = /^[a-z0-9][a-z0-9+.-]+$/;
// Debian policy 5.6.12: [epoch:]upstream[-revision]; a colon is only legal after an epoch.
const PACKAGE_VERSION = /^(?:[0-9]+:)?[A-Za-z0-9][A-Za-z0-9.+~:-]*$/;
const ARCH_NAME = /^[a-z0-9][a-z0-9-]*$/;

interface Entry {
  key: Scalar;
  value: Node | null;
}
type Entries = Map<string, Entry>;

/** Reads YAML nodes with their positions, so every error can point at file:line:col. */
class Reader {
  constructor(
    readonly file: string,
    private readonly lines: LineCounter,
    private readonly doc: Document,
  ) {}

  where(node: Node | null | undefined): string {
    const offset = node?.range?.[0];
    if (offset === undefined) return this.file;
    const { line, col } = this.lines.linePos(offset);
    return `${this.file}:${line}:${col}`;
  }

  line(node: Node | null | undefined): number | undefined {
    const offset = node?.range?.[0];
    return offset === undefined ? undefined : this.lines.linePos(offset).line;
  }

  fail(node: Node | null | undefined, message: string, hint: string): never {
    throw usageError(message, this.where(node), hint);
  }

  /** Follows `*alias` references to the anchored node. */
  deref(node: unknown): Node | null {
    if (isAlias(node)) return node.resolve(this.doc) ?? null;
    if (isScalar(node) || isMap(node) || isSeq(node)) return node;
    return null;
  }

  /**
   * A mapping's entries by key. Duplicate keys and unknown keys are errors that
   * point at the key; an unknown key suggests the nearest known one.
   */
  map(node: Node | null, label: string, known: readonly string[] | null, moved: Readonly<Record<string, string>> = {}): Entries {
    if (!isMap(node)) this.fail(node, `${label}: expected a mapping (key: value), got ${describe(node)}`, `write ${label} as indented "key: value" lines`);
    const entries: Entries = new Map();
    for (const pair of node.items) {
      const key = this.deref(pair.key);
      if (!isScalar(key) || key.value === null || typeof key.value === 'object') {
        this.fail(key ?? node, `${label}: keys must be plain names, got ${describe(key)}`, 'use plain words as keys');
      }
      const name = scalarText(key);
      const first = entries.get(name);
      if (first) {
        this.fail(key, `duplicate key ${qualify(label, name)} (first set on line ${this.line(first.key)})`, 'remove one of the two entries');
      }
      if (known && !known.includes(name)) {
        const elsewhere = moved[name];
        const near = nearest(name, known);
        const hint = elsewhere ? `${name} belongs in ${elsewhere}`
          : near ? `did you mean ${near}?` : `known keys here: ${known.join(', ')}`;
        this.fail(key, `unknown key ${qualify(label, name)}`, hint);
      }
      entries.set(name, { key, value: this.deref(pair.value) });
    }
    return entries;
  }

  /** A list's items (aliases resolved). */
  list(node: Node | null, label: string, what: string, example: string): Node[] {
    if (!isSeq(node)) this.fail(node, `${label}: expected a list of ${what}, got ${describe(node)}`, `write it as a YAML list: ${example}`);
    return node.items.map((item) => this.deref(item) ?? this.fail(node, `${label}: empty list item`, 'remove the empty item'));
  }

  string(node: Node | null, label: string, hint: string): string {
    if (!isScalar(node) || typeof node.value !== 'string') this.fail(node, `${label}: expected a string, got ${describe(node)}`, hint);
    return node.value;
  }

  /** A string, or a number/boolean taken as written ("1.10" stays "1.10", not 1.1). */
  text(node: Node | null, label: string, hint: string): string {
    if (!isScalar(node) || !['string', 'number', 'boolean', 'bigint'].includes(typeof node.value)) {
      this.fail(node, `${label}: expected a string, got ${describe(node)}`, hint);
    }
    return scalarText(node);
  }

  nonEmptyString(node: Node | null, label: string, hint: string): string {
    const s = this.string(node, label, hint);
    if (s.trim() === '') this.fail(node, `${label}: must not be empty`, hint);
    return s;
  }

  boolean(node: Node | null, label: string): boolean {
    if (!isScalar(node) || typeof node.value !== 'boolean') {
      this.fail(node, `${label}: expected true or false, got ${describe(node)}`, `write ${label.split('.').pop()}: true or false, without quotes`);
    }
    return node.value;
  }

  stringList(node: Node | null, label: string, what: string, example: string): string[] {
    return this.list(node, label, what, example).map((item) => {
      if (!isScalar(item) || typeof item.value !== 'string') {
        this.fail(item, `${label}: expected a list of ${what}, but this item is ${describe(item)}`, `quote the item: ${example}`);
      }
      return item.value;
    });
  }
}

/** The text of a scalar as the user wrote it when YAML read it as a number or boolean. */
function scalarText(node: Scalar): string {
  if (typeof node.value === 'string') return node.value;
  // yaml keeps the source text of plain scalars: 24.10 would otherwise become "24.1".
  if (node.type === 'PLAIN' && typeof node.source === 'string') return node.source;
  return String(node.value);
}

function describe(node: Node | null | undefined): string {
  if (node === null || node === undefined) return 'nothing';
  if (isMap(node)) return 'a mapping';
  if (isSeq(node)) return 'a list';
  if (isScalar(node)) {
    const v = node.value;
    if (v === null) return 'nothing (null)';
    if (typeof v === 'string') return `the string ${JSON.stringify(v)}`;
    if (typeof v === 'number' || typeof v === 'bigint') return `the number ${scalarText(node)}`;
    if (typeof v === 'boolean') return `${v}`;
  }
  return 'an unsupported value';
}

function qualify(label: string, key: string): string {
  return label === '' ? key : `${label}.${key}`;
}

/** Optimal string alignment distance (Levenshtein plus adjacent transpositions). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  const at = (i: number, j: number): number => d[i]?.[j] ?? Number.POSITIVE_INFINITY;
  for (let i = 1; i <= a.length; i++) {
    const row = d[i];
    if (!row) continue;
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, at(i - 2, j - 2) + 1);
      row[j] = v;
    }
  }
  return at(a.length, b.length);
}

/** The closest candidate, if it is close enough to be a likely typo. */
export function nearest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const c of candidates) {
    const dist = editDistance(word.toLowerCase(), c);
    if (dist < bestDistance) {
      best = c;
      bestDistance = dist;
    }
  }
  return bestDistance <= Math.max(1, Math.floor(word.length / 3)) ? best : undefined;
}

/** Parses and validates image.yaml text. Pure: `file` (absolute) is only used for positions and relative paths. */
export function parseSpec(text: string, file: string): ImageSpec {
  const lines = new LineCounter();
  // uniqueKeys: false, because Reader.map reports duplicates itself, naming the key and both lines.
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: false, prettyErrors: false });
  const yamlError = doc.errors[0];
  if (yamlError) {
    const { line, col } = lines.linePos(yamlError.pos[0]);
    throw usageError(`invalid YAML: ${yamlError.message}`, `${file}:${line}:${col}`,
      'check the indentation and quoting around this position');
  }
  return specFromDocument(doc, lines, file);
}

/**
 * A spec built in code (the programmatic API, src/index.ts), as a plain object with
 * the keys image.yaml has: the same checks and defaults as a spec file, with `file`
 * (which need not exist) in the messages and as the base of relative paths.
 */
export function specFromObject(value: unknown, file: string): ImageSpec {
  return specFromDocument(new Document(value), new LineCounter(), file);
}

function specFromDocument(doc: Document, lines: LineCounter, file: string): ImageSpec {
  const r = new Reader(file, lines, doc);
  const root = r.deref(doc.contents);
  if (!isMap(root)) {
    throw usageError(`an image spec must be a mapping of keys (from, apt, run, ...), got ${describe(root)}`,
      root ? r.where(root) : `${file}:1:1`, 'start with a line like "from: docker.io/library/debian:12"');
  }
  const top = r.map(root, '', TOP_KEYS, TOP_MOVED);
  const dir = path.dirname(file);

  const platforms = parsePlatforms(r, top.get('platforms'));
  const preset = parsePreset(r, top);
  const from = parseFrom(r, top.get('from'), preset);
  const apt = parseApt(r, top, { from, preset, dir, arch: debianArch(platforms[0] ?? DEFAULT_PLATFORM) });

  const spec: ImageSpec = {
    path: file,
    dir,
    from: from.ref,
    sandbox: parseSandbox(r, top.get('sandbox')),
    files: parseFiles(r, top.get('files'), dir),
    config: parseConfig(r, top.get('config')),
    annotations: parseAnnotations(r, top.get('annotations')),
    platforms,
  };
  if (apt) spec.apt = apt;
  const run = parseRun(r, top.get('run'), top.get('network'), dir);
  if (run) spec.run = run;
  checkLockfilePerArch(r, apt, top, platforms);
  return spec;
}

/** Reads and parses a spec file. */
export async function loadSpec(file: string): Promise<ImageSpec> {
  const abs = path.resolve(file);
  let text: string;
  try {
    text = await readFile(abs, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new OcibuildError(`image spec not found: ${abs}`, {
        where: abs, exitCode: 2, cause: err,
        hint: 'run ocibuild in the directory holding image.yaml, or pass -f PATH',
      });
    }
    throw new OcibuildError(`cannot read image spec ${abs}: ${(err as Error).message}`, { where: abs, exitCode: 2, cause: err });
  }
  return parseSpec(text, abs);
}

interface Preset {
  kind: PresetKind;
  /** The release number ("22.04", "12"). */
  release: string;
  /** The key that asked for it (ubuntu_version / debian_version), or from: when derived. */
  entry: Entry;
  keyName: string;
}

function parsePreset(r: Reader, top: Entries): Preset | undefined {
  const ubuntu = top.get('ubuntu_version');
  const debian = top.get('debian_version');
  if (ubuntu && debian) {
    r.fail(debian.key, `ubuntu_version (line ${r.line(ubuntu.key)}) and debian_version (line ${r.line(debian.key)}) are both set`,
      'an image is built from one distribution: keep one of them');
  }
  const entry = ubuntu ?? debian;
  if (!entry) return undefined;
  const kind: PresetKind = ubuntu ? 'ubuntu' : 'debian';
  const keyName = `${kind}_version`;
  const version = r.text(entry.value, keyName, `write it quoted, e.g. ${keyName}: "${kind === 'ubuntu' ? '22.04' : '12'}"`);
  const release = presetRelease(kind, version);
  if (release === undefined) {
    r.fail(entry.value, `unknown ${keyName} "${version}"`, `known ${kind} versions: ${knownReleases(kind)}; for others list apt.sources yourself`);
  }
  return { kind, release, entry, keyName };
}

interface From {
  ref: string;
  node: Node | null;
}

function parseFrom(r: Reader, entry: Entry | undefined, preset: Preset | undefined): From {
  if (!entry) {
    // The seed's form: ubuntu_version alone names both the base image and the archive.
    if (preset) return { ref: `docker.io/library/${preset.kind}:${preset.release}`, node: null };
    throw usageError('missing key from', `${r.file}:1:1`,
      'add "from: docker.io/library/debian:12" (a registry reference), "from: scratch", or ubuntu_version/debian_version');
  }
  const ref = r.nonEmptyString(entry.value, 'from', 'write a registry reference such as docker.io/library/debian:12, or scratch');
  if (/\s/.test(ref)) r.fail(entry.value, `from: "${ref}" is not an image reference (it contains spaces)`, 'write one reference such as docker.io/library/debian:12');
  if (ref !== 'scratch') {
    // Checked here, so the error points at the line (and before any other key's complaint).
    try {
      parseReference(ref, 'from');
    } catch (err) {
      if (!(err instanceof OcibuildError)) throw err;
      r.fail(entry.value, `from: ${err.message}`, err.hint ?? 'write a registry reference such as docker.io/library/debian:12, or scratch');
    }
  }
  return { ref, node: entry.value };
}

/** Which distribution and release an image reference like debian:12 or ubuntu:jammy-20240111 is. */
function distroOfReference(ref: string): { kind: PresetKind; tag: string | undefined } | undefined {
  const noDigest = ref.split('@')[0] ?? ref;
  const slash = noDigest.lastIndexOf('/');
  const colon = noDigest.indexOf(':', slash + 1);
  const name = colon < 0 ? noDigest.slice(slash + 1) : noDigest.slice(slash + 1, colon);
  if (name !== 'debian' && name !== 'ubuntu') return undefined;
  return { kind: name, tag: colon < 0 ? undefined : noDigest.slice(colon + 1) };
}

/** The release a distro tag means: "bookworm-slim" → 12, "12.5" → 12, "jammy-20240111" → 22.04. */
function releaseOfTag(kind: PresetKind, tag: string): string | undefined {
  const head = tag.split('-')[0] ?? tag;
  const direct = presetRelease(kind, head);
  if (direct !== undefined) return direct;
  // Debian point releases (12.5) share the major release's archive.
  if (kind === 'debian' && /^\d+\.\d+$/.test(head)) return presetRelease(kind, head.split('.')[0] ?? head);
  return undefined;
}

interface AptContext {
  from: From;
  preset: Preset | undefined;
  dir: string;
  /** Debian architecture of the first platform: presets depend on it. */
  arch: string;
}

function parseApt(r: Reader, top: Entries, ctx: AptContext): AptSection | undefined {
  const aptEntry = top.get('apt');
  const aliasPackages = top.get('apt_dependencies');
  if (!aptEntry && !aliasPackages && !ctx.preset) return undefined;
  const apt = aptEntry ? r.map(aptEntry.value, 'apt', APT_KEYS, APT_MOVED) : new Map<string, Entry>();

  const longPackages = apt.get('packages');
  if (aliasPackages && longPackages) {
    r.fail(aliasPackages.key, `apt_dependencies (line ${r.line(aliasPackages.key)}) and apt.packages (line ${r.line(longPackages.key)}) are both set`,
      'apt_dependencies is another name for apt.packages: keep one list');
  }
  const sourcesEntry = apt.get('sources');
  if (ctx.preset && sourcesEntry) {
    r.fail(sourcesEntry.key, `${ctx.preset.keyName} (line ${r.line(ctx.preset.entry.key)}) and apt.sources (line ${r.line(sourcesEntry.key)}) are both set`,
      `${ctx.preset.keyName} is a shorthand for apt.sources: keep one of them`);
  }

  const packagesEntry = longPackages ?? aliasPackages;
  const packagesLabel = longPackages ? 'apt.packages' : 'apt_dependencies';
  const packages = packagesEntry ? parsePackages(r, packagesEntry.value, packagesLabel) : [];

  const section: AptSection = {
    sources: [],
    packages,
    install: parseInstall(r, apt.get('install'), ctx.from.ref),
    recommends: apt.has('recommends') ? r.boolean(apt.get('recommends')?.value ?? null, 'apt.recommends') : false,
  };
  const lockfile = apt.get('lockfile');
  if (lockfile) section.lockfile = parseLockfile(r, lockfile.value, ctx.dir);

  if (sourcesEntry) {
    section.sources = parseSources(r, sourcesEntry.value, ctx.dir);
    return section;
  }
  let preset: { kind: PresetKind; release: string } | undefined = ctx.preset;
  if (!preset) preset = derivePreset(r, ctx.from, packages.length > 0, packagesEntry);
  if (preset) {
    section.sources = sourcesPreset(preset.kind, preset.release, ctx.arch);
    section.preset = `${preset.kind} ${preset.release}`;
    section.presetKind = preset.kind;
    section.presetVersion = preset.release;
  }
  return section;
}

/**
 * Sources from the base image when none are given ("default derived from the
 * distro/suite"). Only an error when there are packages to resolve.
 */
function derivePreset(r: Reader, from: From, needed: boolean, packagesEntry: Entry | undefined): { kind: PresetKind; release: string } | undefined {
  if (from.ref === 'scratch') {
    if (!needed) return undefined;
    r.fail(from.node ?? packagesEntry?.key, 'from: scratch has no distribution to derive sources from; add apt.sources or debian_version/ubuntu_version',
      'e.g. debian_version: "12", or an apt.sources list with url, suites and components');
  }
  const distro = distroOfReference(from.ref);
  const release = distro?.tag === undefined ? undefined : releaseOfTag(distro.kind, distro.tag);
  if (distro && release !== undefined) return { kind: distro.kind, release };
  if (!needed) return undefined;
  if (distro) {
    r.fail(from.node, `cannot tell which ${distro.kind} release ${from.ref} is, so apt sources cannot be derived from it`,
      `use a release tag (known: ${knownReleases(distro.kind)}), or set ${distro.kind}_version or apt.sources`);
  }
  r.fail(from.node, `apt.sources is required: ${from.ref} is not a debian or ubuntu image, so its sources cannot be derived`,
    'add apt.sources (url, suites, components) matching the base image\'s distribution, or debian_version/ubuntu_version');
}

function parseInstall(r: Reader, entry: Entry | undefined, from: string): InstallMode {
  // A scratch image has no shell and no dpkg to run maintainer scripts with, so its
  // default is unpack (files plus the dpkg database, the distroless recipe); every
  // other base gets the full dpkg install that apt-get would do.
  if (!entry) return from === 'scratch' ? 'unpack' : 'dpkg';
  const v = r.string(entry.value, 'apt.install', 'write install: dpkg or install: unpack');
  if (v !== 'dpkg' && v !== 'unpack') {
    r.fail(entry.value, `apt.install: unknown mode "${v}"`, 'dpkg runs maintainer scripts in the sandbox; unpack only lays out files and the dpkg database');
  }
  return v;
}

function parseLockfile(r: Reader, node: Node | null, dir: string): string {
  const s = r.nonEmptyString(node, 'apt.lockfile', 'write a path relative to the spec, e.g. Packages-{suite}-{arch}.lock');
  for (const m of s.matchAll(/\{([^}]*)\}/g)) {
    if (m[1] !== 'suite' && m[1] !== 'arch') {
      r.fail(node, `apt.lockfile: unknown placeholder {${m[1]}}`, 'the lockfile name may use {suite} and {arch}');
    }
  }
  return path.resolve(dir, s);
}

function parsePackages(r: Reader, node: Node | null, label: string): PackageRequest[] {
  const example = `${label.split('.').pop()}: [python3, curl]`;
  const items = r.list(node, label, 'package names', example);
  const seen = new Map<string, Node>();
  return items.map((item) => {
    if (!isScalar(item) || typeof item.value !== 'string') {
      r.fail(item, `${label}: expected a package name, got ${describe(item)}`, 'write name, name=version or name:arch');
    }
    const req = parsePackageRequest(r, item, item.value, label);
    const key = req.arch ? `${req.name}:${req.arch}` : req.name;
    const first = seen.get(key);
    if (first) r.fail(item, `${label}: ${key} is listed twice (first on line ${r.line(first)})`, 'keep one entry per package');
    seen.set(key, item);
    return req;
  });
}

/** "name", "name=version", "name:arch", "name:arch=version", as apt-get accepts them. */
function parsePackageRequest(r: Reader, node: Node, text: string, label: string): PackageRequest {
  const s = text.trim();
  const eq = s.indexOf('=');
  const head = eq < 0 ? s : s.slice(0, eq);
  const version = eq < 0 ? undefined : s.slice(eq + 1);
  const colon = head.indexOf(':');
  const name = colon < 0 ? head : head.slice(0, colon);
  const arch = colon < 0 ? undefined : head.slice(colon + 1);
  if (!PACKAGE_NAME.test(name)) {
    r.fail(node, `${label}: invalid package name "${name}" in "${text}"`,
      'Debian package names are lower case letters, digits and + - . , at least two characters, starting with a letter or digit');
  }
  if (arch !== undefined && !ARCH_NAME.test(arch)) {
    r.fail(node, `${label}: invalid architecture "${arch}" in "${text}"`, 'write name:arch with a Debian architecture, e.g. libc6:i386');
  }
  if (version !== undefined) {
    const epochOk = !version.includes(':') || /^[0-9]+:/.test(version);
    if (!PACKAGE_VERSION.test(version) || !epochOk || version.endsWith('-')) {
      r.fail(node, `${label}: invalid version "${version}" in "${text}"`,
        'a version pin is name=[epoch:]upstream[-revision], e.g. python3=3.10.6-1~22.04');
    }
  }
  const req: PackageRequest = { name, where: r.where(node) };
  if (version !== undefined) req.version = version;
  if (arch !== undefined) req.arch = arch;
  return req;
}

function parseSources(r: Reader, node: Node | null, dir: string): AptSource[] {
  const example = 'sources: [{url: http://deb.debian.org/debian, suites: [bookworm], components: [main]}]';
  const items = r.list(node, 'apt.sources', 'sources', example);
  if (items.length === 0) r.fail(node, 'apt.sources: the list is empty', `list at least one source, e.g. ${example}`);
  return items.map((item, i) => {
    const label = `apt.sources[${i}]`;
    const m = r.map(item, label, SOURCE_KEYS);
    const urlEntry = m.get('url');
    if (!urlEntry) r.fail(item, `${label}: missing key url`, 'add url: http://deb.debian.org/debian (the archive root)');
    const url = r.nonEmptyString(urlEntry.value, `${label}.url`, 'write the archive root, e.g. http://deb.debian.org/debian').trim();
    let parsed: URL | undefined;
    try {
      parsed = new URL(url);
    } catch {
      parsed = undefined;
    }
    if (!parsed || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')) {
      r.fail(urlEntry.value, `${label}.url: "${url}" is not an http(s) URL`, 'apt sources are fetched over http:// or https://');
    }
    const suites = nonEmptyNames(r, m, item, label, 'suites', '[bookworm, bookworm-updates]');
    suites.forEach((suite, j) => {
      if (suite.endsWith('/')) {
        r.fail(suiteNode(m, j) ?? item, `${label}.suites: "${suite}": flat repositories are not supported yet`,
          'use a repository with dists/SUITE/Release, or ask for flat repository support');
      }
    });
    const source: AptSource = {
      // Index URLs are built as url + "/dists/…": a trailing slash would double it.
      url: url.replace(/\/+$/, ''),
      suites,
      components: nonEmptyNames(r, m, item, label, 'components', '[main]'),
    };
    const keyring = m.get('keyring');
    if (keyring) {
      source.keyring = path.resolve(dir, r.nonEmptyString(keyring.value, `${label}.keyring`, 'write a path relative to the spec, e.g. keys/archive.gpg'));
    }
    return source;
  });
}

function suiteNode(m: Entries, index: number): Node | undefined {
  const seq = m.get('suites')?.value;
  const item: unknown = isSeq(seq) ? seq.items[index] : undefined;
  return isScalar(item) ? item : undefined;
}

function nonEmptyNames(r: Reader, m: Entries, item: Node, label: string, key: string, example: string): string[] {
  const entry = m.get(key);
  if (!entry) r.fail(item, `${label}: missing key ${key}`, `add ${key}: ${example}`);
  const names = r.stringList(entry.value, `${label}.${key}`, key, `${key}: ${example}`);
  if (names.length === 0) r.fail(entry.value, `${label}.${key}: the list is empty`, `list at least one, e.g. ${key}: ${example}`);
  const list = isSeq(entry.value) ? entry.value.items : [];
  names.forEach((n, j) => {
    if (n.trim() === '' || /\s/.test(n)) {
      const at = list[j];
      r.fail(isScalar(at) ? at : entry.value, `${label}.${key}: "${n}" is not a valid name`, 'names have no spaces');
    }
  });
  return names;
}

/**
 * `run:` as a list of commands (or one string), or as a mapping with `commands:` and
 * the step's options. Top-level `network:` is the default of `run.network`.
 */
function parseRun(r: Reader, entry: Entry | undefined, networkEntry: Entry | undefined, dir: string): RunSection | undefined {
  const network = networkEntry ? r.boolean(networkEntry.value, 'network') : false;
  if (!entry) return undefined;
  const node = entry.value;
  const where = r.where(entry.key);
  const example = 'run: ["useradd --system app"]';
  if (isScalar(node) && typeof node.value === 'string') return nonEmptyRun({ commands: [node.value], network, env: {}, secrets: [], caches: [], where, commandWheres: [r.where(node)] });
  if (!isMap(node)) {
    return nonEmptyRun({ commands: r.stringList(node, 'run', 'commands', example), network, env: {}, secrets: [], caches: [], where, commandWheres: itemWheres(r, node) });
  }
  const m = r.map(node, 'run', RUN_KEYS, RUN_MOVED);
  const commandsEntry = m.get('commands');
  if (!commandsEntry) r.fail(node, 'run: missing key commands', 'add commands: ["useradd --system app"] (the lines run by /bin/sh -c with set -e)');
  const cmdNode = commandsEntry.value;
  const commands = isScalar(cmdNode) && typeof cmdNode.value === 'string' ? [cmdNode.value] : r.stringList(cmdNode, 'run.commands', 'commands', example);
  const run: RunSection = { commands, network, env: {}, secrets: [], caches: [], where, commandWheres: isSeq(cmdNode) ? itemWheres(r, cmdNode) : [r.where(cmdNode)] };
  const net = m.get('network');
  if (net) run.network = r.boolean(net.value, 'run.network');
  const user = m.get('user');
  if (user) run.user = r.text(user.value, 'run.user', 'write user: name, uid or uid:gid');
  const workdir = m.get('workdir');
  if (workdir) {
    const w = r.nonEmptyString(workdir.value, 'run.workdir', 'write an absolute path, e.g. workdir: /src');
    if (!w.startsWith('/')) r.fail(workdir.value, `run.workdir: "${w}" must be an absolute path`, `write /${w}`);
    run.workdir = w;
  }
  const env = m.get('env');
  if (env) {
    run.env = stringMap(r, env.value, 'run.env', (k, key) => {
      if (k === '' || k.includes('=')) r.fail(key, `run.env: invalid variable name "${k}"`, 'environment variable names cannot be empty or contain "="');
    });
  }
  const secrets = m.get('secrets');
  if (secrets) run.secrets = parseSecrets(r, secrets.value, dir);
  const cache = m.get('cache');
  if (cache) run.caches = parseCaches(r, cache.value);
  return nonEmptyRun(run);
}

/** Where each item of a (checked) list is. */
function itemWheres(r: Reader, node: Node | null): string[] {
  return isSeq(node) ? node.items.map((item) => r.where(item as Node)) : [];
}

/** A `run:` without commands is no step at all. */
function nonEmptyRun(run: RunSection): RunSection | undefined {
  return run.commands.length > 0 ? run : undefined;
}

function parseSecrets(r: Reader, node: Node | null, dir: string): RunSecret[] {
  const example = 'secrets: [{id: netrc, src: ~/.netrc}, {id: token, env: API_TOKEN}]';
  const seen = new Map<string, Node>();
  return r.list(node, 'run.secrets', 'secrets', example).map((item, i) => {
    const label = `run.secrets[${i}]`;
    const m = r.map(item, label, SECRET_KEYS);
    const idEntry = m.get('id');
    if (!idEntry) r.fail(item, `${label}: missing key id`, 'add id: NAME (the step reads /run/secrets/NAME)');
    const id = r.nonEmptyString(idEntry.value, `${label}.id`, 'write a name, e.g. id: netrc');
    if (!MOUNT_ID.test(id)) r.fail(idEntry.value, `${label}.id: "${id}" is not a valid secret name`, 'use letters, digits, _ . - (it becomes /run/secrets/NAME)');
    const first = seen.get(id);
    if (first) r.fail(idEntry.value, `${label}: secret ${id} is listed twice (first on line ${r.line(first)})`, 'give each secret its own id');
    seen.set(id, idEntry.value ?? item);
    const src = m.get('src');
    const env = m.get('env');
    if ((src === undefined) === (env === undefined)) {
      r.fail(item, `${label}: give exactly one of src (a file) or env (an environment variable of ocibuild)`, example);
    }
    const secret: RunSecret = { id, where: r.where(item) };
    if (src) {
      const file = r.nonEmptyString(src.value, `${label}.src`, 'write a path relative to the spec file, or ~/...');
      secret.file = file.startsWith('~/') ? path.join(process.env.HOME ?? '/', file.slice(2)) : path.resolve(dir, file);
    }
    if (env) {
      const name = r.nonEmptyString(env.value, `${label}.env`, 'write the variable name, e.g. env: API_TOKEN');
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) r.fail(env.value, `${label}.env: "${name}" is not an environment variable name`, 'write a name like API_TOKEN');
      secret.env = name;
    }
    return secret;
  });
}

function parseCaches(r: Reader, node: Node | null): RunCache[] {
  const example = 'cache: [/root/.cache/pip, {target: /var/cache/apt, id: apt}]';
  const seen = new Map<string, Node>();
  return r.list(node, 'run.cache', 'cache directories', example).map((item, i) => {
    const label = `run.cache[${i}]`;
    let target: string;
    let id: string | undefined;
    let targetNode: Node | null = item;
    if (isScalar(item)) {
      target = r.nonEmptyString(item, label, 'write an absolute path, e.g. /root/.cache/pip');
    } else {
      const m = r.map(item, label, CACHE_KEYS);
      const t = m.get('target');
      if (!t) r.fail(item, `${label}: missing key target`, 'add target: an absolute path in the sandbox, e.g. /root/.cache/pip');
      targetNode = t.value;
      target = r.nonEmptyString(t.value, `${label}.target`, 'write an absolute path, e.g. /root/.cache/pip');
      const idEntry = m.get('id');
      if (idEntry) {
        id = r.nonEmptyString(idEntry.value, `${label}.id`, 'write a name, e.g. id: pip');
        if (!MOUNT_ID.test(id)) r.fail(idEntry.value, `${label}.id: "${id}" is not a valid cache name`, 'use letters, digits, _ . -');
      }
    }
    if (!target.startsWith('/')) r.fail(targetNode, `${label}: "${target}" must be an absolute path`, `write /${target}`);
    const normal = path.posix.normalize(target).replace(/\/+$/, '') || '/';
    if (normal === '/' || normal.split('/').includes('..')) r.fail(targetNode, `${label}: "${target}" cannot be a cache directory`, 'name a directory below /, e.g. /root/.cache/pip');
    const first = seen.get(normal);
    if (first) r.fail(targetNode, `${label}: ${normal} is listed twice (first on line ${r.line(first)})`, 'mount each cache directory once');
    seen.set(normal, targetNode ?? item);
    return { target: normal, id: id ?? `path${normal.replace(/[^A-Za-z0-9_.-]/g, '_')}` };
  });
}

function parseSandbox(r: Reader, entry: Entry | undefined): SandboxChoiceSpec {
  if (!entry) return 'auto';
  const v = r.string(entry.value, 'sandbox', 'write sandbox: bwrap, nspawn or auto');
  if (v !== 'auto' && v !== 'bwrap' && v !== 'nspawn') {
    r.fail(entry.value, `sandbox: unknown sandbox "${v}"`, 'bwrap (bubblewrap, also without root), nspawn (systemd-nspawn, as root) or auto');
  }
  return v;
}

function parseFiles(r: Reader, entry: Entry | undefined, dir: string): FileEntry[] {
  if (!entry) return [];
  const items = r.list(entry.value, 'files', 'file entries', 'files: [{src: build/server, dest: /usr/local/bin/server}]');
  const files = items.map((item, i) => {
    const label = `files[${i}]`;
    const m = r.map(item, label, FILE_KEYS);
    const src = m.get('src');
    const dest = m.get('dest');
    if (!src) r.fail(item, `${label}: missing key src`, 'add src: a path relative to the spec file');
    if (!dest) r.fail(item, `${label}: missing key dest`, 'add dest: an absolute path in the image');
    const destPath = r.nonEmptyString(dest.value, `${label}.dest`, 'write an absolute path, e.g. /usr/local/bin/server');
    if (!destPath.startsWith('/')) r.fail(dest.value, `${label}.dest: "${destPath}" must be an absolute path`, `write /${destPath}`);
    const parts = destPath.split('/').slice(1);
    if (destPath.endsWith('/') || parts.every((p) => p === '')) {
      r.fail(dest.value, `${label}.dest: "${destPath}" names a directory; dest is the file's own path`, `write the file name too, e.g. ${destPath.replace(/\/+$/, '')}/server`);
    }
    if (parts.some((p) => p === '.' || p === '..' || p === '')) {
      r.fail(dest.value, `${label}.dest: "${destPath}" has an empty, "." or ".." component`, 'write the path plainly, e.g. /usr/local/bin/server');
    }
    const file: FileEntry = {
      src: path.resolve(dir, r.nonEmptyString(src.value, `${label}.src`, 'write a path relative to the spec file')),
      dest: destPath,
      where: r.where(item),
    };
    const mode = m.get('mode');
    if (mode) file.mode = parseMode(r, mode.value, `${label}.mode`);
    const uid = m.get('uid');
    if (uid) file.uid = parseId(r, uid.value, `${label}.uid`);
    const gid = m.get('gid');
    if (gid) file.gid = parseId(r, gid.value, `${label}.gid`);
    return file;
  });
  // One file per destination, and no destination inside another one (a file is no directory).
  for (const [i, f] of files.entries()) {
    for (const g of files.slice(0, i)) {
      if (g.dest === f.dest) r.fail(items[i]!, `files[${i}].dest: ${f.dest} is also the dest of an earlier entry (${g.where})`, 'give each file its own destination');
      if (f.dest.startsWith(`${g.dest}/`) || g.dest.startsWith(`${f.dest}/`)) {
        const [outer, inner] = f.dest.startsWith(`${g.dest}/`) ? [g.dest, f.dest] : [f.dest, g.dest];
        r.fail(items[i]!, `files[${i}].dest: ${inner} would be inside ${outer}, which another entry makes a file`, 'choose destinations that do not nest');
      }
    }
  }
  return files;
}

/**
 * File modes are octal, as chmod reads them: "0755", "755", 0755 (YAML 1.2 reads
 * that as decimal 755, so the written digits are used) or YAML's own 0o755.
 */
function parseMode(r: Reader, node: Node | null, label: string): number {
  const hint = 'write an octal mode as a string, e.g. mode: "0755"';
  if (isScalar(node)) {
    const written = typeof node.value === 'string' ? node.value.trim()
      : typeof node.value === 'number' && node.type === 'PLAIN' ? (node.source ?? '') : undefined;
    if (written !== undefined) {
      const m = /^(?:0o)?([0-7]{1,4})$/.exec(written);
      if (m?.[1] !== undefined) return parseInt(m[1], 8);
      r.fail(node, `${label}: "${written}" is not an octal file mode`, hint);
    }
  }
  r.fail(node, `${label}: expected an octal string like "0755" or an integer, got ${describe(node)}`, hint);
}

function parseId(r: Reader, node: Node | null, label: string): number {
  if (!isScalar(node) || typeof node.value !== 'number' || !Number.isInteger(node.value) || node.value < 0 || node.value > 0xffffffff) {
    r.fail(node, `${label}: expected a numeric id (0 or more), got ${describe(node)}`, 'write a number, e.g. uid: 1000');
  }
  return node.value;
}

function parseConfig(r: Reader, entry: Entry | undefined): ImageConfigSpec {
  const config: ImageConfigSpec = { env: {}, labels: {}, expose: [] };
  if (!entry) return config;
  const m = r.map(entry.value, 'config', CONFIG_KEYS, CONFIG_MOVED);
  const env = m.get('env');
  if (env) {
    config.env = stringMap(r, env.value, 'config.env', (k, key) => {
      if (k === '' || k.includes('=')) r.fail(key, `config.env: invalid variable name "${k}"`, 'environment variable names cannot be empty or contain "="');
    });
  }
  const labels = m.get('labels');
  if (labels) config.labels = stringMap(r, labels.value, 'config.labels');
  for (const key of ['entrypoint', 'cmd'] as const) {
    const e = m.get(key);
    if (!e) continue;
    const node = e.value;
    // Docker's "shell form": a plain string runs through /bin/sh -c.
    config[key] = isScalar(node) && typeof node.value === 'string'
      ? ['/bin/sh', '-c', node.value]
      : r.stringList(node, `config.${key}`, 'strings', `${key}: ["/usr/local/bin/server", "--port", "8080"]`);
  }
  const workdir = m.get('workdir');
  if (workdir) {
    const w = r.nonEmptyString(workdir.value, 'config.workdir', 'write an absolute path, e.g. workdir: /app');
    if (!w.startsWith('/')) r.fail(workdir.value, `config.workdir: "${w}" must be an absolute path`, `write /${w}`);
    config.workdir = w;
  }
  const user = m.get('user');
  if (user) config.user = r.text(user.value, 'config.user', 'write user: name, uid or uid:gid');
  const expose = m.get('expose');
  if (expose) config.expose = parseExpose(r, expose.value);
  return config;
}

/**
 * Manifest annotations (image-spec annotations.md), written as they are. The keys
 * ocibuild sets itself are refused, source must be a URL without credentials and
 * revision one identifier, the same rules as --annotation, --source and --revision.
 */
function parseAnnotations(r: Reader, entry: Entry | undefined): Record<string, string> {
  if (!entry) return {};
  const out: Record<string, string> = {};
  for (const [k, e] of r.map(entry.value, 'annotations', null)) {
    const value = r.text(e.value, `annotations.${k}`, `write a value, e.g. ${k}: "text"`);
    const problem = annotationProblem(k, value);
    if (problem) r.fail(problem.on === 'key' ? e.key : e.value, problem.message, problem.hint);
    out[k] = value;
  }
  return out;
}

/** One lockfile per architecture: a lockfile name without {arch} cannot hold several. */
function checkLockfilePerArch(r: Reader, apt: AptSection | undefined, top: Entries, platforms: Platform[]): void {
  if (!apt?.lockfile || apt.lockfile.includes('{arch}')) return;
  const arches = new Set(platforms.map(debianArch));
  if (arches.size < 2) return;
  const aptNode = top.get('apt')?.value;
  const node = isMap(aptNode) ? aptNode.items.find((p) => isScalar(p.key) && p.key.value === 'lockfile')?.value : undefined;
  r.fail(r.deref(node) ?? aptNode ?? null, `apt.lockfile has no {arch}, but the spec builds ${arches.size} architectures (${[...arches].join(', ')}): their locks would overwrite each other`,
    'put {arch} in the name, e.g. lockfile: locks/Packages-{suite}-{arch}.lock');
}

/** A mapping of string values; numbers and booleans are kept as written (PORT: 8080 → "8080"). */
function stringMap(r: Reader, node: Node | null, label: string, checkKey?: (key: string, node: Scalar) => void): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, e] of r.map(node, label, null)) {
    checkKey?.(k, e.key);
    out[k] = r.text(e.value, `${label}.${k}`, `write a value, e.g. ${k}: "" for an empty one`);
  }
  return out;
}

function parseExpose(r: Reader, node: Node | null): string[] {
  const items = r.list(node, 'config.expose', 'ports', 'expose: ["8080", "53/udp"]');
  const seen = new Map<string, Node>();
  return items.map((item) => {
    const hint = 'write a port, optionally with a protocol: 8080, "8080/tcp", "53/udp"';
    if (!isScalar(item) || (typeof item.value !== 'string' && typeof item.value !== 'number')) {
      r.fail(item, `config.expose: expected a port, got ${describe(item)}`, hint);
    }
    const written = scalarText(item).trim();
    const m = /^(\d{1,5})(?:\/(tcp|udp|sctp))?$/.exec(written);
    const port = m?.[1] === undefined ? NaN : Number(m[1]);
    if (!m || port < 1 || port > 65535) r.fail(item, `config.expose: "${written}" is not a port`, hint);
    // OCI ExposedPorts keys are always "port/protocol"; tcp is the implied protocol.
    const key = `${port}/${m[2] ?? 'tcp'}`;
    const first = seen.get(key);
    if (first) r.fail(item, `config.expose: ${key} is listed twice (first on line ${r.line(first)})`, 'keep one entry per port');
    seen.set(key, item);
    return key;
  });
}

function parsePlatforms(r: Reader, entry: Entry | undefined): Platform[] {
  if (!entry) return [{ ...DEFAULT_PLATFORM }];
  const items = r.list(entry.value, 'platforms', 'platforms', 'platforms: [linux/amd64, linux/arm64]');
  if (items.length === 0) r.fail(entry.value, 'platforms: the list is empty', 'list at least one, e.g. platforms: [linux/amd64]');
  const out: { platform: Platform; node: Node }[] = [];
  for (const item of items) {
    if (!isScalar(item) || typeof item.value !== 'string') {
      r.fail(item, `platforms: expected a platform like linux/amd64, got ${describe(item)}`, 'write os/arch[/variant], e.g. linux/arm64');
    }
    const platform = parsePlatform(item.value, r.where(item));
    const first = out.find((p) => samePlatform(p.platform, platform));
    if (first) {
      r.fail(item, `platforms: ${formatPlatform(platform)} is listed twice (first on line ${r.line(first.node)})`, 'keep one entry per platform');
    }
    out.push({ platform, node: item });
  }
  return out.map((p) => p.platform);
}
