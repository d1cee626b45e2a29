// ocibuild's lock against apt-get on the real Debian bookworm index (and on Ubuntu noble's
// three pockets, main + universe): for each package set, the (Package, Version) pairs of
// the lockfile must equal the packages `apt-get install -s` would install from an empty
// system (no Recommends unless a case asks).
//
// Runs only with OCIBUILD_LIVE=1 (network; Ubuntu with OCIBUILD_LIVE_UBUNTU=1). Needs the
// compiled CLI (`npm run build`).
// OCIBUILD_LIVE_APT_DIR and OCIBUILD_LIVE_CACHE_DIR, when set, keep apt's lists and
// ocibuild's index cache between runs.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AptOracleError, createAptSandbox, diffPackageSets, parseLockPackages } from '../support/apt-oracle.js';
import { UBUNTU_ARCHIVE, ubuntuKeyring } from '../support/ubuntu.js';

const LIVE = process.env.OCIBUILD_LIVE === '1';
const LIVE_UBUNTU = process.env.OCIBUILD_LIVE_UBUNTU === '1';
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = join(ROOT, 'bin/ocibuild');
const ARCH = 'amd64';

interface Archive {
  url: string;
  /** The first names the lockfile. */
  suites: string[];
  components: string[];
  keyring: string;
}

const DEBIAN: Archive = {
  url: 'http://deb.debian.org/debian',
  suites: ['bookworm'], // oldstable now; only the release index, no -updates/-security
  components: ['main'],
  keyring: '/usr/share/keyrings/debian-archive-keyring.gpg',
};

interface Case {
  packages: string[];
  /** Why the set is here. */
  why: string;
  /** apt refuses the request; ocibuild must refuse it too. */
  refused?: boolean;
  /** apt.recommends in the spec, APT::Install-Recommends for apt. */
  recommends?: boolean;
  /** install: dpkg from scratch: the Essential set joins the request (apt: every Essential: yes name, sorted, first). */
  essential?: boolean;
}

const CASES: Case[] = [
  { packages: ['python3'], why: 'Pre-Depends chain (python3-minimal, libc6)' },
  { packages: ['curl', 'ca-certificates'], why: 'two roots sharing libraries; debconf through ca-certificates' },
  { packages: ['git'], why: 'perl and liberror-perl, alternatives' },
  { packages: ['openssh-server'], why: 'many alternatives (debconf | debconf-2.0, ...), ucf, systemd libs' },
  { packages: ['perl'], why: 'versioned Depends on perl-base and perl-modules' },
  { packages: ['locales', 'tzdata'], why: 'arch:all packages, debconf' },
  { packages: ['bsd-mailx'], why: 'default-mta | mail-transport-agent: the virtual reached indirectly (exim4-daemon-light)' },
  { packages: ['mutt'], why: 'a larger closure with gnupg and libgpgme' },
  { packages: ['libc-dev'], why: 'a purely virtual request with exactly one provider: apt picks libc6-dev' },
  { packages: ['awk'], why: 'a purely virtual request with several providers: apt refuses', refused: true },
  { packages: ['exim4-daemon-light', 'postfix'], why: 'two MTAs: Conflicts: mail-transport-agent, apt refuses', refused: true },
  { packages: ['gcc-multilib'], why: 'libc6-x32 Conflicts: libc6-i386:x32 names a foreign architecture, not amd64 libc6-i386' },
  { packages: ['curl'], why: 'Recommends followed when the spec asks for them', recommends: true },
  { packages: ['build-essential'], why: 'gcc/g++ closure, versioned Depends across sources' },
  { packages: ['default-jre-headless'], why: 'big closure with alternatives (java-runtime-headless providers)' },
  { packages: ['apache2'], why: 'apache2-api virtuals, libapr, Recommends left out' },
  { packages: ['python3'], why: 'from scratch with install: dpkg: the Essential set is bootstrapped too (mmdebstrap essential)', essential: true },
];

/** Ubuntu: other versions (ubuntuN), universe, the same kinds of closures. */
const UBUNTU_CASES: Case[] = [
  { packages: ['python3'], why: 'Pre-Depends chain, python3.12' },
  { packages: ['nginx'], why: 'nginx-common, libssl3t64 (the time_t transition names)' },
  { packages: ['postgresql'], why: 'postgresql-common, ucf, locales, debconf alternatives' },
  { packages: ['build-essential'], why: 'gcc/g++ closure across pockets' },
  { packages: ['default-jre-headless'], why: 'java alternatives' },
  { packages: ['openssh-server'], why: 'many alternatives, systemd libs' },
  { packages: ['curl'], why: 'from scratch with install: dpkg: Ubuntu\'s Essential set', essential: true },
];

/** The Essential: yes names of the index apt downloaded: the facts, read independently of ocibuild. */
async function essentialNames(aptDir: string): Promise<string[]> {
  const lists = join(aptDir, 'state', 'lists');
  const names = new Set<string>();
  for (const f of (await readdir(lists)).filter((x) => x.endsWith('_Packages'))) {
    for (const para of (await readFile(join(lists, f), 'utf8')).split('\n\n')) {
      if (/^Essential: yes$/m.test(para)) names.add(/^Package: (\S+)$/m.exec(para)![1]!);
    }
  }
  return [...names].sort();
}

function run(cmd: string, args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolvePromise) => {
    execFile(cmd, args, { cwd, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8', timeout: 15 * 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolvePromise({ code, stdout, stderr });
    });
  });
}

function imageYaml(archive: Archive, packages: string[], recommends: boolean, install: 'unpack' | 'dpkg' = 'unpack'): string {
  return [
    'from: scratch',
    'apt:',
    '  sources:',
    `    - url: ${archive.url}`,
    `      suites: [${archive.suites.join(', ')}]`,
    `      components: [${archive.components.join(', ')}]`,
    `      keyring: ${archive.keyring}`,
    `  packages: [${packages.join(', ')}]`,
    `  install: ${install}`,
    `  recommends: ${recommends}`,
    `platforms: [linux/${ARCH}]`,
    '',
  ].join('\n');
}

test('ocibuild lock matches apt-get on Debian bookworm main amd64', { skip: !LIVE && 'set OCIBUILD_LIVE=1', timeout: 60 * 60_000 }, async (t) => {
  await compareWithApt(t, DEBIAN, CASES, 'ocibuild-live-oracle-');
});

test('ocibuild lock matches apt-get on Ubuntu noble (release, updates, security; main, universe) amd64', { skip: !LIVE_UBUNTU && 'set OCIBUILD_LIVE_UBUNTU=1', timeout: 60 * 60_000 }, async (t) => {
  const keyDir = await mkdtemp(join(tmpdir(), 'ocibuild-live-ubuntu-key-'));
  try {
    const archive: Archive = { url: UBUNTU_ARCHIVE, suites: ['noble', 'noble-updates', 'noble-security'], components: ['main', 'universe'], keyring: await ubuntuKeyring(keyDir) };
    await compareWithApt(t, archive, UBUNTU_CASES, 'ocibuild-live-oracle-ubuntu-');
  } finally {
    await rm(keyDir, { recursive: true, force: true });
  }
});

async function compareWithApt(t: TestContext, archive: Archive, cases: Case[], prefix: string): Promise<void> {
  assert.ok(existsSync(join(ROOT, 'dist/cli/main.js')), 'the CLI is not compiled: run `npm run build` first');
  const work = await mkdtemp(join(tmpdir(), prefix));
  const cacheDir = process.env.OCIBUILD_LIVE_CACHE_DIR ?? join(work, 'cache');
  const apt = await createAptSandbox({
    sources: [archive],
    arch: ARCH,
    recommends: false,
    ...(process.env.OCIBUILD_LIVE_APT_DIR ? { workDir: process.env.OCIBUILD_LIVE_APT_DIR } : {}),
  });
  try {
    await apt.update();
    for (const c of cases) {
      await t.test(`[${c.packages.join(', ')}]: ${c.why}`, async () => {
        const dir = await mkdtemp(join(work, 'spec-'));
        await writeFile(join(dir, 'image.yaml'), imageYaml(archive, c.packages, c.recommends ?? false, c.essential ? 'dpkg' : 'unpack'));
        const lock = await run(CLI, ['lock', '-f', join(dir, 'image.yaml'), '--cache-dir', cacheDir], dir);
        const lockPath = join(dir, `Packages-${archive.suites[0]}-${ARCH}.lock`);

        if (c.refused) {
          await assert.rejects(apt.installSimulate(c.packages, { recommends: c.recommends ?? false }), AptOracleError, 'apt-get was expected to refuse');
          assert.notEqual(lock.code, 0, `apt-get refuses [${c.packages.join(', ')}] but ocibuild lock succeeded:\n${lock.stdout}${lock.stderr}`);
          assert.equal(existsSync(lockPath), false, 'a refused lock must not leave a lockfile');
          return;
        }

        const request = c.essential ? [...(await essentialNames(apt.dir)), ...c.packages] : c.packages;
        const expected = await apt.installSimulate(request, { recommends: c.recommends ?? false });
        assert.equal(
          lock.code,
          0,
          `ocibuild lock failed (exit ${lock.code}) where apt-get installs ${expected.size} packages:\n${lock.stderr}${lock.stdout}`,
        );
        if (!existsSync(lockPath)) {
          assert.fail(`no ${lockPath}; the spec directory holds: ${(await readdir(dir)).join(', ')}`);
        }
        const actual = parseLockPackages(await readFile(lockPath, 'utf8'));
        const diff = diffPackageSets(expected, actual);
        assert.ok(
          diff === '',
          `ocibuild lock and apt-get differ for [${c.packages.join(', ')}] ` +
            `(apt ${expected.size} packages, ocibuild ${actual.size}):\n${diff}`,
        );
        assert.deepEqual(actual, expected);
      });
    }
  } finally {
    await apt.close();
    await rm(work, { recursive: true, force: true });
  }
}
