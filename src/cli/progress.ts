/**
 * What `ocibuild build` prints while it works. On a terminal: one status line,
 * redrawn in place at most ~10 times a second (downloads: count, bytes, rate; layer
 * writing: which layer, bytes, rate). Elsewhere (CI logs): plain lines, one per
 * finished download, one when a layer starts, one every 10 s while a big one is
 * written and one when it is done, since a redrawn line turns into noise in a log
 * file. With --quiet: errors only.
 */
import type { ProgressEvent } from '../store/fetch-debs.js';

/** The part of a NodeJS.WriteStream the reporter uses (process.stderr fits). */
export interface ProgressStream {
  write(chunk: string): boolean;
  isTTY?: boolean;
  columns?: number;
}

export interface ProgressOptions {
  stream: ProgressStream;
  quiet: boolean;
  /** Default: stream.isTTY. */
  isTTY?: boolean;
  /** Milliseconds clock; tests pass their own so output does not depend on timing. */
  now?: () => number;
}

export interface Progress {
  /** Announces a download batch: how many .debs and bytes the lock holds, and for what (e.g. "linux/arm64"). */
  beginDownloads(count: number, bytes: number, label?: string): void;
  /** Feed for fetchDebs's onProgress. */
  download(ev: ProgressEvent): void;
  /** Ends the batch with a summary line. */
  endDownloads(): void;
  /** Starts a layer-writing phase, e.g. "apt layer"; `totalBytes`: the size of the files going in. */
  phase(label: string, totalBytes?: number): void;
  /** Bytes of the layer (as stored, compressed) written so far in the current phase. */
  phaseBytes(bytes: number): void;
  /** Ends the current phase with a line saying what it wrote. */
  endPhase(detail?: string): void;
  /** A log line from the caller, printed as is (the caller decides what quiet hides). */
  line(text: string): void;
  /** Always printed, also with quiet. */
  error(message: string): void;
  /** Ends what is open (the download summary; a layer left unfinished is dropped) and clears the status line; safe to call twice. */
  done(): void;
}

const REDRAW_MS = 100;
/** Not a terminal: how often a long layer write says how far it is. */
const PLAIN_EVERY_MS = 10_000;
const CLEAR_LINE = '\r\x1b[2K';

export function createProgress(opts: ProgressOptions): Progress {
  const { stream, quiet } = opts;
  const tty = opts.isTTY ?? stream.isTTY === true;
  const now = opts.now ?? Date.now;

  let status = ''; // what the status line shows now ('' when cleared)
  let lastDraw = -Infinity;

  // Downloads
  let dlCount = 0;
  let dlBytesTotal = 0;
  let dlStarted = 0;
  let dlDone = 0;
  let dlSkipped = 0;
  const dlBytes = new Map<string, number>(); // per package, for bytes transferred
  let dlActive = false;
  let dlLabel: string | undefined;
  const seen = new Set<string>();

  // Layer phase
  let phaseLabel: string | undefined;
  let phaseTotal: number | undefined;
  let phaseWritten = 0;
  let phaseStarted = 0;
  let phaseLastLine = 0;

  /** A plain line, unless quiet. */
  const say = (text: string): void => {
    if (quiet) return;
    clearStatus();
    stream.write(`${text}\n`);
  };

  const clearStatus = (): void => {
    if (tty && status !== '') {
      stream.write(CLEAR_LINE);
      status = '';
      // The next update redraws at once instead of waiting out the throttle.
      lastDraw = -Infinity;
    }
  };

  const draw = (text: string, force = false): void => {
    if (quiet || !tty) return;
    const t = now();
    if (!force && t - lastDraw < REDRAW_MS) return;
    lastDraw = t;
    // A wrapped line cannot be redrawn with \r: keep it within the terminal width.
    const width = stream.columns && stream.columns > 1 ? stream.columns - 1 : 79;
    const shown = text.length > width ? text.slice(0, width - 1) + '…' : text;
    stream.write(CLEAR_LINE + shown);
    status = shown;
  };

  const transferred = (): number => {
    let n = 0;
    for (const b of dlBytes.values()) n += b;
    return n;
  };

  const downloadStatus = (): string => {
    const secs = Math.max((now() - dlStarted) / 1000, 0.001);
    const got = transferred();
    const done = dlDone + dlSkipped;
    return `downloading ${done}/${dlCount} packages${dlLabel ? ` for ${dlLabel}` : ''}, ${formatBytes(got)} of ${formatBytes(dlBytesTotal)}, ${formatBytes(got / secs)}/s`;
  };

  const rate = (bytes: number, since: number): string => `${formatBytes(bytes / Math.max((now() - since) / 1000, 0.001))}/s`;

  // Short enough for 80 columns with a platform in the label; the files' size was on the announcement.
  const phaseStatus = (): string => `writing ${phaseLabel}: ${formatBytes(phaseWritten)} written, ${rate(phaseWritten, phaseStarted)}`;
  const ofFiles = (): string => (phaseTotal !== undefined ? ` (${formatBytes(phaseTotal)} of files)` : '');

  const reporter: Progress = {
    beginDownloads(count, bytes, label) {
      dlLabel = label;
      dlCount = count;
      dlBytesTotal = bytes;
      dlStarted = now();
      dlDone = 0;
      dlSkipped = 0;
      dlBytes.clear();
      seen.clear();
      dlActive = true;
      draw(downloadStatus(), true);
    },

    download(ev) {
      if (!dlActive) reporter.beginDownloads(0, 0);
      if (!seen.has(ev.package)) {
        seen.add(ev.package);
        // Without a beginDownloads announcement the batch is what has been seen so far.
        if (seen.size > dlCount) {
          dlCount = seen.size;
          dlBytesTotal += ev.total;
        }
      }
      switch (ev.kind) {
        case 'skip':
          dlSkipped++;
          // Already in the store: not part of what this run transfers.
          dlBytesTotal = Math.max(0, dlBytesTotal - ev.total);
          break;
        case 'start':
        case 'progress':
          dlBytes.set(ev.package, ev.bytes);
          break;
        case 'done':
          dlDone++;
          dlBytes.set(ev.package, ev.total);
          if (!tty) say(`fetched ${ev.package} (${formatBytes(ev.total)})`);
          break;
      }
      draw(downloadStatus());
    },

    endDownloads() {
      if (!dlActive) return;
      dlActive = false;
      const secs = (now() - dlStarted) / 1000;
      const got = transferred();
      const parts = dlDone === 0 && dlSkipped > 0 ? [`all ${dlSkipped} already in the store`] : [`${dlDone} downloaded (${formatBytes(got)} in ${secs.toFixed(1)} s)`];
      if (dlDone > 0 && dlSkipped > 0) parts.push(`${dlSkipped} already in the store`);
      say(`packages${dlLabel ? ` for ${dlLabel}` : ''}: ${parts.join(', ')}`);
    },

    phase(label, totalBytes) {
      phaseLabel = label;
      phaseTotal = totalBytes;
      phaseWritten = 0;
      phaseStarted = now();
      phaseLastLine = phaseStarted;
      if (tty) draw(`writing ${label}${ofFiles()}`, true);
      else say(`writing ${label}${ofFiles()}`);
    },

    phaseBytes(bytes) {
      if (phaseLabel === undefined) return;
      phaseWritten = bytes;
      if (tty) {
        draw(phaseStatus());
      } else if (now() - phaseLastLine >= PLAIN_EVERY_MS) {
        phaseLastLine = now();
        say(phaseStatus());
      }
    },

    endPhase(detail) {
      if (phaseLabel === undefined) return;
      const secs = (now() - phaseStarted) / 1000;
      say(`wrote ${phaseLabel}: ${formatBytes(phaseWritten)} in ${secs.toFixed(1)} s (${rate(phaseWritten, phaseStarted)})${detail ? `, ${detail}` : ''}`);
      phaseLabel = undefined;
    },

    line(text) {
      clearStatus();
      stream.write(`${text}\n`);
    },

    error(message) {
      clearStatus();
      stream.write(`${message}\n`);
    },

    done() {
      // A phase still open here did not finish (the build failed): no "wrote" line for it.
      phaseLabel = undefined;
      reporter.endDownloads();
      clearStatus();
    },
  };
  return reporter;
}

/** 1536 → "1.5 KiB": binary units, as apt and most download tools print them. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${Math.round(v)} B` : `${v.toFixed(1)} ${units[i]}`;
}
