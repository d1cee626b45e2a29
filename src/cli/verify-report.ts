/**
 * What `ocibuild verify` prints: per platform a table (layer, created_by, diffId match,
 * digest match, then the config and the manifest), and for every mismatch what
 * differs — paths and fields of a layer, a compressor, members of a document. Pure text
 * from a VerifyResult.
 */
import type { VerifyResult } from '../build/verify.js';
import type { DocumentComparison, ImageComparison, LayerRow } from '../oci/image-diff.js';
import { formatJsonDifference } from '../oci/json-diff.js';
import { formatPathDifference } from '../oci/layer-diff.js';

const CREATED_BY_WIDTH = 56;

export function formatTable(r: VerifyResult): string {
  const lines: string[] = [];
  for (const p of r.platforms) {
    lines.push(`${p.platform} (${r.labels.a} vs ${r.labels.b}):`);
    if (!p.comparison) {
      lines.push(`  only in ${p.onlyIn === 'a' ? r.labels.a : r.labels.b}`);
      continue;
    }
    const rows: string[][] = [['LAYER', 'CREATED BY', 'DIFFID', 'DIGEST']];
    for (const l of p.comparison.layers) rows.push([String(l.index), cut(l.createdBy), matchWord(l, 'diffId'), matchWord(l, 'digest')]);
    rows.push(['config', '', '-', p.comparison.config.match ? 'match' : 'DIFFERS']);
    rows.push(['manifest', '', '-', p.comparison.manifest.match ? 'match' : 'DIFFERS']);
    lines.push(...columns(rows).map((l) => `  ${l}`));
  }
  if (r.index) lines.push(`image index: ${r.index.match ? 'match' : 'DIFFERS'}`);
  if (r.shape) lines.push(`top level: ${r.shape}`);
  return `${lines.join('\n')}\n`;
}

/** Empty when everything matches. */
export function formatDifferences(r: VerifyResult): string {
  const labels = r.labels;
  const out: string[] = [];
  for (const p of r.platforms) {
    const where = r.platforms.length > 1 ? `${p.platform} ` : '';
    if (!p.comparison) {
      out.push(`${where || `${p.platform} `}image: only in ${p.onlyIn === 'a' ? labels.a : labels.b}`);
      continue;
    }
    out.push(...imageDifferences(p.comparison, where, labels));
  }
  if (r.index && !r.index.match) out.push(...documentDifferences('image index', r.index));
  if (r.shape) out.push(`top level: ${r.shape}`);
  if (out.length === 0) return '';
  return `differences (${labels.a} vs ${labels.b}):\n${out.join('\n')}\n`;
}

function imageDifferences(c: ImageComparison, where: string, labels: { a: string; b: string }): string[] {
  const out: string[] = [];
  for (const l of c.layers) {
    const name = `${where}layer ${l.index}${l.createdBy ? ` (${cut(l.createdBy)})` : ''}`;
    if (!l.a || !l.b) {
      out.push(`${name}: only in ${l.a ? labels.a : labels.b}`);
      continue;
    }
    if (l.compression) out.push(`${name}: ${l.compression}`);
    if (!l.diff) continue;
    const d = l.diff;
    if (d.total === 0) {
      out.push(`${name}: the same entries, encoded differently (tar header format, pax records or padding)`);
    } else {
      out.push(`${name}: ${d.total} path${d.total === 1 ? '' : 's'} differ${d.total === 1 ? 's' : ''}`);
      for (const pd of d.differences) out.push(`  ${formatPathDifference(pd, labels)}`);
      if (d.total > d.differences.length) out.push(`  … and ${d.total - d.differences.length} more`);
    }
    // A diffId that is not the sha256 of the layer's tar: the image contradicts itself.
    if (d.diffIds.a !== l.a.diffId) out.push(`  ${labels.a}: the tar's sha256 is ${d.diffIds.a}, but the config says ${l.a.diffId}`);
    if (d.diffIds.b !== l.b.diffId) out.push(`  ${labels.b}: the tar's sha256 is ${d.diffIds.b}, but the config says ${l.b.diffId}`);
  }
  if (!c.config.match) out.push(...documentDifferences(`${where}config`, c.config));
  if (!c.manifest.match) out.push(...documentDifferences(`${where}manifest`, c.manifest));
  return out;
}

function documentDifferences(name: string, d: DocumentComparison): string[] {
  const head = `${name}: ${d.a.digest} vs ${d.b.digest}`;
  if (!d.diff) return [`${head} (not comparable as JSON)`];
  if (d.diff.total === 0) return [`${head}: the same members, serialized differently`];
  const out = [head];
  for (const m of d.diff.differences) out.push(`  ${formatJsonDifference(m)}`);
  if (d.diff.total > d.diff.differences.length) out.push(`  … and ${d.diff.total - d.diff.differences.length} more`);
  return out;
}

function matchWord(l: LayerRow, what: 'diffId' | 'digest'): string {
  if (!l.a || !l.b) return 'missing';
  return (what === 'diffId' ? l.diffIdMatch : l.digestMatch) ? 'match' : 'DIFFERS';
}

function cut(text: string): string {
  const one = text.replace(/\s+/g, ' ');
  return one.length > CREATED_BY_WIDTH ? `${one.slice(0, CREATED_BY_WIDTH - 1)}…` : one;
}

function columns(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd());
}
