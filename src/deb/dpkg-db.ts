/**
 * The dpkg database of packages installed by unpacking (install: unpack): what
 * `var/lib/dpkg` holds after `dpkg --install`, so that dpkg, apt, dpkg-query and
 * scanners (trivy, syft) see the packages as installed. Pure: text in, text out.
 *
 * Field order and file formats follow what dpkg itself writes (lib/dpkg/parse.c's
 * field table for status; info/<pkg>.list, .md5sums, .conffiles).
 */

/** dpkg's status field order (fieldinfos in lib/dpkg/parse.c); other fields follow in their own order. */
const STATUS_ORDER = [
  'Package', 'Essential', 'Protected', 'Status', 'Priority', 'Section', 'Installed-Size', 'Origin', 'Maintainer',
  'Bugs', 'Architecture', 'Multi-Arch', 'Source', 'Version', 'Config-Version', 'Replaces', 'Provides', 'Depends',
  'Pre-Depends', 'Recommends', 'Suggests', 'Breaks', 'Conflicts', 'Enhances', 'Conffiles', 'Description',
  'Triggers-Pending', 'Triggers-Awaited',
];
const ORDER_INDEX = new Map(STATUS_ORDER.map((f, i) => [f.toLowerCase(), i]));

/** Control fields dpkg does not keep in the status file (they describe the archive, not the install). */
const NOT_IN_STATUS = new Set(['filename', 'size', 'md5sum', 'sha1', 'sha256', 'description-md5', 'status', 'conffiles']);

export interface InstalledDeb {
  /** The control paragraph's fields, names as written, values as written (multi-line values keep their continuation lines). */
  fields: Map<string, string>;
  /**
   * The conffiles (control.tar's conffiles) with the md5 of the content installed:
   * dpkg computes it at install time (md5sums usually leaves conffiles out).
   */
  conffiles: Array<{ path: string; md5: string }>;
}

/** The paragraph dpkg writes to var/lib/dpkg/status for a package it has configured. */
export function statusParagraph(deb: InstalledDeb): string {
  const entries: Array<[string, string]> = [];
  for (const [name, value] of deb.fields) if (!NOT_IN_STATUS.has(name.toLowerCase())) entries.push([name, value]);
  entries.push(['Status', 'install ok installed']);
  if (deb.conffiles.length > 0) {
    entries.push(['Conffiles', '\n' + deb.conffiles.map((c) => ` ${c.path} ${c.md5}`).join('\n')]);
  }
  const rank = (name: string): number => ORDER_INDEX.get(name.toLowerCase()) ?? STATUS_ORDER.length;
  // A stable sort keeps unknown fields in their original order after the known ones.
  const sorted = entries.map((e, i) => ({ e, i })).sort((a, b) => rank(a.e[0]) - rank(b.e[0]) || a.i - b.i);
  return sorted.map(({ e: [k, v] }) => (v.startsWith('\n') ? `${k}:${v}` : `${k}: ${v}`)).join('\n') + '\n';
}

/** var/lib/dpkg/status: paragraphs sorted by package name (then architecture), as dpkg writes it. */
export function statusFile(debs: InstalledDeb[]): string {
  const key = (d: InstalledDeb): string => `${d.fields.get('Package') ?? ''}\0${d.fields.get('Architecture') ?? ''}`;
  return [...debs]
    .sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0))
    .map(statusParagraph)
    .join('\n');
}

/** The name dpkg gives a package's info files: "pkg", or "pkg:arch" for Multi-Arch: same. */
export function infoName(fields: Map<string, string>): string {
  const pkg = fields.get('Package') ?? '';
  const ma = (fields.get('Multi-Arch') ?? '').trim();
  return ma === 'same' ? `${pkg}:${(fields.get('Architecture') ?? '').trim()}` : pkg;
}

/**
 * info/<pkg>.list: "/." then every path the package installed, directories
 * included, in archive order, absolute, without trailing slashes.
 */
export function listFile(paths: string[]): string {
  const out = ['/.'];
  for (const p of paths) {
    const clean = p.replace(/^\.?\/*/, '').replace(/\/+$/, '');
    if (clean !== '') out.push(`/${clean}`);
  }
  return out.join('\n') + '\n';
}

/** info/<pkg>.conffiles: one absolute path a line. */
export function conffilesFile(conffiles: Array<{ path: string }>): string {
  return conffiles.map((c) => `${c.path}\n`).join('');
}

/**
 * var/lib/dpkg/status of a base image extended by packages unpacked on top: the base's
 * paragraphs kept as they are, except those a newly installed package replaces (same
 * name, or same name and architecture for Multi-Arch: same), all sorted as dpkg does.
 */
export function mergeStatus(baseText: string, debs: InstalledDeb[]): string {
  const keyOf = (pkg: string, arch: string, multiArch: string): string => (multiArch === 'same' ? `${pkg}:${arch}` : pkg);
  const replaced = new Set(debs.map((d) => keyOf(field(d.fields, 'Package'), field(d.fields, 'Architecture'), field(d.fields, 'Multi-Arch'))));
  const all: Array<{ sort: string; text: string }> = [];
  for (const para of baseText.replace(/\r\n?/g, '\n').split(/\n{2,}/)) {
    const text = para.replace(/^\n+|\n+$/g, '');
    if (text === '') continue;
    const get = (name: string): string => new RegExp(`^${name}:[ \\t]*(.*)$`, 'mi').exec(text)?.[1]?.trim() ?? '';
    const pkg = get('Package');
    const arch = get('Architecture');
    if (replaced.has(keyOf(pkg, arch, get('Multi-Arch')))) continue;
    all.push({ sort: `${pkg}\0${arch}`, text: `${text}\n` });
  }
  for (const d of debs) all.push({ sort: `${field(d.fields, 'Package')}\0${field(d.fields, 'Architecture')}`, text: statusParagraph(d) });
  return all
    .sort((a, b) => (a.sort < b.sort ? -1 : a.sort > b.sort ? 1 : 0))
    .map((p) => p.text)
    .join('\n');
}

function field(fields: Map<string, string>, name: string): string {
  return (fields.get(name) ?? '').trim();
}
