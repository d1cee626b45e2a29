// Streaming decompressors for the tar members of a .deb (deb(5): control.tar and
// data.tar, uncompressed or with .gz, .xz, .zst, and for data.tar the legacy .bz2).
import { createRequire } from 'node:module';
import { PassThrough, type Transform } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { OcibuildError } from '../errors.js';

export type Compression = 'gz' | 'xz' | 'zst' | 'bz2' | 'none';

const SUFFIXES: ReadonlyArray<readonly [string, Compression]> = [
  ['', 'none'],
  ['.gz', 'gz'],
  ['.xz', 'xz'],
  ['.zst', 'zst'],
  ['.bz2', 'bz2'],
];

/**
 * The compression of a .deb member from its name: 'data.tar.xz' → 'xz',
 * 'control.tar' → 'none'. Undefined when the name is not `<base>.tar` with one of
 * the suffixes deb(5) allows (dpkg also chooses by the name, not by magic bytes).
 */
export function detectCompression(memberName: string): Compression | undefined {
  const at = memberName.indexOf('.tar');
  if (at <= 0) return undefined;
  const suffix = memberName.slice(at + '.tar'.length);
  return SUFFIXES.find(([s]) => s === suffix)?.[1];
}

interface LzmaNative {
  createDecompressor(options?: Record<string, unknown>): Transform;
}
interface ZstdNapi {
  DecompressStream: new () => Transform;
}

const require = createRequire(import.meta.url);
let lzma: LzmaNative | undefined;
let zstd: ZstdNapi | undefined;

/**
 * A Transform that decompresses one stream of the given kind. gz through node's
 * zlib, xz through lzma-native (the system-grade liblzma; bench/xz-decode.ts
 * compares it with `xz -dc`), zst through zstd-napi (libzstd). bzip2 has no
 * well-kept streaming implementation for Node, and Debian has not built
 * data.tar.bz2 for years (dpkg-deb cannot even write it), so it is refused.
 */
export function decompressor(kind: Compression): Transform {
  switch (kind) {
    case 'none':
      return new PassThrough();
    case 'gz':
      return createGunzip();
    case 'xz':
      // lzma-native ships no type declarations (see the interface above). Its default
      // 64 KiB output buffer costs one event-loop hop per 64 KiB; 1 MiB made the readDeb
      // walk 10-15% faster (bench/xz-decode.ts). Each output is copied to an exact-size
      // Buffer, so the larger scratch buffer retains no memory.
      lzma ??= require('lzma-native') as LzmaNative;
      return lzma.createDecompressor({ bufsize: 1 << 20 });
    case 'zst':
      zstd ??= require('zstd-napi') as ZstdNapi;
      return new zstd.DecompressStream();
    case 'bz2':
      throw new OcibuildError('bzip2-compressed data.tar is not supported', {
        hint: 'Debian stopped building data.tar.bz2 long ago; rebuild the package with `dpkg-deb -Zxz` (or gzip, zstd)',
      });
  }
}
