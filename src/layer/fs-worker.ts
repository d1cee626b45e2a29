/**
 * One worker thread per process for synchronous file-system work: tree walks
 * (tree.ts) and reading file contents into the tar (tar-packer.ts).
 *
 * Why synchronous calls in a worker: a layer is thousands of small lstat/open/read/
 * close calls, and each one through the thread pool costs a round trip and a callback
 * on the main thread, which also hashes and feeds the compressors. Why one shared
 * worker: starting a worker costs ~60 ms of CPU on this project's 2-core bench machine
 * (bench/RESULTS.md), as much as walking 4 000 files; a build walks and packs several
 * trees.
 *
 * Each user opens a channel: a MessagePort pair and a "program", the source text of a
 * function body `(require, port, data)` that the worker compiles once and runs for the
 * channel. Programs run one at a time; each must catch its own errors and report them
 * on its port. The worker is unref'd: it never keeps the process alive, the open ports
 * do. If it dies, its ports close (users see 'close') and the next channel starts a
 * new one.
 */
import { MessageChannel, Worker, type MessagePort, type TransferListItem } from 'node:worker_threads';

let worker: Worker | undefined;

const HOST_SOURCE = `
const { parentPort } = require('node:worker_threads');
const programs = new Map();
parentPort.on('message', ({ source, port, data }) => {
  let run = programs.get(source);
  if (!run) {
    run = new Function('require', 'port', 'data', source);
    programs.set(source, run);
  }
  try {
    run(require, port, data);
  } catch (err) {
    port.postMessage({ fatal: String((err && err.stack) || err) });
    port.close();
  }
});
`;

function host(): Worker {
  if (worker) return worker;
  const w = new Worker(HOST_SOURCE, { eval: true });
  w.unref();
  const forget = (): void => {
    if (worker === w) worker = undefined;
  };
  // An error kills the worker: its ports close, which is how users learn of it.
  w.on('error', forget);
  w.on('exit', forget);
  worker = w;
  return w;
}

/**
 * Runs `program` in the shared worker with `data` (structured-cloned, `transfer`
 * moved); returns this side's port. Closing the port ends the channel.
 */
export function openChannel(program: string, data: unknown, transfer: TransferListItem[] = []): MessagePort {
  const { port1, port2 } = new MessageChannel();
  host().postMessage({ source: program, port: port2, data }, [port2, ...transfer]);
  return port1;
}
