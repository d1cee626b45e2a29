/** The validated, normalized image spec: what image.yaml means, with defaults applied. */

export interface AptSource {
  /** Archive root, no trailing slash. */
  url: string;
  suites: string[];
  components: string[];
  /** Absolute path to an OpenPGP keyring (binary .gpg or armored .asc); undefined = default. */
  keyring?: string;
}

export type InstallMode = 'dpkg' | 'unpack';

/** A requested package: `name`, `name=version`, `name:arch` (arch qualifiers later). */
export interface PackageRequest {
  name: string;
  /** Exact version pin from `name=version`. */
  version?: string;
  /** Debian architecture qualifier from `name:arch` (e.g. "i386"); undefined = the platform's. */
  arch?: string;
  /** Where it was written, for error messages ("image.yaml:7:5"). */
  where: string;
}

export interface AptSection {
  sources: AptSource[];
  packages: PackageRequest[];
  install: InstallMode;
  recommends: boolean;
  /** Lockfile path template override (absolute after normalization), may contain {suite} and {arch}. */
  lockfile?: string;
  /** Which preset filled the sources, if any, e.g. "debian 12" (for messages). */
  preset?: string;
  /** The preset's kind and release number, so sources can be recomputed per architecture. */
  presetKind?: 'ubuntu' | 'debian';
  presetVersion?: string;
}

export interface FileEntry {
  src: string;
  /** Absolute, normalised: no "." or ".." components, no trailing slash, not "/". */
  dest: string;
  mode?: number;
  uid?: number;
  gid?: number;
  /** Where it was written, for messages ("image.yaml:9:5"). */
  where?: string;
}

/** A secret a RUN step reads at `/run/secrets/<id>`: never in a layer, in cache keys only by digest. */
export interface RunSecret {
  id: string;
  /** Absolute path of the file holding it. */
  file?: string;
  /** Or the environment variable of the ocibuild process holding it. */
  env?: string;
  /** Where it was written, for messages ("image.yaml:7:5"). */
  where: string;
}

/** A directory kept between builds in the store and mounted writable at `target`; never in a layer. */
export interface RunCache {
  /** Absolute path inside the sandbox. */
  target: string;
  /** Which store cache directory: the same id shares it between specs (default: the target). */
  id: string;
}

export type SandboxChoiceSpec = 'auto' | 'bwrap' | 'nspawn';

/** The spec's `run:`: all commands in one sandboxed step, one layer. */
export interface RunSection {
  commands: string[];
  /** Network off unless true. */
  network: boolean;
  /** Overrides of the image config for this step only. */
  user?: string;
  workdir?: string;
  env: Record<string, string>;
  secrets: RunSecret[];
  caches: RunCache[];
  /** Where `run:` is, for messages ("image.yaml:12:1"). */
  where: string;
  /** Where each command is, when read from a file. */
  commandWheres?: string[];
}

export interface ImageConfigSpec {
  env: Record<string, string>;
  entrypoint?: string[];
  cmd?: string[];
  workdir?: string;
  user?: string;
  labels: Record<string, string>;
  expose: string[];
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface ImageSpec {
  /** Absolute path of the spec file. */
  path: string;
  /** Directory relative paths are resolved against. */
  dir: string;
  /** A registry reference or "scratch". */
  from: string;
  apt?: AptSection;
  /** `run:`, when it has commands. */
  run?: RunSection;
  /** Which sandbox runs `run:` and `install: dpkg` (default auto: bwrap when usable, else nspawn). */
  sandbox: SandboxChoiceSpec;
  files: FileEntry[];
  config: ImageConfigSpec;
  /** Manifest annotations from `annotations:` (validated; never the keys ocibuild sets itself). */
  annotations: Record<string, string>;
  /** The platforms to build; several give an image index. */
  platforms: Platform[];
}
