/**
 * `ocibuild inspect oci:DIR[:TAG]`: a person-readable summary of one image in an
 * OCI layout, or of an image index and each of its platform images. Every document
 * read is checked against its descriptor first.
 */
import { OcibuildError } from '../errors.js';
import { isSha256Digest, type Descriptor } from './descriptor.js';
import { readIndex, readLayoutBlob, selectManifest } from './layout.js';
import { parseLayoutRef } from './read-layout.js';
import { isIndexType, isManifestType } from './media-types.js';

interface ManifestDoc {
  config: { digest: string; size: number; mediaType: string };
  layers: Array<{ digest: string; size: number; mediaType: string }>;
  annotations?: Record<string, string>;
}

interface IndexDoc {
  manifests: Array<{ mediaType: string; digest: string; size: number; platform?: { os?: string; architecture?: string; variant?: string } }>;
  annotations?: Record<string, string>;
}

interface ConfigDoc {
  architecture?: string;
  os?: string;
  variant?: string;
  created?: string;
  config?: {
    Env?: string[];
    Entrypoint?: string[];
    Cmd?: string[];
    WorkingDir?: string;
    User?: string;
    Labels?: Record<string, string>;
    ExposedPorts?: Record<string, unknown>;
  };
  history?: Array<{ created_by?: string; comment?: string; empty_layer?: boolean }>;
}

export async function inspectLayout(dirWithTag: string): Promise<string> {
  const { dir, tag } = parseLayoutRef(dirWithTag);
  const { manifests } = await readIndex(dir).catch((err: unknown) => {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new OcibuildError('no OCI image layout here (index.json missing)', { where: dir, cause: err });
    }
    throw err;
  });
  const desc = selectManifest(manifests.map((m) => m.descriptor), tag, `oci:${dir}`);
  if (isIndexType(desc.mediaType)) return inspectIndex(dir, dirWithTag, desc);
  if (!isManifestType(desc.mediaType)) {
    throw new OcibuildError(`the tag names a ${desc.mediaType}, not an image manifest`, { where: dirWithTag });
  }
  return inspectManifest(dir, dirWithTag, desc);
}

async function inspectManifest(dir: string, name: string, desc: Descriptor): Promise<string> {
  const manifest = parseDoc<ManifestDoc>(await readLayoutBlob(dir, desc), name);
  const configDesc: Descriptor = manifest.config;
  const config = parseDoc<ConfigDoc>(await readLayoutBlob(dir, configDesc), name);
  return formatInspect(name, desc, manifest, config);
}

/** An image index: its digest, platforms and annotations, then each platform's image. */
async function inspectIndex(dir: string, name: string, desc: Descriptor): Promise<string> {
  const index = parseDoc<IndexDoc>(await readLayoutBlob(dir, desc), name);
  const entries = Array.isArray(index.manifests) ? index.manifests : [];
  const lines = [
    `${'Image'.padEnd(12)}${name}`,
    `${'Index'.padEnd(12)}${desc.digest} (${desc.size} bytes, ${desc.mediaType})`,
  ];
  const platformOf = (m: IndexDoc['manifests'][number]): string =>
    m.platform ? [m.platform.os, m.platform.architecture, m.platform.variant].filter(Boolean).join('/') : '-';
  entries.forEach((m, i) => lines.push(`${(i === 0 ? 'Platforms' : '').padEnd(12)}${platformOf(m).padEnd(16)} ${m.digest}`));
  const annotations = Object.entries(index.annotations ?? {}).map(([k, v]) => `${k}=${v}`);
  annotations.forEach((a, i) => lines.push(`${(i === 0 ? 'Annotations' : '').padEnd(12)}${a}`));
  const parts = [`${lines.join('\n')}\n`];
  for (const m of entries) {
    if (!isSha256Digest(m.digest) || !Number.isSafeInteger(m.size)) {
      throw new OcibuildError('the image index has an entry without a sha256 digest and size', { where: name, hint: 'the layout is damaged; write the image again' });
    }
    if (!isManifestType(m.mediaType)) {
      parts.push(`${'Image'.padEnd(12)}${name} ${platformOf(m)}\n${'Manifest'.padEnd(12)}${m.digest} (${m.mediaType}, not shown)\n`);
      continue;
    }
    parts.push(await inspectManifest(dir, `${name} ${platformOf(m)}`, { mediaType: m.mediaType, digest: m.digest, size: m.size }));
  }
  return parts.join('\n');
}

function parseDoc<T>(bytes: Buffer, where: string): T {
  try {
    return JSON.parse(bytes.toString('utf8')) as T;
  } catch (err) {
    throw new OcibuildError(`a document of the image is not valid JSON: ${(err as Error).message}`, { where });
  }
}

/** The name the CLI uses. */
export const inspectImage = inspectLayout;

export function formatInspect(name: string, desc: Descriptor, manifest: ManifestDoc, config: ConfigDoc): string {
  const c = config.config ?? {};
  const platform = [config.os, config.architecture, config.variant].filter(Boolean).join('/');
  const rows: Array<[string, string]> = [
    ['Image', name],
    ['Manifest', `${desc.digest} (${desc.size} bytes, ${desc.mediaType})`],
    ['Config', `${manifest.config.digest} (${manifest.config.size} bytes)`],
    ['Platform', platform || '-'],
    ['Created', config.created ?? '-'],
    ['Entrypoint', c.Entrypoint ? JSON.stringify(c.Entrypoint) : '-'],
    ['Cmd', c.Cmd ? JSON.stringify(c.Cmd) : '-'],
    ['WorkingDir', c.WorkingDir || '-'],
    ['User', c.User || '-'],
  ];
  const lines = rows.map(([k, v]) => `${k.padEnd(12)}${v}`);
  const list = (title: string, items: string[]): void => {
    lines.push(`${title.padEnd(12)}${items.length === 0 ? '-' : items[0]}`);
    for (const item of items.slice(1)) lines.push(`${''.padEnd(12)}${item}`);
  };
  list('Env', c.Env ?? []);
  list('Ports', Object.keys(c.ExposedPorts ?? {}));
  list('Labels', Object.entries(c.Labels ?? {}).map(([k, v]) => `${k}=${v}`));
  list('Annotations', Object.entries(manifest.annotations ?? {}).map(([k, v]) => `${k}=${v}`));

  // config.md: history entries with empty_layer have no layer; the rest pair up in order.
  const made = (config.history ?? []).filter((h) => !h.empty_layer);
  const table = manifest.layers.map((l, i) => [l.digest, formatSize(l.size), made[i]?.created_by ?? '-']);
  const header = ['DIGEST', 'SIZE', 'CREATED BY'];
  const width = [0, 1].map((col) => Math.max(header[col]!.length, ...table.map((r) => r[col]!.length)));
  const row = (r: string[]): string => `${r[0]!.padEnd(width[0]!)}  ${r[1]!.padStart(width[1]!)}  ${r[2]}`.trimEnd();
  lines.push('', `Layers (${manifest.layers.length})`, row(header), ...table.map(row));
  return `${lines.join('\n')}\n`;
}

function formatSize(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(1)} ${units[u]}`;
}
