/**
 * The RUN layer: the spec's `run:` commands in one sandboxed step over the rootfs of
 * the layers below (extracted once per chain id, see sandbox/rootfs.ts), its overlay
 * upper dir normalised (normalize.ts) and written as one deterministic layer.
 *
 * The step sees the base image's Env (with the spec's config.env over it), WorkingDir
 * and User — the spec's own workdir and user are the image's runtime settings, which
 * a RUN line may be what creates (`useradd app`) — unless `run:` sets its own.
 *
 * Cache key: the chain id of the layers below, the commands and every option, the
 * config the step sees, the secrets by digest only, the cache mounts by place,
 * SOURCE_DATE_EPOCH, compression and the ocibuild version. A step that reads the
 * network or the date is cached all the same: the cache is what makes it repeatable;
 * `ocibuild verify` tells whether it is reproducible.
 */
import { createHash } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { OcibuildError } from '../errors.js';
import { chainId, rootfsFor, useCacheMount } from './tracked.js';
import { runStep, type StepMount } from '../sandbox/run-step.js';
import { dirInTree, upperToEntries } from '../sandbox/upper.js';
import { rmTree } from '../sandbox/overlay.js';
import type { RunSection } from '../spec/types.js';
import { VERSION } from '../version.js';
import { cachedLayer, stepKey, writeAndCache, type CachedLayer } from './layer-cache.js';
import { normalizeStepEntries } from './normalize.js';
import type { SandboxStepOptions } from './step-options.js';

export interface RunLayerOptions extends SandboxStepOptions {
  run: RunSection;
  sourceDateEpoch: number;
}

/** A secret's bytes, read once: hashed for the cache key, written for the mount. */
interface SecretValue {
  id: string;
  data: Buffer;
}

export async function runLayer(o: RunLayerOptions): Promise<CachedLayer> {
  const secrets = await readSecrets(o.run);
  const createdBy = `RUN /bin/sh -c ${o.run.commands.join(' && ')}`;
  const key = stepKey('run-v2', {
    parent: o.below.length > 0 ? chainId(o.below.map((l) => l.diffId)) : null,
    commands: o.run.commands,
    network: o.run.network,
    user: o.run.user ?? null,
    workdir: o.run.workdir ?? null,
    env: o.run.env,
    config: o.config,
    secrets: secrets.map((s) => ({ id: s.id, sha256: createHash('sha256').update(s.data).digest('hex') })),
    caches: o.run.caches,
    compression: o.compression,
    sde: o.sourceDateEpoch,
    version: VERSION,
  });
  const cached = await cachedLayer(o.store, key, createdBy, o);
  if (cached) {
    o.log(`${o.label}: unchanged, from the layer cache (${cached.layer.digest})`);
    return cached;
  }

  const rootfs = await rootfsFor(o.store, o.below, o.signal ? { signal: o.signal } : {});
  if (rootfs.extracted) o.log(`extracted the ${o.below.length} layer${o.below.length === 1 ? '' : 's'} below the RUN step`);
  await mkdir(o.workDir, { recursive: true });
  const dir = await mkdtemp(path.join(o.workDir, 'run-'));
  try {
    const mounts: StepMount[] = [];
    // Secrets as files only this process can read, mounted read-only; gone with `dir`.
    if (secrets.length > 0) {
      const secretDir = path.join(dir, 'secrets');
      await mkdir(secretDir, { mode: 0o700 });
      for (const s of secrets) {
        const file = path.join(secretDir, s.id);
        await writeFile(file, s.data, { mode: 0o400 });
        mounts.push({ source: file, target: `/run/secrets/${s.id}`, readOnly: true });
      }
    }
    for (const c of o.run.caches) {
      const source = path.join(o.store.root, 'cache-mounts', c.id);
      await useCacheMount(o.store, source, o.signal);
      await chmod(path.dirname(source), 0o700);
      mounts.push({ source, target: c.target, readOnly: false });
    }
    o.log(`running ${o.run.commands.length} RUN line${o.run.commands.length === 1 ? '' : 's'}${o.run.network ? ' (network on)' : ''}`);
    const step = await runStep({
      lowers: [rootfs.path],
      dir: path.join(dir, 'step'),
      run: o.run.commands,
      ...(o.run.commandWheres ? { lineWheres: o.run.commandWheres } : {}),
      config: o.config,
      env: o.run.env,
      ...(o.run.user !== undefined ? { user: o.run.user } : {}),
      ...(o.run.workdir !== undefined ? { workdir: o.run.workdir } : {}),
      sourceDateEpoch: o.sourceDateEpoch,
      network: o.run.network,
      mounts,
      hosts: true,
      sandbox: o.sandbox,
      ...(o.onOutput ? { onOutput: o.onOutput } : {}),
      warn: (m) => o.log(`warning: ${m}`),
      where: o.where,
      ...(o.signal ? { signal: o.signal } : {}),
    });
    try {
      const entries = await upperToEntries(step.upper, dirInTree(rootfs.path), {
        overlayXattrs: step.overlayXattrs,
        whiteoutFormat: step.whiteouts === 'wh-files' ? 'wh-files' : 'device',
      });
      const normal = normalizeStepEntries(entries, step.upper, o.sourceDateEpoch);
      return await writeAndCache(o.store, key, normal, o.compression, o.sourceDateEpoch, createdBy, o.label, o.progress, o.signal);
    } finally {
      await rmTree(step.upper);
    }
  } finally {
    await rmTree(dir);
  }
}

/** The secrets' values; a missing file or variable is an error naming the spec line (also checked before a build starts). */
export async function readSecrets(run: RunSection): Promise<SecretValue[]> {
  const out: SecretValue[] = [];
  for (const s of run.secrets) {
    if (s.file !== undefined) {
      const data = await readFile(s.file).catch((err: NodeJS.ErrnoException) => {
        throw new OcibuildError(`secret ${s.id}: cannot read ${s.file}: ${err.code ?? err.message}`, { where: s.where, hint: 'give a readable file, or env: VARIABLE' });
      });
      out.push({ id: s.id, data });
    } else {
      const value = process.env[s.env!];
      if (value === undefined) {
        throw new OcibuildError(`secret ${s.id}: the environment variable ${s.env} is not set`, { where: s.where, hint: `export ${s.env}=... before running ocibuild` });
      }
      out.push({ id: s.id, data: Buffer.from(value, 'utf8') });
    }
  }
  return out;
}
