/** `ocibuild pull`: a registry image into an OCI layout or archive. */
import { OcibuildError } from '../errors.js';
import { parseOutput, writeOutput } from '../oci/output.js';
import { pullImage } from '../registry/pull.js';
import { familiarName, parseReference } from '../registry/reference.js';
import { parsePlatform } from '../spec/platform.js';
import { storeAt } from './common.js';
import { createProgress } from './progress.js';
import { quietable, registryOptions, writeSmallFile, type RegistryCliOptions } from './registry.js';

export interface PullCliOptions extends RegistryCliOptions {
  output: string;
  platform?: string;
  cacheDir?: string;
  digestFile?: string;
}

export async function pullCommand(reference: string, opts: PullCliOptions): Promise<void> {
  const ref = parseReference(reference, 'pull');
  const out = parseOutput(opts.output);
  const platform = parsePlatform(opts.platform ?? `linux/${hostArch()}`, '--platform');
  const store = storeAt(opts.cacheDir);
  const progress = createProgress({ stream: process.stderr, quiet: Boolean(opts.quiet) });
  const say = quietable(progress, opts.quiet);
  try {
    const transport = await registryOptions(opts, [ref]);
    const image = await pullImage(ref, {
      ...transport,
      store,
      platform,
      log: (line) => say(line),
      onLayer: (done, total) => say(`pulled layer ${done}/${total}`),
    });
    await writeOutput(out, image, { store, ...(ref.tag ? { tag: ref.tag, dockerRef: familiarName({ ...ref, digest: undefined }) } : {}), ...(opts.signal ? { signal: opts.signal } : {}) });
    if (opts.digestFile) await writeSmallFile(opts.digestFile, `${image.digest}\n`);
    process.stdout.write(`${image.digest}\n`);
  } finally {
    progress.done();
  }
}

function hostArch(): string {
  const map: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64', ia32: '386' };
  const a = map[process.arch];
  if (!a) throw new OcibuildError(`no OCI architecture for this host (${process.arch})`, { hint: 'pass --platform' });
  return a;
}

