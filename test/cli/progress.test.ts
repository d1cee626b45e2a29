import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createProgress, formatBytes, type ProgressStream } from '../../src/cli/progress.js';
import type { ProgressEvent } from '../../src/store/fetch-debs.js';

/** A stream that keeps what the reporter writes: the reporter's output is the unit under test. */
function capture(isTTY: boolean, columns = 200): ProgressStream & { out: string } {
  const s = {
    out: '',
    isTTY,
    columns,
    write(chunk: string): boolean {
      s.out += chunk;
      return true;
    },
  };
  return s;
}

/** A clock the test moves by hand. */
function clock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_000_000;
  return { now: () => t, advance: (ms) => (t += ms) };
}

const ev = (kind: ProgressEvent['kind'], pkg: string, bytes: number, total: number): ProgressEvent => ({ kind, package: pkg, bytes, total });

/** What a terminal would show: the text after the last \r or clear, per line. */
function screen(out: string): string[] {
  return out
    .split('\n')
    .map((l) => l.split('\r').at(-1)!.replaceAll('\x1b[2K', ''))
    .filter((l, i, all) => l !== '' || i < all.length - 1);
}

test('formatBytes: binary units', () => {
  const table: Array<[number, string]> = [
    [0, '0 B'],
    [1023, '1023 B'],
    [1024, '1.0 KiB'],
    [1536, '1.5 KiB'],
    [5 * 1024 * 1024, '5.0 MiB'],
    [3 * 1024 ** 3, '3.0 GiB'],
  ];
  for (const [n, s] of table) assert.equal(formatBytes(n), s, String(n));
});

test('not a TTY: one line per finished download, a summary, layer lines, no control characters', () => {
  const stream = capture(false);
  const c = clock();
  const p = createProgress({ stream, quiet: false, now: c.now });
  p.beginDownloads(3, 3 * 2048);
  p.download(ev('skip', 'a', 2048, 2048));
  p.download(ev('start', 'b', 0, 2048));
  p.download(ev('progress', 'b', 1024, 2048));
  p.download(ev('progress', 'b', 2048, 2048));
  p.download(ev('done', 'b', 2048, 2048));
  p.download(ev('start', 'c', 0, 2048));
  p.download(ev('progress', 'c', 2048, 2048));
  c.advance(2000);
  p.download(ev('done', 'c', 2048, 2048));
  p.endDownloads();
  p.phase('apt layer', 40 * 1024 * 1024);
  p.phaseBytes(1024 * 1024);
  c.advance(9_999);
  p.phaseBytes(10 * 1024 * 1024);
  c.advance(1);
  p.phaseBytes(20 * 1024 * 1024);
  c.advance(5_000);
  p.phaseBytes(30 * 1024 * 1024);
  c.advance(5_000);
  p.phaseBytes(40 * 1024 * 1024);
  p.endPhase('sha256:abc');
  p.phase('files layer');
  p.phaseBytes(512);
  c.advance(500);
  p.endPhase('sha256:def');
  p.done();
  assert.doesNotMatch(stream.out, /[\r\x1b]/);
  assert.equal(
    stream.out,
    [
      'fetched b (2.0 KiB)',
      'fetched c (2.0 KiB)',
      'packages: 2 downloaded (4.0 KiB in 2.0 s), 1 already in the store',
      'writing apt layer (40.0 MiB of files)',
      // At most one line per 10 s while a layer is written, saying how far and how fast.
      'writing apt layer: 20.0 MiB written, 2.0 MiB/s',
      'writing apt layer: 40.0 MiB written, 2.0 MiB/s',
      'wrote apt layer: 40.0 MiB in 20.0 s (2.0 MiB/s), sha256:abc',
      'writing files layer',
      'wrote files layer: 512 B in 0.5 s (1.0 KiB/s), sha256:def',
      '',
    ].join('\n'),
  );
});

test('a layer left unfinished (the build failed) gets no "wrote" line', () => {
  for (const isTTY of [false, true]) {
    const stream = capture(isTTY);
    const p = createProgress({ stream, quiet: false, now: clock().now });
    p.phase('apt layer', 100);
    p.phaseBytes(50);
    p.error('ocibuild: disk full');
    p.done();
    assert.doesNotMatch(stream.out, /wrote/, `isTTY=${isTTY}`);
    assert.equal(screen(stream.out).at(-1), 'ocibuild: disk full');
  }
});

test('TTY: one status line redrawn in place, at most every 100 ms, then the summary', () => {
  const stream = capture(true);
  const c = clock();
  const p = createProgress({ stream, quiet: false, now: c.now });
  p.beginDownloads(2, 4096);
  const afterBegin = stream.out;
  assert.equal(afterBegin, '\r\x1b[2Kdownloading 0/2 packages, 0 B of 4.0 KiB, 0 B/s');

  p.download(ev('start', 'a', 0, 2048));
  p.download(ev('progress', 'a', 1024, 2048));
  assert.equal(stream.out, afterBegin, 'throttled: no redraw within 100 ms');

  c.advance(1000);
  p.download(ev('progress', 'a', 2048, 2048));
  assert.equal(stream.out.slice(afterBegin.length), '\r\x1b[2Kdownloading 0/2 packages, 2.0 KiB of 4.0 KiB, 2.0 KiB/s');
  p.download(ev('done', 'a', 2048, 2048));
  c.advance(100);
  p.download(ev('skip', 'b', 2048, 2048));
  assert.match(stream.out, /downloading 2\/2 packages, 2\.0 KiB of 2\.0 KiB, [\d.]+ KiB\/s$/);
  assert.doesNotMatch(stream.out, /\n/, 'nothing but the status line while downloading');

  p.phase('apt layer', 6 * 1024 * 1024);
  assert.match(stream.out, /\r\x1b\[2Kwriting apt layer \(6\.0 MiB of files\)$/);
  c.advance(100);
  p.phaseBytes(3 * 1024 * 1024);
  assert.match(stream.out, /\r\x1b\[2Kwriting apt layer: 3\.0 MiB written, 30\.0 MiB\/s$/);
  p.phaseBytes(4 * 1024 * 1024);
  assert.doesNotMatch(stream.out, /4\.0 MiB/, 'throttled');
  p.endPhase('sha256:abc');
  p.done();
  // The status line is cleared, then the summary lines stay on screen.
  assert.match(stream.out, /writing apt layer: 3\.0 MiB written, 30\.0 MiB\/s\r\x1b\[2Kwrote apt layer: 4\.0 MiB in 0\.1 s \(40\.0 MiB\/s\), sha256:abc\npackages: [^\r\x1b]*\n$/);
  assert.deepEqual(screen(stream.out), [
    'wrote apt layer: 4.0 MiB in 0.1 s (40.0 MiB/s), sha256:abc',
    'packages: 1 downloaded (2.0 KiB in 1.2 s), 1 already in the store',
  ]);
});

test('TTY: a log line or an error clears the status line first; the next update redraws at once', () => {
  const stream = capture(true);
  const c = clock();
  const p = createProgress({ stream, quiet: false, now: c.now });
  p.download(ev('start', 'a', 0, 100));
  p.line('warning: something');
  p.download(ev('progress', 'a', 50, 100));
  p.error('ocibuild: it broke');
  p.done();
  assert.deepEqual(screen(stream.out), ['warning: something', 'ocibuild: it broke', 'packages: 0 downloaded (50 B in 0.0 s)']);
  // Without beginDownloads the batch is what was seen: one package of 100 bytes.
  assert.match(stream.out, /downloading 0\/1 packages, 50 B of 100 B/);
});

test('TTY: the status line never wraps (it could not be redrawn with \\r)', () => {
  const stream = capture(true, 30);
  const p = createProgress({ stream, quiet: false, now: clock().now });
  p.beginDownloads(1000, 10 ** 9);
  const shown = stream.out.replace('\r\x1b[2K', '');
  assert.equal(shown.length, 29);
  assert.ok(shown.endsWith('…'));
});

test('quiet: nothing but errors, on a TTY or not', () => {
  for (const isTTY of [true, false]) {
    const stream = capture(isTTY);
    const p = createProgress({ stream, quiet: true, now: clock().now });
    p.beginDownloads(1, 10);
    p.download(ev('start', 'a', 0, 10));
    p.download(ev('done', 'a', 10, 10));
    p.phase('apt layer');
    p.phaseBytes(5);
    p.endPhase();
    p.error('ocibuild: sha256 mismatch for a 1 from http://x/a.deb');
    p.done();
    assert.equal(stream.out, 'ocibuild: sha256 mismatch for a 1 from http://x/a.deb\n', `isTTY=${isTTY}`);
  }
});

test('isTTY defaults to the stream, and the option overrides it', () => {
  const tty = capture(true);
  createProgress({ stream: tty, quiet: false, now: clock().now }).beginDownloads(1, 1);
  assert.match(tty.out, /^\r/);
  const forced = capture(true);
  const p = createProgress({ stream: forced, quiet: false, isTTY: false, now: clock().now });
  p.beginDownloads(1, 1);
  p.download(ev('done', 'a', 1, 1));
  assert.equal(forced.out, 'fetched a (1 B)\n');
});

test('a download batch per platform names it; a batch found whole in the store says so', () => {
  const stream = capture(false);
  const p = createProgress({ stream, quiet: false, now: clock().now });
  p.beginDownloads(2, 20, 'linux/arm64');
  p.download(ev('skip', 'a', 10, 10));
  p.download(ev('skip', 'b', 10, 10));
  p.endDownloads();
  p.beginDownloads(1, 10, 'linux/arm/v7');
  p.download(ev('done', 'c', 10, 10));
  p.endDownloads();
  p.beginDownloads(1, 10);
  p.download(ev('skip', 'c', 10, 10));
  p.endDownloads();
  assert.equal(stream.out, [
    'packages for linux/arm64: all 2 already in the store',
    'fetched c (10 B)',
    'packages for linux/arm/v7: 1 downloaded (10 B in 0.0 s)',
    'packages: all 1 already in the store',
    '',
  ].join('\n'));
  const tty = capture(true);
  createProgress({ stream: tty, quiet: false, now: clock().now }).beginDownloads(3, 3072, 'linux/arm64');
  assert.equal(tty.out, '\r\x1b[2Kdownloading 0/3 packages for linux/arm64, 0 B of 3.0 KiB, 0 B/s');
});
