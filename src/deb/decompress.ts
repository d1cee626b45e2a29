// Streaming decompressors for the tar members of a .deb (deb(5): control.tar and
// data.tar, uncompressed or with .gz, .xz, .zst, and for data.tar the legacy .bz2).
import { createRequire } from 'node:module';
import { PassThrough, type Duplex, type Transform } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { OcibuildError } from '../errors.js';
import { createXzDecoder } from './xz.js';

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

interface ZstdNapi {
  DecompressStream: new () => Transform;
}

const require = createRequire(import.meta.url);
let zstd: ZstdNapi | undefined;

/**
 * A stream that decompresses one stream of the given kind. gz through node's zlib,
 * xz through native/ on the system liblzma, or lzma-native when the addon is not
 * built (src/deb/xz.ts; bench/xz-decode.ts compares them with `xz -dc`), zst through
 * zstd-napi (libzstd). bzip2 has no well-kept streaming implementation for Node, and
 * Debian has not built data.tar.bz2 for years (dpkg-deb cannot even write it), so it
 * is refused.
 */
export function decompressor(kind: Compression): Duplex {
  switch (kind) {
    case 'none':
      return new PassThrough();
    case 'gz':
      return createGunzip();
    case 'xz':
      return createXzDecoder();
    case 'zst':
      zstd ??= require('zstd-napi') as ZstdNapi;
      return new zstd.DecompressStream();
    case 'bz2':
      throw new OcibuildError('bzip2-compressed data.tar is not supported', {
        hint: 'Debian stopped building data.tar.bz2 long ago; rebuild the package with `dpkg-deb -Zxz` (or gzip, zstd)',
      });
  }
}
