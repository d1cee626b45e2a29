/** Option handling shared by the commands that build: the store, logging, --sandbox. */
import path from 'node:path';
import { usageError } from '../errors.js';
import type { SandboxChoiceSpec } from '../spec/types.js';
import { Store } from '../store/store.js';
import { createProgress, type Progress } from './progress.js';

/** The store at --cache-dir, else the default place. */
export function storeAt(cacheDir: string | undefined): Store {
  return new Store(cacheDir ? path.resolve(cacheDir) : Store.defaultRoot());
}

/** The progress display on stderr and a log through it; -q keeps warnings only. */
export function cliLog(quiet: boolean | undefined): { progress: Progress; log: (line: string) => void } {
  const progress = createProgress({ stream: process.stderr, quiet: Boolean(quiet) });
  const log = (line: string): void => {
    if (!quiet || /^warning|^WARNING/.test(line)) progress.line(line);
  };
  return { progress, log };
}

export function parseSandboxOption(value: string | undefined): SandboxChoiceSpec | undefined {
  if (value === undefined) return undefined;
  if (value !== 'auto' && value !== 'bwrap' && value !== 'nspawn') throw usageError(`--sandbox must be auto, bwrap or nspawn, not ${JSON.stringify(value)}`);
  return value;
}
