import type { ProgressEvent } from '../store/fetch-debs.js';

/**
 * What a build reports while it works; the CLI's progress display is one. Every
 * method is optional to call in any order the build needs: downloads come in
 * batches (one per platform), each layer written is a phase.
 */
export interface BuildReporter {
  /** A download batch: how many .debs the lock holds, their total size, and for which platform when there are several. */
  beginDownloads(count: number, bytes: number, label?: string): void;
  download(ev: ProgressEvent): void;
  endDownloads(): void;
  /** A layer is being written; `totalBytes` is the size of the file contents going into it. */
  phase(label: string, totalBytes?: number): void;
  /** Bytes of the layer blob (compressed, as stored) written so far in this phase. */
  phaseBytes(bytes: number): void;
  /** The layer is written; `detail` says what came out (its digest). A failed write is never ended. */
  endPhase(detail?: string): void;
}

/** A reporter that reports nothing. */
export const SILENT: BuildReporter = {
  beginDownloads: () => {},
  download: () => {},
  endDownloads: () => {},
  phase: () => {},
  phaseBytes: () => {},
  endPhase: () => {},
};
