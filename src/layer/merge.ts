/**
 * One layer's entries applied over another's, as a runtime stacks them (image-spec
 * layer.md "Applying Changesets"), giving the entries of a single layer with the same
 * result: `.wh.NAME` removes NAME and everything below it, `.wh..wh..opq` empties its
 * directory of the lower entries, an upper entry replaces the lower one of its path
 * (and a non-directory replacing a directory takes its subtree with it). No markers
 * remain. Used where two steps must become one layer (a bootstrap tree below a dpkg run).
 */
import { sortKey, type LayerEntry } from './entry.js';

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';

export function mergeLayerEntries(lower: readonly LayerEntry[], upper: readonly LayerEntry[]): LayerEntry[] {
  const removed = new Set<string>();
  const emptied = new Set<string>();
  const replaced = new Map<string, LayerEntry>();
  for (const e of upper) {
    const slash = e.path.lastIndexOf('/');
    const dir = slash < 0 ? '' : e.path.slice(0, slash);
    const name = e.path.slice(slash + 1);
    if (name === OPAQUE) emptied.add(dir);
    else if (name.startsWith(WHITEOUT)) removed.add(dir === '' ? name.slice(WHITEOUT.length) : `${dir}/${name.slice(WHITEOUT.length)}`);
    else {
      replaced.set(e.path, e);
      if (e.type !== 'directory') removed.add(e.path);
    }
  }
  // Gone: the path or an ancestor removed, or an ancestor (the root too) emptied.
  const gone = (p: string): boolean => {
    if (removed.has(p) || emptied.has('')) return true;
    for (let i = p.indexOf('/'); i >= 0; i = p.indexOf('/', i + 1)) {
      const dir = p.slice(0, i);
      if (removed.has(dir) || emptied.has(dir)) return true;
    }
    return false;
  };
  const lowerByPath = new Map(lower.map((e) => [e.path, e]));

  const out = new Map<string, LayerEntry>();
  for (const e of lower) {
    if (gone(e.path) || replaced.has(e.path)) continue;
    // A hard link whose target is gone or replaced keeps the content it had: the target's.
    if (e.type === 'hardlink' && (gone(e.target) || replaced.has(e.target))) {
      const target = lowerByPath.get(e.target);
      if (!target) throw new Error(`hard link ${e.path} to ${e.target}, which the lower entries lack`);
      out.set(e.path, { ...target, path: e.path } as LayerEntry);
      continue;
    }
    out.set(e.path, e);
  }
  // A hard link kept above may point at a lower link that became a file: fine, the
  // path still names a non-directory entry of the result.
  for (const e of replaced.values()) out.set(e.path, e);
  const keyed = [...out.values()].map((e) => ({ e, key: sortKey(e.path) }));
  keyed.sort((a, b) => Buffer.compare(a.key, b.key));
  return keyed.map(({ e }) => e);
}
