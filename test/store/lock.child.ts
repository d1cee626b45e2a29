// Holds a store lock in a separate process for test/store/lock.test.ts:
//   node --import tsx lock.child.ts ROOT DIGEST
// prints "locked" once it holds the lock, and on a line on stdin writes ROOT/released
// and then releases (so a waiter can check it ran only after the release).
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { withBlobLock } from '../../src/store/lock.js';
import { Store } from '../../src/store/store.js';

const [root, digest] = process.argv.slice(2);
if (!root || !digest) throw new Error('usage: lock.child.ts ROOT DIGEST');
const input = createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();
await withBlobLock(new Store(root), digest, async () => {
  process.stdout.write('locked\n');
  await lines.next();
  await writeFile(join(root, 'released'), '');
});
input.close();
process.stdout.write('released\n');
