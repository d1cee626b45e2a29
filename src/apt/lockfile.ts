/**
 * The apt lockfile: deb822, a header paragraph then one paragraph per package in
 * install order. Readable by people in a diff and by apt tooling (the package
 * paragraphs are a Packages-index subset). Pure: formatting and parsing only.
 */
import { createHash } from 'node:crypto';
import { OcibuildError } from '../errors.js';

export const LOCK_FORMAT = 1;

/** Everything that decides what a lock contains, normalized. */
export interface LockInputs {
  arch: string;
  sources: Array<{ url: string; suites: string[]; components: string[] }>;
  /** As requested: `name` or `name=version`, in spec order. */
  packages: string[];
  install: string;
  recommends: boolean;
  /** Essential: yes packages added (from: scratch with install: dpkg). */
  essential: boolean;
  /** sha256 of the base image's dpkg status, when there is one. */
  installedDigest?: string;
}

export interface LockEntry {
  package: string;
  version: string;
  architecture: string;
  multiArch?: string;
  essential?: boolean;
  /** Source package, as the index's Source field. */
  source?: string;
  filename: string;
  size: number;
  sha256: string;
  /** Archive root the Filename is relative to. */
  url: string;
  suite: string;
  component: string;
  /** 'requested', 'essential' and/or the packages that depend on this one. */
  requiredBy: string[];
}

export interface Lockfile {
  format: number;
  inputsDigest: string;
  arch: string;
  entries: LockEntry[];
  /** Header lines kept for people (sources, request); not needed to build. */
  requested: string[];
  /** The base image's dpkg status digest the lock was resolved against (header Base-Status-Digest). */
  installedDigest?: string;
}

/** sha256 over a canonical JSON form of the inputs; line endings and key order cannot change it. */
export function inputsDigest(inputs: LockInputs): string {
  const canonical = {
    format: LOCK_FORMAT,
    arch: inputs.arch,
    sources: inputs.sources.map((s) => ({ url: s.url.replace(/\/+$/, ''), suites: s.suites, components: s.components })),
    packages: inputs.packages.map((p) => p.trim()),
    install: inputs.install,
    recommends: inputs.recommends,
    essential: inputs.essential,
    installed: inputs.installedDigest ?? null,
  };
  return 'sha256:' + createHash('sha256').update(JSON.stringify(canonical)).digest('hex');
}

/** Why a lock whose Inputs-Digest is not `inputs`' is stale, for messages. */
export function staleReason(lock: Lockfile, inputs: LockInputs): string {
  if (inputs.installedDigest === undefined) return "the spec's apt inputs changed since it was written";
  if (lock.installedDigest === undefined) return "the spec's apt inputs or the base image's installed packages changed since it was written";
  if (lock.installedDigest !== inputs.installedDigest && inputsDigest({ ...inputs, installedDigest: lock.installedDigest }) === lock.inputsDigest) {
    return "the base image's installed packages (its dpkg status) changed since it was written: the base reference now names another image";
  }
  return "the spec's apt inputs changed since it was written";
}

export function formatLockfile(lock: Lockfile, inputs: LockInputs): string {
  const header: Array<[string, string]> = [
    ['Lock-Format', String(lock.format)],
    ['Generated-By', 'ocibuild lock (do not edit; run ocibuild lock to update)'],
    ['Architecture', lock.arch],
    ['Inputs-Digest', lock.inputsDigest],
    ...(inputs.installedDigest !== undefined ? ([['Base-Status-Digest', inputs.installedDigest]] as Array<[string, string]>) : []),
    ['Requested', lock.requested.length ? lock.requested.join(', ') : '(none)'],
    ['Install', inputs.install + (inputs.essential ? ' (with Essential: yes packages)' : '')],
    ['Recommends', inputs.recommends ? 'yes' : 'no'],
    ['Sources', ''],
    ['Packages-Count', String(lock.entries.length)],
  ];
  const sourceLines = inputs.sources.flatMap((s) => s.suites.map((suite) => ` ${s.url} ${suite} ${s.components.join(' ')}`));
  const out: string[] = [];
  for (const [k, v] of header) {
    if (k === 'Sources') {
      out.push('Sources:');
      out.push(...sourceLines);
    } else out.push(`${k}: ${v}`);
  }
  out.push('');
  for (const e of lock.entries) {
    out.push(`Package: ${e.package}`);
    out.push(`Version: ${e.version}`);
    out.push(`Architecture: ${e.architecture}`);
    if (e.multiArch && e.multiArch !== 'no') out.push(`Multi-Arch: ${e.multiArch}`);
    if (e.essential) out.push('Essential: yes');
    if (e.source) out.push(`Source: ${e.source}`);
    out.push(`Filename: ${e.filename}`);
    out.push(`Size: ${e.size}`);
    out.push(`SHA256: ${e.sha256}`);
    out.push(`Source-URL: ${e.url}`);
    out.push(`Suite: ${e.suite}`);
    out.push(`Component: ${e.component}`);
    out.push(`Required-By: ${e.requiredBy.join(', ')}`);
    out.push('');
  }
  return out.join('\n');
}

/** Parses a lockfile; `where` is its path, used in errors with line numbers. */
export function parseLockfile(text: string, where: string): Lockfile {
  const paragraphs = splitParagraphs(text.replace(/\r\n?/g, "\n"), where);
  const head = paragraphs[0];
  if (!head || head.fields.get('lock-format') === undefined) {
    throw new OcibuildError('not an ocibuild lockfile (no Lock-Format header)', {
      where: `${where}:1`,
      hint: 'regenerate it with ocibuild lock',
    });
  }
  const format = Number(head.fields.get('lock-format'));
  if (format !== LOCK_FORMAT) {
    throw new OcibuildError(`unsupported lock format ${head.fields.get('lock-format')} (this ocibuild reads ${LOCK_FORMAT})`, {
      where: `${where}:${head.line}`,
      hint: 'regenerate it with this version: ocibuild lock',
    });
  }
  const get = (p: Paragraph, key: string): string => {
    const v = p.fields.get(key.toLowerCase());
    if (v === undefined || v === '') {
      throw new OcibuildError(`missing field ${key}`, { where: `${where}:${p.line}`, hint: 'regenerate the lockfile with ocibuild lock' });
    }
    return v;
  };
  const entries: LockEntry[] = paragraphs.slice(1).map((p) => {
    const size = Number(get(p, 'Size'));
    const sha256 = get(p, 'SHA256').toLowerCase();
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new OcibuildError(`bad Size ${p.fields.get('size')}`, { where: `${where}:${p.line}` });
    }
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new OcibuildError(`bad SHA256 ${sha256}`, { where: `${where}:${p.line}` });
    const entry: LockEntry = {
      package: get(p, 'Package'),
      version: get(p, 'Version'),
      architecture: get(p, 'Architecture'),
      filename: get(p, 'Filename'),
      size,
      sha256,
      url: get(p, 'Source-URL'),
      suite: get(p, 'Suite'),
      component: get(p, 'Component'),
      requiredBy: (p.fields.get('required-by') ?? '').split(',').map((x) => x.trim()).filter(Boolean),
    };
    const ma = p.fields.get('multi-arch');
    if (ma) entry.multiArch = ma;
    if (p.fields.get('essential') === 'yes') entry.essential = true;
    const src = p.fields.get('source');
    if (src) entry.source = src;
    return entry;
  });
  return {
    format,
    inputsDigest: get(head, 'Inputs-Digest'),
    arch: get(head, 'Architecture'),
    requested: (head.fields.get('requested') ?? '').split(',').map((x) => x.trim()).filter((x) => x && x !== '(none)'),
    entries,
    ...(head.fields.get('base-status-digest') ? { installedDigest: head.fields.get('base-status-digest')! } : {}),
  };
}

interface Paragraph {
  line: number;
  fields: Map<string, string>;
}

function splitParagraphs(text: string, where: string): Paragraph[] {
  const out: Paragraph[] = [];
  let cur: Paragraph | undefined;
  let lastKey: string | undefined;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.trim() === '') {
      cur = undefined;
      continue;
    }
    if (line.startsWith('#')) continue;
    if (!cur) {
      cur = { line: i + 1, fields: new Map() };
      out.push(cur);
    }
    if (line.startsWith(' ') || line.startsWith('\t')) {
      if (lastKey) cur.fields.set(lastKey, `${cur.fields.get(lastKey) ?? ''}\n${line.trim()}`.trim());
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) throw new OcibuildError(`malformed line ${JSON.stringify(line)}`, { where: `${where}:${i + 1}` });
    lastKey = line.slice(0, colon).toLowerCase();
    cur.fields.set(lastKey, line.slice(colon + 1).trim());
  }
  return out;
}
