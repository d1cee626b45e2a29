/** What every sandboxed step (the dpkg install, the RUN layer) is given by the build. */
import type { Layer } from '../oci/image.js';
import type { OutputHandler } from '../sandbox/process.js';
import type { RunConfig } from '../sandbox/run-step.js';
import type { SandboxChoiceSpec } from '../spec/types.js';
import type { Store } from '../store/store.js';
import type { Compression, LayerCacheOptions } from './layer-cache.js';
import type { BuildReporter } from './reporter.js';

export interface SandboxStepOptions extends LayerCacheOptions {
  store: Store;
  /** The layers below the step, bottom first. */
  below: readonly Layer[];
  /** What the step inherits from the image config. */
  config: RunConfig;
  sandbox: SandboxChoiceSpec;
  compression: Compression;
  /** Scratch space on the store's file system; the step's directories go below it. */
  workDir: string;
  /** For messages: "apt layer", "run layer for linux/arm64". */
  label: string;
  /** Where the step is in the spec, for messages. */
  where: string;
  progress: BuildReporter;
  log: (line: string) => void;
  onOutput?: OutputHandler;
  signal?: AbortSignal;
}
