/**
 * Runs a sandbox's outermost process: its stdout and stderr streamed to a callback as
 * they come, the last lines kept for the error message, stdin closed, and an abort
 * turned into the backend's own way of tearing the sandbox down.
 */
import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';

export type OutputStream = 'stdout' | 'stderr';
export type OutputHandler = (chunk: Buffer, stream: OutputStream) => void;

/** What a backend gets besides the spec: where output goes, how much to keep, when to stop. */
export interface BackendIo {
  onOutput?: OutputHandler;
  tailLines: number;
  signal?: AbortSignal;
}

export interface SandboxProcessOptions {
  argv: string[];
  /** The environment of the outermost process (not necessarily the sandbox's). */
  env: NodeJS.ProcessEnv;
  onOutput?: OutputHandler;
  /** How many lines of output to keep for an error message. */
  tailLines: number;
  signal?: AbortSignal;
  /** Called once on abort with the child; must make the sandbox go away. */
  kill: (child: SandboxChild) => void;
  /** Extra file descriptors (fd 3, 4, ...) the process writes to, read as text. */
  extraOutputs?: number;
  /** Receives each extra output's text as it arrives (fd number, chunk). */
  onExtraOutput?: (fd: number, text: string) => void;
  /**
   * Lines the backend itself prints that are no output of the step. When given, output
   * is passed on line by line (a partial line waits for its end or for the exit).
   */
  dropLine?: (line: string, stream: OutputStream) => boolean;
}

export interface SandboxChild {
  pid: number;
  signal(sig: NodeJS.Signals): void;
  /** Set once the process has exited. */
  readonly exited: boolean;
}

export interface SandboxProcessResult {
  /** The exit status, or undefined when the process died of a signal. */
  exitCode: number | undefined;
  /** The signal that ended it, if any. */
  termSignal: NodeJS.Signals | undefined;
  /** The last `tailLines` lines of stdout and stderr, interleaved as they arrived. */
  tail: string[];
  aborted: boolean;
  /** The spawn error (e.g. ENOENT) when the program could not start. */
  spawnError?: Error;
}

/** Keeps the last `max` complete lines of several streams, with each stream's partial line apart. */
export class LineTail {
  private readonly lines: string[] = [];
  private readonly partial = new Map<string, string>();
  constructor(private readonly max: number) {}

  push(stream: string, chunk: Buffer | string): void {
    const text = (this.partial.get(stream) ?? '') + chunk.toString();
    const parts = text.split('\n');
    this.partial.set(stream, parts.pop()!);
    for (const line of parts) this.add(line);
  }

  /** The kept lines, partial lines flushed last. */
  finish(): string[] {
    for (const [stream, rest] of this.partial) if (rest !== '') this.add(rest), this.partial.set(stream, '');
    return [...this.lines];
  }

  private add(line: string): void {
    this.lines.push(line.replace(/\r$/, ''));
    if (this.lines.length > this.max) this.lines.shift();
  }
}

export function runSandboxProcess(o: SandboxProcessOptions): Promise<SandboxProcessResult> {
  return new Promise((resolve) => {
    const tail = new LineTail(o.tailLines);
    const extra = o.extraOutputs ?? 0;
    const stdio: Array<'ignore' | 'pipe'> = ['ignore', 'pipe', 'pipe', ...Array<'pipe'>(extra).fill('pipe')];
    const [cmd, ...args] = o.argv;
    const child = spawn(cmd!, args, { stdio, env: o.env });
    let aborted = false;
    let exited = false;
    let spawnError: Error | undefined;
    const handle: SandboxChild = {
      get pid() {
        return child.pid ?? -1;
      },
      signal(sig) {
        if (!exited) child.kill(sig);
      },
      get exited() {
        return exited;
      },
    };
    const onAbort = (): void => {
      if (aborted || exited) return;
      aborted = true;
      o.kill(handle);
    };
    const pass = (chunk: Buffer, name: OutputStream): void => {
      tail.push(name, chunk);
      o.onOutput?.(chunk, name);
    };
    const pending = new Map<OutputStream, Buffer>();
    const filtered = (chunk: Buffer, name: OutputStream): void => {
      let buf = Buffer.concat([pending.get(name) ?? Buffer.alloc(0), chunk]);
      for (let nl = buf.indexOf(10); nl >= 0; nl = buf.indexOf(10)) {
        const line = buf.subarray(0, nl + 1);
        buf = buf.subarray(nl + 1);
        if (!o.dropLine!(line.toString().replace(/\r?\n$/, ''), name)) pass(line, name);
      }
      pending.set(name, buf);
    };
    (['stdout', 'stderr'] as const).forEach((name) => {
      child[name]!.on('data', (chunk: Buffer) => (o.dropLine ? filtered(chunk, name) : pass(chunk, name)));
    });
    for (let i = 0; i < extra; i++) {
      const fd = 3 + i;
      (child.stdio[fd] as Readable).on('data', (chunk: Buffer) => o.onExtraOutput?.(fd, chunk.toString()));
    }
    child.on('error', (err) => {
      spawnError = err;
    });
    child.on('exit', () => {
      exited = true;
    });
    // 'close': the process has exited and its stdio are drained, so the tail is complete.
    child.on('close', (code, sig) => {
      exited = true;
      for (const [name, rest] of pending) if (rest.length > 0 && !o.dropLine!(rest.toString(), name)) pass(rest, name);
      o.signal?.removeEventListener('abort', onAbort);
      resolve({
        exitCode: code ?? undefined,
        termSignal: sig ?? undefined,
        tail: tail.finish(),
        aborted,
        ...(spawnError ? { spawnError } : {}),
      });
    });
    if (o.signal?.aborted) onAbort();
    else o.signal?.addEventListener('abort', onAbort, { once: true });
  });
}
