// Builds the addons of native/binding.gyp (ocibuild_xz: xz decoding on the system
// liblzma; and every other target listed there) into native/build/Release/ with the
// node-gyp that npm bundles. npm runs this as ocibuild's own `install` script, so
// `npm ci` on a clone builds them; `npm run build:native` rebuilds.
//
// A failed build does not fail the install: ocibuild then uses its fallbacks (for xz,
// lzma-native: same bytes, slower). With OCIBUILD_REQUIRE_NATIVE=1 (CI) it does.
// OCIBUILD_SKIP_NATIVE=1 skips the build.
//
// Plain JavaScript: it runs before anything is compiled, and without devDependencies.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const release = join(here, 'build', 'Release');
const required = process.env.OCIBUILD_REQUIRE_NATIVE === '1';
const HELP = 'they need a C compiler, make, python3 and liblzma-dev (Debian: apt-get install build-essential python3 liblzma-dev); then run `npm run build:native`';
const targets = [...readFileSync(join(here, 'binding.gyp'), 'utf8').matchAll(/"target_name"\s*:\s*"([^"]+)"/g)].map((m) => m[1]);

function giveUp(reason, output = '') {
  if (output.trim() !== '') process.stderr.write(output.trim().split('\n').slice(-25).join('\n') + '\n');
  process.stderr.write(`ocibuild: native addons not built: ${reason}.\n`);
  if (required) {
    process.stderr.write('ocibuild: OCIBUILD_REQUIRE_NATIVE=1, so this is an error.\n');
    process.exit(1);
  }
  process.stderr.write(`ocibuild: it falls back to JavaScript (for .deb xz decoding lzma-native: same output, slower); ${HELP}.\n`);
  process.exit(0);
}

/** npm tells lifecycle scripts where its node-gyp is; outside npm, look next to npm. */
function nodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    process.env.npm_execpath && join(dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  return candidates.find((p) => p && existsSync(p));
}

/**
 * Node's headers without a download: an explicit nodedir (npm passes its `nodedir`
 * setting as npm_config_nodedir, which node-gyp reads itself), or the headers installed
 * with this node (Debian's libnode-dev and NodeSource's nodejs put them in
 * /usr/include/node) when they are this version's. Otherwise node-gyp looks in its
 * cache (~/.cache/node-gyp) and only then downloads.
 */
function nodedirArgs() {
  if (process.env.npm_config_nodedir) return [];
  const prefix = join(dirname(process.execPath), '..');
  try {
    const h = readFileSync(join(prefix, 'include', 'node', 'node_version.h'), 'utf8');
    const part = (name) => h.match(new RegExp(`#define ${name} (\\d+)`))?.[1];
    const version = `v${part('NODE_MAJOR_VERSION')}.${part('NODE_MINOR_VERSION')}.${part('NODE_PATCH_VERSION')}`;
    if (version === process.version) return [`--nodedir=${prefix}`];
  } catch {
    // no headers next to this node
  }
  return [];
}

if (process.env.OCIBUILD_SKIP_NATIVE === '1') giveUp('OCIBUILD_SKIP_NATIVE=1');
const gyp = nodeGyp();
if (!gyp) giveUp("npm's node-gyp was not found");

for (const t of targets) rmSync(join(release, `${t}.node`), { force: true });
const r = spawnSync(process.execPath, [gyp, 'rebuild', ...nodedirArgs()], { cwd: here, encoding: 'utf8', maxBuffer: 1 << 26 });
const output = `${r.stdout ?? ''}${r.stderr ?? ''}`;
if (r.error) giveUp(`node-gyp did not run (${r.error.message})`, output);
if (r.status !== 0) giveUp(`node-gyp failed (exit status ${r.status})`, output);

// Loading each proves that its libraries (liblzma) are found at run time too.
const require = createRequire(import.meta.url);
const built = [];
for (const t of targets) {
  const file = join(release, `${t}.node`);
  try {
    const addon = require(file);
    if (t === 'ocibuild_xz') {
      new addon.XzDecoder().end();
      built.push(`${t} (system liblzma ${addon.liblzmaVersion})`);
    } else {
      built.push(t);
    }
  } catch (err) {
    rmSync(file, { force: true });
    giveUp(`${t} was built but does not load (${err.message.split('\n')[0]})`, output);
  }
}
process.stderr.write(`ocibuild: built native addons: ${built.join(', ')}\n`);
