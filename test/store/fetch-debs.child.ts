// Runs fetchDebs in a separate process for test/store/fetch-debs.test.ts:
//   node --import tsx fetch-debs.child.ts ROOT ENTRIES_JSON
// prints "ready", starts on a line on stdin (so two children start together), prints
// every progress event as JSON, then "result <json of the map>".
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import type { LockEntry } from '../../src/apt/lockfile.js';
import { fetchDebs } from '../../src/store/fetch-debs.js';
import { Store } from '../../src/store/store.js';

const [root, entriesFile] = process.argv.slice(2);
if (!root || !entriesFile) throw new Error('usage: fetch-debs.child.ts ROOT ENTRIES_JSON');
const entries = JSON.parse(await readFile(entriesFile, 'utf8')) as LockEntry[];
const input = createInterface({ input: process.stdin });
process.stdout.write('ready\n');
await input[Symbol.asyncIterator]().next();
input.close();
const result = await fetchDebs(entries, {
  store: new Store(root),
  backoffMs: 5,
  onProgress: (ev) => process.stdout.write(`event ${JSON.stringify(ev)}\n`),
});
process.stdout.write(`result ${JSON.stringify([...result])}\n`);
