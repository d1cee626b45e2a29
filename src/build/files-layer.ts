/**
 * The files layer: each `files:` entry at its destination in the image below.
 *
 * A destination is resolved against the layers under it as the runtime will see them:
 * a symlinked parent is followed (with merged /usr, /bin/tool lands in usr/bin/tool, and
 * /bin stays the link), a parent the image already has is repeated with the owner,
 * mode and date it has there (/tmp keeps 1777, /root 0700: a layer's directory entry
 * sets them), and only parents it lacks are made, root 0755. A parent that is a file
 * below is an error.
 *
 * Every date is SOURCE_DATE_EPOCH: a checkout's file times must not reach the image.
 */
import { createHash } from 'node:crypto';
import { constants as fsConstants, createReadStream, type Stats } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { OcibuildError } from '../errors.js';
import { fileContent } from '../layer/content.js';
import type { LayerEntry } from '../layer/entry.js';
import type { Layer } from '../oci/image.js';
import { scanLayers, type PathHit } from '../oci/layer-scan.js';
import type { FileEntry, ImageSpec } from '../spec/types.js';

/** Symlinks followed per destination before giving up (as the kernel's ELOOP). */
const MAX_LINKS = 40;

/** Each files: source is a readable regular file (the error names its spec line). */
export async function checkFileSources(spec: ImageSpec): Promise<void> {
  for (const f of spec.files) await fileSource(spec, f);
}

async function fileSource(spec: ImageSpec, f: FileEntry): Promise<Stats> {
  const where = f.where ?? spec.path;
  const st = await stat(f.src).catch((err: NodeJS.ErrnoException) => {
    const why = err.code === 'ENOENT' ? 'no such file' : err.code === 'EACCES' ? 'permission denied' : (err.code ?? err.message);
    throw new OcibuildError(`files: cannot read ${f.src}: ${why}`, { where, hint: 'src is relative to the spec file' });
  });
  if (!st.isFile()) {
    throw new OcibuildError(`files: ${f.src} is ${st.isDirectory() ? 'a directory' : 'not a regular file'}`, {
      where,
      hint: 'files: copies regular files, one entry per file; copy a directory in a RUN line or list its files',
    });
  }
  await access(f.src, fsConstants.R_OK).catch(() => {
    throw new OcibuildError(`files: cannot read ${f.src}: permission denied`, { where, hint: 'make it readable by the user running ocibuild' });
  });
  return st;
}

/** What decides the layer's bytes besides the layers below: content hash, destination, mode, owner. */
export async function fileIdentity(f: FileEntry): Promise<unknown> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(f.src), hash).catch(() => undefined);
  const st = await stat(f.src).catch(() => undefined);
  return { dest: f.dest, sha256: hash.digest('hex'), mode: f.mode ?? (st ? st.mode & 0o7777 : 0), uid: f.uid ?? 0, gid: f.gid ?? 0 };
}

export async function filesLayerEntries(spec: ImageSpec, sde: number, below: readonly Layer[]): Promise<LayerEntry[]> {
  const resolver = new LowerTree(below);
  const tree = new Map<string, LayerEntry>();
  for (const f of spec.files) {
    const st = await fileSource(spec, f);
    const { path: dest, parents } = await resolver.resolve(f.dest.replace(/^\/+/, ''), f.where ?? spec.path);
    for (const { path: p, hit } of parents) {
      if (tree.has(p)) continue;
      tree.set(p, hit ? { type: 'directory', path: p, mode: hit.mode, uid: hit.uid, gid: hit.gid, mtime: hit.mtime } : { type: 'directory', path: p, mode: 0o755, uid: 0, gid: 0, mtime: sde });
    }
    const existing = tree.get(dest);
    if (existing && existing.type !== 'file') {
      throw new OcibuildError(`files: ${f.dest} lands on ${dest}, a directory another entry needs`, { where: f.where ?? spec.path, hint: 'choose destinations that do not nest' });
    }
    tree.set(dest, { type: 'file', path: dest, mode: f.mode ?? st.mode & 0o7777, uid: f.uid ?? 0, gid: f.gid ?? 0, mtime: sde, size: st.size, content: fileContent(f.src) });
  }
  return [...tree.values()];
}

/** Kinds of paths in a stack of layers, looked up in batches (each lookup reads the layers once). */
class LowerTree {
  private readonly kinds = new Map<string, PathHit | null>();

  constructor(private readonly layers: readonly Layer[]) {}

  /** `rel` with its parents' symlinks followed, and its parents: the existing ones with their metadata, the missing ones without. */
  async resolve(rel: string, where: string): Promise<{ path: string; parents: Array<{ path: string; hit: PathHit | null }> }> {
    let parts = rel.split('/');
    for (let hops = 0; ; ) {
      const prefixes = parts.slice(0, -1).map((_, i) => parts.slice(0, i + 1).join('/'));
      await this.lookup(prefixes);
      let restarted = false;
      const parents: Array<{ path: string; hit: PathHit | null }> = [];
      for (const [i, prefix] of prefixes.entries()) {
        const hit = this.kinds.get(prefix) ?? null;
        if (hit === null) return { path: parts.join('/'), parents: [...parents, ...prefixes.slice(i).map((p) => ({ path: p, hit: null }))] };
        if (hit.kind === 'directory') {
          parents.push({ path: prefix, hit });
          continue;
        }
        if (hit.kind === 'symlink') {
          if (++hops > MAX_LINKS) throw new OcibuildError(`files: too many symlinks resolving /${rel} in the image below`, { where });
          const target = hit.linkname ?? '';
          // Resolved inside the image's root, as the runtime resolves it: never above /.
          const joined = target.startsWith('/') ? target : path.posix.join(path.posix.dirname(`/${prefix}`), target);
          const inside = path.posix.normalize(`/${joined}`).replace(/^\/+/, '');
          parts = [...(inside === '' ? [] : inside.split('/')), ...parts.slice(i + 1)];
          restarted = true;
          break;
        }
        throw new OcibuildError(`files: /${rel} cannot be written: /${prefix} is a file in the image below, not a directory`, { where, hint: 'choose a destination under a directory' });
      }
      if (!restarted) return { path: parts.join('/'), parents };
    }
  }

  private async lookup(paths: string[]): Promise<void> {
    const wanted = paths.filter((p) => !this.kinds.has(p));
    if (wanted.length === 0 || this.layers.length === 0) {
      for (const p of wanted) this.kinds.set(p, null);
      return;
    }
    const scan = await scanLayers(this.layers, [], wanted);
    for (const p of wanted) this.kinds.set(p, scan.kinds.get(p) ?? null);
  }
}
