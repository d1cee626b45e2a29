/** Whole-file writes that readers see entirely or not at all. */
import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * temp + fsync + rename: a reader sees the old file, no file, or the whole new one.
 * `tmp` must be on the same filesystem as `dest` (tempName(dirname(dest)) is); it is
 * removed when anything fails.
 */
export async function writeFileAtomic(dest: string, data: Uint8Array | string, tmp: string): Promise<void> {
  try {
    const fh = await open(tmp, 'wx');
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, dest);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

/** pid + random: concurrent writers never share a temp name; dot-named so tools skip it. */
export function tempName(dir: string): string {
  return join(dir, `.ocibuild-${process.pid}-${randomBytes(6).toString('hex')}.tmp`);
}

/**
 * Resolves once a file write stream has closed. A stream destroyed before its open
 * completed still creates the file (and then closes it), so whoever removes the file
 * after a failure must wait for this first, or the file comes back after the unlink.
 */
export function whenClosed(stream: { readonly closed: boolean; once(event: 'close', listener: () => void): unknown }): Promise<void> {
  return stream.closed ? Promise.resolve() : new Promise((resolve) => stream.once('close', () => resolve()));
}
