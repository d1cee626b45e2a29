/**
 * `--depfile F`: a Make/Ninja depfile naming every input file a build reads, so that
 * a Make or Ninja rule around `ocibuild build` reruns exactly when one of them
 * changes (the seed's copen() idea, made a file other build tools understand).
 */
import path from 'node:path';
import { defaultKeyringPath } from '../apt/repository.js';
import type { Output } from '../oci/output.js';
import { sourcesForPlatform } from '../spec/presets.js';
import type { ImageSpec, Platform } from '../spec/types.js';
import { lockfilePath } from './lock.js';

/** The files a build of `spec` for `platforms` reads: spec, lockfiles, keyrings, added files. */
export function buildInputFiles(spec: ImageSpec, platforms: readonly Platform[]): string[] {
  const files = new Set<string>([path.resolve(spec.path)]);
  if (spec.apt && spec.apt.packages.length > 0) {
    for (const p of platforms) {
      files.add(path.resolve(lockfilePath(spec, p)));
      for (const s of sourcesForPlatform(spec, p)) files.add(path.resolve(s.keyring ?? defaultKeyringPath(s)));
    }
  }
  for (const f of spec.files) files.add(path.resolve(f.src));
  return [...files];
}

/**
 * The file a depfile rule names as its target: the digest file, else the output's
 * file, spelled as given (relative stays relative: Make compares target names as text).
 */
export function depfileTarget(output: Output | undefined, digestFile: string | undefined): string | undefined {
  if (digestFile) return digestFile;
  if (!output) return undefined;
  if (output.kind === 'oci') return path.join(output.dir, 'index.json');
  return output.file;
}

/** `target: dep dep…` with Make's escapes (space, #, $), one dependency per continued line. */
export function formatDepfile(target: string, deps: readonly string[]): string {
  const esc = (p: string): string => p.replace(/\\/g, '\\\\').replace(/ /g, '\\ ').replace(/#/g, '\\#').replace(/\$/g, '$$$$');
  return `${esc(target)}:${deps.map((d) => ` \\\n  ${esc(d)}`).join('')}\n`;
}
