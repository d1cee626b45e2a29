/**
 * ocibuild's programmatic API: build steps as values, composed in code the way the
 * seed system's `docker_pull` / `docker_apt_install` / `docker_mod` helpers were.
 *
 *   const base = aptInstall(from('docker.io/library/debian:12'), { packages: ['python3'] });
 *   const api = image(addFiles(run(base, 'useradd app'), [{ src: 'server', dest: '/srv/server', mode: 0o755 }]));
 *   const worker = image(run(base, 'useradd worker'));
 *   await build([api, worker], { output: (i) => `oci:out:${i}` });
 *
 * A step is an immutable value naming its parent; the types allow the order an image
 * has (base → apt → run → files), each at most once. `image()` turns the chain into
 * the same validated spec image.yaml gives (src/spec/parse.ts checks both), and
 * `build()` runs the same engine as `ocibuild build`. Steps shared by several images
 * are built once: every layer is cached in the store under the key of its inputs, so
 * the second image finds the shared base pull and apt layer done.
 */
import path from 'node:path';
import { buildFromSpec, type BuildOptions, type BuildResult } from './build/build.js';
import { specFromObject } from './spec/parse.js';
import type { ImageSpec } from './spec/types.js';
import { parseReference } from './registry/reference.js';
import { Store } from './store/store.js';

export type { BuildResult, Compression } from './build/build.js';
export type { ImageSpec } from './spec/types.js';
export { OcibuildError } from './errors.js';
export { loadSpec, parseSpec } from './spec/parse.js';

/** `scratch()` or `from(ref)`: where an image starts. */
export interface BaseStep {
  readonly kind: 'base';
  /** A registry reference, or "scratch". */
  readonly ref: string;
}

export interface AptSourceOptions {
  url: string;
  suites: string[];
  components: string[];
  /** Path to an OpenPGP keyring (relative to the image's `dir`). */
  keyring?: string;
}

export interface AptOptions {
  /** `name`, `name=version` or `name:arch`. */
  packages: string[];
  /** Default: derived from `debianVersion`/`ubuntuVersion` or from a debian/ubuntu base reference. */
  sources?: AptSourceOptions[];
  debianVersion?: string;
  ubuntuVersion?: string;
  /** `dpkg` (maintainer scripts run in the sandbox; default on a base image) or `unpack` (default from scratch). */
  install?: 'dpkg' | 'unpack';
  recommends?: boolean;
  /** Lockfile path template (relative to the image's `dir`), may use {suite} and {arch}. */
  lockfile?: string;
}

export interface AptStep {
  readonly kind: 'apt';
  readonly parent: BaseStep;
  readonly options: Readonly<AptOptions>;
}

export interface RunOptions {
  network?: boolean;
  user?: string;
  workdir?: string;
  env?: Record<string, string>;
  /** Mounted at /run/secrets/<id> from a file (relative to `dir`) or an environment variable. */
  secrets?: Array<{ id: string; src: string } | { id: string; env: string }>;
  /** Directories kept between builds in the store, mounted writable, never in the layer. */
  cache?: Array<string | { target: string; id?: string }>;
}

export interface RunStep {
  readonly kind: 'run';
  readonly parent: BaseStep | AptStep;
  readonly commands: readonly string[];
  readonly options: Readonly<RunOptions>;
}

export interface FileOptions {
  /** Relative to the image's `dir`. */
  src: string;
  /** Absolute path in the image. */
  dest: string;
  /** Octal number (0o755) or string ("0755"). */
  mode?: number | string;
  uid?: number;
  gid?: number;
}

export interface FilesStep {
  readonly kind: 'files';
  readonly parent: BaseStep | AptStep | RunStep;
  readonly files: readonly FileOptions[];
}

export type Step = BaseStep | AptStep | RunStep | FilesStep;

export interface ImageOptions {
  /** Runtime config: as `config:` in image.yaml. */
  config?: {
    env?: Record<string, string>;
    entrypoint?: string[];
    cmd?: string[];
    workdir?: string;
    user?: string;
    labels?: Record<string, string>;
    expose?: Array<string | number>;
  };
  annotations?: Record<string, string>;
  /** e.g. ['linux/amd64', 'linux/arm64'] (default linux/amd64). */
  platforms?: string[];
  sandbox?: 'auto' | 'bwrap' | 'nspawn';
  /** Directory relative paths (files, keyrings, lockfiles) are resolved against; default: the working directory. */
  dir?: string;
  /** A name for messages and the default lockfile's place (default "image"). */
  name?: string;
}

/** An image: the top step of its chain and its runtime settings. */
export interface ImageDef {
  readonly kind: 'image';
  readonly top: Step;
  readonly options: Readonly<ImageOptions>;
}

export function scratch(): BaseStep {
  return Object.freeze({ kind: 'base', ref: 'scratch' });
}

/** A registry base image, e.g. `docker.io/library/debian:12`; checked now, pulled when built. */
export function from(ref: string): BaseStep {
  if (ref !== 'scratch') parseReference(ref, 'from()');
  return Object.freeze({ kind: 'base', ref });
}

export function aptInstall(parent: BaseStep, options: AptOptions): AptStep {
  return Object.freeze({ kind: 'apt', parent, options: Object.freeze({ ...options }) });
}

/** RUN lines: one sandboxed step (`/bin/sh -c`, `set -e`), one layer. */
export function run(parent: BaseStep | AptStep, commands: string | string[], options: RunOptions = {}): RunStep {
  const list = typeof commands === 'string' ? [commands] : [...commands];
  return Object.freeze({ kind: 'run', parent, commands: Object.freeze(list), options: Object.freeze({ ...options }) });
}

export function addFiles(parent: BaseStep | AptStep | RunStep, files: FileOptions[]): FilesStep {
  return Object.freeze({ kind: 'files', parent, files: Object.freeze(files.map((f) => Object.freeze({ ...f }))) });
}

export function image(top: Step, options: ImageOptions = {}): ImageDef {
  return Object.freeze({ kind: 'image', top, options: Object.freeze({ ...options }) });
}

/** The chain from the base up, one step of each kind at most (the types guarantee it). */
function chain(top: Step): { base: BaseStep; apt?: AptStep; run?: RunStep; files?: FilesStep } {
  const out: { base?: BaseStep; apt?: AptStep; run?: RunStep; files?: FilesStep } = {};
  for (let s: Step | undefined = top; s; s = s.kind === 'base' ? undefined : s.parent) {
    if (s.kind === 'base') out.base = s;
    else if (s.kind === 'apt') out.apt = s;
    else if (s.kind === 'run') out.run = s;
    else out.files = s;
  }
  return out as { base: BaseStep; apt?: AptStep; run?: RunStep; files?: FilesStep };
}

/**
 * The image as the validated spec `ocibuild build` would read from image.yaml: the
 * chain written with image.yaml's keys and checked by the same parser.
 */
export function toSpec(img: ImageDef): ImageSpec {
  const c = chain(img.top);
  const o = img.options;
  const doc: Record<string, unknown> = { from: c.base.ref };
  if (c.apt) {
    const a = c.apt.options;
    if (a.debianVersion !== undefined) doc.debian_version = a.debianVersion;
    if (a.ubuntuVersion !== undefined) doc.ubuntu_version = a.ubuntuVersion;
    doc.apt = {
      packages: [...a.packages],
      ...(a.sources ? { sources: a.sources.map((s) => ({ ...s })) } : {}),
      ...(a.install ? { install: a.install } : {}),
      ...(a.recommends !== undefined ? { recommends: a.recommends } : {}),
      ...(a.lockfile ? { lockfile: a.lockfile } : {}),
    };
  }
  if (c.run) {
    const r = c.run.options;
    doc.run = {
      commands: [...c.run.commands],
      ...(r.network !== undefined ? { network: r.network } : {}),
      ...(r.user !== undefined ? { user: r.user } : {}),
      ...(r.workdir !== undefined ? { workdir: r.workdir } : {}),
      ...(r.env ? { env: { ...r.env } } : {}),
      ...(r.secrets ? { secrets: r.secrets.map((s) => ({ ...s })) } : {}),
      ...(r.cache ? { cache: r.cache.map((x) => (typeof x === 'string' ? x : { ...x })) } : {}),
    };
  }
  if (c.files) {
    doc.files = c.files.files.map((f) => ({
      ...f,
      // The parser reads modes as written octal text; a number from code is its value.
      ...(typeof f.mode === 'number' ? { mode: f.mode.toString(8).padStart(4, '0') } : {}),
    }));
  }
  if (o.config) doc.config = { ...o.config, ...(o.config.expose ? { expose: o.config.expose.map(String) } : {}) };
  if (o.annotations) doc.annotations = { ...o.annotations };
  if (o.platforms) doc.platforms = [...o.platforms];
  if (o.sandbox) doc.sandbox = o.sandbox;
  const dir = path.resolve(o.dir ?? process.cwd());
  return specFromObject(doc, path.join(dir, o.name ?? 'image'));
}

export interface ApiBuildOptions extends Omit<BuildOptions, 'store' | 'output'> {
  /** The store (default: $OCIBUILD_CACHE, $XDG_CACHE_HOME/ocibuild, ~/.cache/ocibuild). */
  cacheDir?: string;
  /** Where each image goes (oci:DIR[:TAG], …): a string for one image, or per image by its index. */
  output?: string | ((index: number, img: ImageDef) => string | undefined);
}

/**
 * Builds one image, or several in order against one store: steps they share (the
 * base pull, the apt layer, …) are built by the first and taken from the layer cache
 * by the others. Resolves with one result per image.
 */
export async function build(img: ImageDef, options?: ApiBuildOptions): Promise<BuildResult>;
export async function build(imgs: ImageDef[], options?: ApiBuildOptions): Promise<BuildResult[]>;
export async function build(what: ImageDef | ImageDef[], options: ApiBuildOptions = {}): Promise<BuildResult | BuildResult[]> {
  const list = Array.isArray(what) ? what : [what];
  const { cacheDir, output, ...rest } = options;
  const store = new Store(cacheDir ? path.resolve(cacheDir) : Store.defaultRoot());
  const specs = list.map(toSpec);
  const results: BuildResult[] = [];
  for (const [i, spec] of specs.entries()) {
    const out = typeof output === 'function' ? output(i, list[i]!) : output;
    results.push(await buildFromSpec(spec, { ...rest, store, ...(out !== undefined ? { output: out } : {}) }));
  }
  return Array.isArray(what) ? results : results[0]!;
}
