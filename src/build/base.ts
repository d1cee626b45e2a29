/**
 * `from: REF`: the base image pulled for one platform (layers as they are), the facts a
 * build takes from its layers (the dpkg status for the resolver and the database the
 * apt layer extends; whether /bin is a merged-/usr link), and the config it inherits.
 */
import type { JsonValue } from '../oci/descriptor.js';
import type { ImageConfigInput } from '../oci/image.js';
import { scanLayers } from '../oci/layer-scan.js';
import { EXTENDED_STATES } from './apt-states.js';
import { pullImage, type ImageConfigDoc, type PulledImage } from '../registry/pull.js';
import { formatReference, parseReference, type ImageReference } from '../registry/reference.js';
import type { TransportOptions } from '../registry/transport.js';
import { formatPlatform } from '../spec/platform.js';
import type { ImageSpec, Platform } from '../spec/types.js';
import type { Store } from '../store/store.js';

export interface BaseImage {
  reference: ImageReference;
  image: PulledImage;
  /** The base's var/lib/dpkg/status, when it has dpkg. */
  dpkgStatus?: { text: string; where: string };
  /** The base's var/lib/apt/extended_states (apt's auto marks), when it has one. */
  aptExtendedStates?: string;
  /** true: /bin is a link into usr/ (merged /usr); false: a directory; undefined: no /bin. */
  mergedUsr?: boolean;
  /** What `install: dpkg` runs in it: /usr/bin/dpkg, and /bin/sh for the scripts. */
  hasDpkg: boolean;
  hasShell: boolean;
}

export interface BaseOptions {
  store: Store;
  registry?: TransportOptions;
  log?: (line: string) => void;
  signal?: AbortSignal;
}

const STATUS = 'var/lib/dpkg/status';

/** The spec's base reference, or undefined for `from: scratch`. */
export function baseReference(spec: ImageSpec): ImageReference | undefined {
  if (spec.from === 'scratch') return undefined;
  return parseReference(spec.from, `${spec.path}: from`);
}

/** Pulls and scans the base once per platform (lock and build share the result). */
export class BaseImages {
  private readonly cache = new Map<string, Promise<BaseImage>>();

  constructor(
    private readonly ref: ImageReference,
    private readonly opts: BaseOptions,
  ) {}

  get(platform: Platform): Promise<BaseImage> {
    const key = formatPlatform(platform);
    let p = this.cache.get(key);
    if (!p) {
      p = this.load(platform);
      this.cache.set(key, p);
    }
    return p;
  }

  private async load(platform: Platform): Promise<BaseImage> {
    const name = formatReference(this.ref);
    this.opts.log?.(`pulling ${name} for ${formatPlatform(platform)}`);
    const image = await pullImage(this.ref, {
      ...(this.opts.registry ?? {}),
      store: this.opts.store,
      platform,
      ...(this.opts.signal ? { signal: this.opts.signal } : {}),
      ...(this.opts.log ? { log: this.opts.log } : {}),
    });
    // /bin/sh is usr/bin/sh in a merged-/usr image's layers (dpkg writes through the link).
    const scan = await scanLayers(image.layers, [STATUS, EXTENDED_STATES], ['bin', 'usr/bin/dpkg', 'bin/sh', 'usr/bin/sh']);
    const status = scan.files.get(STATUS);
    const states = scan.files.get(EXTENDED_STATES);
    const bin = scan.kinds.get('bin');
    const base: BaseImage = {
      reference: this.ref,
      image,
      hasDpkg: scan.kinds.has('usr/bin/dpkg'),
      hasShell: scan.kinds.has('bin/sh') || scan.kinds.has('usr/bin/sh'),
    };
    if (status) base.dpkgStatus = { text: status.toString('utf8'), where: `${name}@${image.digest}:/${STATUS}` };
    if (states) base.aptExtendedStates = states.toString('utf8');
    if (bin) base.mergedUsr = bin.kind === 'symlink' && /^\/?usr\/bin\/?$/.test(bin.linkname ?? '');
    return base;
  }
}

/**
 * The image config over a base: the base's Env with the spec's variables replacing
 * same-named ones; Entrypoint, Cmd, WorkingDir, User from the spec when it sets them
 * (a new Entrypoint drops the base's Cmd, as a Dockerfile ENTRYPOINT does); Labels and
 * ExposedPorts merged; everything else of the base's runtime config and its history kept.
 */
export function configOverBase(own: ImageConfigInput, spec: ImageSpec, base: PulledImage | undefined): ImageConfigInput {
  if (!base) return own;
  const doc: ImageConfigDoc = base.configDoc;
  const c = doc.config ?? {};
  const env = new Map<string, string>();
  for (const e of c.Env ?? []) {
    const i = e.indexOf('=');
    if (i > 0) env.set(e.slice(0, i), e.slice(i + 1));
  }
  for (const [k, v] of Object.entries(spec.config.env)) env.set(k, v);
  const out: ImageConfigInput = { ...own, env: [...env].map(([k, v]) => `${k}=${v}`) };
  const entrypoint = spec.config.entrypoint ?? c.Entrypoint ?? undefined;
  const cmd = spec.config.cmd ?? (spec.config.entrypoint ? undefined : (c.Cmd ?? undefined));
  if (entrypoint) out.entrypoint = entrypoint;
  else delete out.entrypoint;
  if (cmd) out.cmd = cmd;
  else delete out.cmd;
  const workingDir = spec.config.workdir || c.WorkingDir;
  if (workingDir) out.workingDir = workingDir;
  const user = spec.config.user || c.User;
  if (user) out.user = user;
  out.labels = { ...(c.Labels ?? {}), ...spec.config.labels };
  out.exposedPorts = [...new Set([...Object.keys(c.ExposedPorts ?? {}), ...spec.config.expose])];
  const rest: { [key: string]: JsonValue } = {};
  for (const [k, v] of Object.entries(c)) {
    if (!['Env', 'Entrypoint', 'Cmd', 'WorkingDir', 'User', 'Labels', 'ExposedPorts'].includes(k) && v !== undefined) rest[k] = v as JsonValue;
  }
  const history = (doc.history ?? []) as JsonValue[];
  out.base = { history: history.length > 0 ? history : base.layers.map(() => ({ created_by: 'base image layer' })), layers: base.layers.length, config: rest };
  return out;
}
