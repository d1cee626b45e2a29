// Runs the compiled CLI the way a user does. Async spawn: the fixture servers live
// in the test process and must keep answering while the CLI runs.
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = path.join(root, 'bin/ocibuild');

export interface CliRun { code: number; stdout: string; stderr: string }

export function ocibuild(args: string[], env: NodeJS.ProcessEnv = {}, input?: string): Promise<CliRun> {
  return run(CLI, args, { ...process.env, ...env }, input);
}

/** Runs a command to its end, collecting its output as text; stdin is `input`, else closed. */
export function run(command: string, args: string[], env: NodeJS.ProcessEnv, input?: string): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    if (input !== undefined) {
      // A command that exits without reading its input (a usage error) closes the pipe first.
      child.stdin!.on('error', () => {});
      child.stdin!.end(input);
    }
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d));
    child.stderr!.on('data', (d: Buffer) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** An image.yaml for `from: scratch` + `install: unpack` against one fixture repository. */
export function scratchSpec(url: string, keyring: string, packages: string[], extra: string[] = []): string {
  return [
    'from: scratch',
    'apt:',
    '  sources:',
    `    - url: ${url}`,
    '      suites: [stable]',
    '      components: [main]',
    `      keyring: ${keyring}`,
    `  packages: [${packages.join(', ')}]`,
    '  install: unpack',
    ...extra,
    '',
  ].join('\n');
}

/**
 * Sends `signal` to `child` once its stderr shows `text` (or it has exited), and
 * waits for it to end: its exit code and everything it wrote to stderr.
 */
export async function signalWhen(
  child: ChildProcessByStdio<Writable | null, Readable | null, Readable>,
  text: string,
  signal: NodeJS.Signals,
): Promise<{ code: number | null; stderr: string }> {
  let stderr = '';
  const seen = new Promise<void>((resolve) => {
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes(text)) resolve();
    });
  });
  const exited = new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  await Promise.race([seen, exited]);
  child.kill(signal);
  return { code: await exited, stderr };
}
