/**
 * `--output` destinations, named the way containers/image (skopeo, podman) names
 * its transports: `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`,
 * `docker-archive:FILE[:REF]`. As there, the path ends at the first colon after the
 * transport, so a path cannot contain ':' but a REF (`name:tag`) can.
 */
import { OcibuildError, EXIT_USAGE } from '../errors.js';
import type { Store } from '../store/store.js';
import { normalizeRepoTag, writeDockerArchive, writeOciArchive } from './archive.js';
import { isIndex, type BuiltArtifact } from './index.js';
import { validateRefName, writeLayout } from './layout.js';

export type Output =
  | { kind: 'oci'; dir: string; tag?: string }
  | { kind: 'oci-archive'; file: string; tag?: string }
  | { kind: 'docker-archive'; file: string; ref?: string };

export interface WriteOutputOptions {
  store: Store;
  /** Used when the output spec names no tag (or, for docker-archive, no REF). */
  tag?: string;
  /** docker-archive without a REF: the image's name, e.g. the pulled reference (else `tag`). */
  dockerRef?: string;
  signal?: AbortSignal;
}

const USAGE_HINT = 'use oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME[:TAG]]';

export function parseOutput(spec: string): Output {
  const colon = spec.indexOf(':');
  const transport = colon < 0 ? spec : spec.slice(0, colon);
  const rest = colon < 0 ? '' : spec.slice(colon + 1);
  const next = rest.indexOf(':');
  const path = next < 0 ? rest : rest.slice(0, next);
  const suffix = next < 0 ? undefined : rest.slice(next + 1);
  const where = `--output ${spec}`;
  if (!['oci', 'oci-archive', 'docker-archive'].includes(transport) || colon < 0) {
    throw new OcibuildError(`unknown output ${JSON.stringify(spec)}`, { where, hint: USAGE_HINT, exitCode: EXIT_USAGE });
  }
  if (path === '') {
    throw new OcibuildError(`output ${JSON.stringify(spec)} names no path`, { where, hint: USAGE_HINT, exitCode: EXIT_USAGE });
  }
  if (suffix === '') {
    throw new OcibuildError(`output ${JSON.stringify(spec)} has an empty tag after ':'`, { where, hint: USAGE_HINT, exitCode: EXIT_USAGE });
  }
  if (transport === 'docker-archive') {
    if (suffix === undefined) return { kind: 'docker-archive', file: path };
    normalizeRepoTag(suffix, where);
    return { kind: 'docker-archive', file: path, ref: suffix };
  }
  if (suffix !== undefined) validateRefName(suffix, where);
  if (transport === 'oci') return suffix === undefined ? { kind: 'oci', dir: path } : { kind: 'oci', dir: path, tag: suffix };
  return suffix === undefined ? { kind: 'oci-archive', file: path } : { kind: 'oci-archive', file: path, tag: suffix };
}

export function formatOutput(out: Output): string {
  switch (out.kind) {
    case 'oci':
      return `oci:${out.dir}${out.tag !== undefined ? `:${out.tag}` : ''}`;
    case 'oci-archive':
      return `oci-archive:${out.file}${out.tag !== undefined ? `:${out.tag}` : ''}`;
    case 'docker-archive':
      return `docker-archive:${out.file}${out.ref !== undefined ? `:${out.ref}` : ''}`;
  }
}

/**
 * Why `out` cannot hold an image index (several platforms), or undefined when it can.
 * Builders ask before doing any work, so the refusal never comes after a long build.
 */
export function indexUnsupported(out: Output): string | undefined {
  // docker save / docker load: manifest.json has one config per image, with no platform.
  return out.kind === 'docker-archive' ? 'docker-archive holds one platform (docker load has no image index)' : undefined;
}

/** The usage error for an output that cannot hold `platforms` platforms. */
export function indexOutputError(out: Output, platforms: number): OcibuildError {
  return new OcibuildError(`${indexUnsupported(out) ?? 'this output holds one platform'}; this build has ${platforms} platforms`, {
    where: `--output ${formatOutput(out)}`,
    hint: 'build one platform with --platform, or write all of them to oci:DIR[:TAG] or oci-archive:FILE[:TAG]',
    exitCode: EXIT_USAGE,
  });
}

/** Writes an image or an image index to `out`; on failure the destination is as it was before. */
export async function writeOutput(out: Output, image: BuiltArtifact, opts: WriteOutputOptions): Promise<void> {
  const signal = opts.signal ? { signal: opts.signal } : {};
  switch (out.kind) {
    case 'oci': {
      const tag = out.tag ?? opts.tag;
      await writeLayout(out.dir, image, { store: opts.store, ...signal, ...(tag !== undefined ? { tag } : {}) });
      return;
    }
    case 'oci-archive': {
      const tag = out.tag ?? opts.tag;
      await writeOciArchive(out.file, image, { ...signal, ...(tag !== undefined ? { tag } : {}) });
      return;
    }
    case 'docker-archive': {
      if (isIndex(image)) throw indexOutputError(out, image.images.length);
      const ref = out.ref ?? opts.dockerRef ?? opts.tag;
      await writeDockerArchive(out.file, image, { ...signal, ...(ref !== undefined ? { ref } : {}) });
      return;
    }
  }
}
