// The pure parts of RUN steps, table-driven: users from passwd/group, the environment,
// the script, overlay mount options, symlink resolution inside a rootfs, backend
// command lines, output tails, ldd parsing and the sandbox detection's diagnoses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { OcibuildError } from '../../src/errors.js';
import { bwrapArgs } from '../../src/sandbox/bwrap.js';
import { detectSandbox, usernsBlocker, type DetectDeps } from '../../src/sandbox/detect.js';
import { isPropagateNoise, nspawnArgs } from '../../src/sandbox/nspawn.js';
import { commonParent, overlayMountData } from '../../src/sandbox/overlay.js';
import { LineTail } from '../../src/sandbox/process.js';
import { resolveInRoot } from '../../src/sandbox/rootpath.js';
import { DEFAULT_PATH, failedLine, stepEnv, stepScript } from '../../src/sandbox/run-step.js';
import type { SandboxSpec } from '../../src/sandbox/spec.js';
import { parseLdd } from '../../src/sandbox/uid-helper.js';
import { resolveUser } from '../../src/sandbox/user.js';
import { scratchDirs } from '../support/scratch.js';

const scratch = await scratchDirs('run-units');

const PASSWD = 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/home/app:/bin/sh\nweb:x:33:33::/var/www:/usr/sbin/nologin\nbroken line\n';
const GROUP = 'root:x:0:\nstaff:x:50:app,web\napp:x:1000:\nwww-data:x:33:\nextra:x:70:app\n';

test('resolveUser: the forms of an image config User', () => {
  const cases: Array<[string, { uid: number; gid: number; groups: number[]; home: string }]> = [
    ['', { uid: 0, gid: 0, groups: [0], home: '/root' }],
    ['root', { uid: 0, gid: 0, groups: [0], home: '/root' }],
    ['app', { uid: 1000, gid: 1000, groups: [50, 70, 1000], home: '/home/app' }],
    ['1000', { uid: 1000, gid: 1000, groups: [50, 70, 1000], home: '/home/app' }],
    ['app:staff', { uid: 1000, gid: 50, groups: [50], home: '/home/app' }],
    ['app:33', { uid: 1000, gid: 33, groups: [33], home: '/home/app' }],
    ['1000:1000', { uid: 1000, gid: 1000, groups: [1000], home: '/home/app' }],
    ['4242', { uid: 4242, gid: 0, groups: [0], home: '/' }],
    ['4242:4343', { uid: 4242, gid: 4343, groups: [4343], home: '/' }],
    ['0:0', { uid: 0, gid: 0, groups: [0], home: '/root' }],
    ['web', { uid: 33, gid: 33, groups: [33, 50], home: '/var/www' }],
  ];
  for (const [spec, want] of cases) assert.deepEqual(resolveUser(spec, PASSWD, GROUP), want, spec);
});

test('resolveUser: unknown names are errors that say where to look', () => {
  const cases: Array<[string, string | undefined, RegExp]> = [
    ['nobody', PASSWD, /user "nobody" is not in the image's \/etc\/passwd/],
    ['app:nogroup', PASSWD, /group "nogroup" is not in the image's \/etc\/group/],
    ['app', undefined, /user "app" is not in the image's \/etc\/passwd/],
    ['app:', PASSWD, /empty group/],
    [':50', PASSWD, /names a group but no user/],
    ['4294967296', PASSWD, /out of range/],
  ];
  for (const [spec, passwd, re] of cases) {
    assert.throws(() => resolveUser(spec, passwd, GROUP), (e: unknown) => e instanceof OcibuildError && re.test(e.message), spec);
  }
  assert.throws(() => resolveUser('app', undefined, undefined), (e: OcibuildError) => /numeric uid/.test(e.hint ?? ''));
});

test('stepEnv: config Env, then the step, PATH and HOME defaults, SOURCE_DATE_EPOCH always ours', () => {
  assert.deepEqual(stepEnv({ Env: ['A=1', 'B=x=y', 'SOURCE_DATE_EPOCH=5', 'EMPTY'] }, { A: '2', C: '3' }, '/home/app', 1234), [
    ['B', 'x=y'],
    ['EMPTY', ''],
    ['A', '2'],
    ['C', '3'],
    ['PATH', DEFAULT_PATH],
    ['HOME', '/home/app'],
    ['SOURCE_DATE_EPOCH', '1234'],
  ]);
  assert.deepEqual(stepEnv({ Env: ['PATH=/bin', 'HOME=/h'] }, undefined, '/root', 1), [
    ['PATH', '/bin'],
    ['HOME', '/h'],
    ['SOURCE_DATE_EPOCH', '1'],
  ]);
  assert.throws(() => stepEnv(undefined, { 'A=B': 'x' }, '/', 1), OcibuildError);
});

test('stepScript: one script, set -e and a fixed umask first, on the first line (the shell\'s line numbers are the spec\'s)', () => {
  assert.equal(stepScript(['apt-get update', 'if true; then', '  echo x', 'fi']), 'set -e; umask 0022; apt-get update\nif true; then\n  echo x\nfi');
  assert.equal(stepScript([]), 'set -e; umask 0022');
});

test('failedLine: the line the shell names, multi-line commands counted', () => {
  const lines = ['echo a', 'if true; then\n  nosuch\nfi', 'useradd app'];
  assert.equal(failedLine(lines, ['a', '/bin/sh: 5: useradd: not found']), 2);
  assert.equal(failedLine(lines, ['/bin/sh: 4: Syntax error: end of file unexpected']), 1);
  assert.equal(failedLine(lines, ['/bin/sh: 3: nosuch: not found']), 1);
  assert.equal(failedLine(lines, ['/bin/sh: line 1: x: command not found']), 0, 'bash as /bin/sh');
  assert.equal(failedLine(lines, ['sh: 1: nested: not found']), undefined, "a nested sh -c's line is not the step's");
  assert.equal(failedLine(lines, ['make: *** [all] Error 1']), undefined, 'a command that only exits non-zero');
  assert.equal(failedLine(lines, ['sh: 9: beyond the script']), undefined);
});

test('overlayMountData: paths relative to the holder directory, the plain-diff options, userxattr without root', () => {
  const layout = { lowers: ['/s/steps/2/upper', '/s/rootfs/abc', '/s/steps/3/scaffold'], upper: '/s/steps/3/upper', work: '/s/steps/3/work', merged: '/s/steps/3/merged' };
  const cwd = commonParent([...layout.lowers, layout.upper, layout.work, layout.merged]);
  assert.equal(cwd, '/s');
  assert.equal(
    overlayMountData(layout, { userns: true, options: ['redirect_dir=nofollow', 'metacopy=off'] }, cwd),
    'lowerdir=steps/2/upper:rootfs/abc:steps/3/scaffold,upperdir=steps/3/upper,workdir=steps/3/work,userxattr,redirect_dir=nofollow,metacopy=off',
  );
  assert.equal(overlayMountData(layout, { userns: false, options: [] }, cwd), 'lowerdir=steps/2/upper:rootfs/abc:steps/3/scaffold,upperdir=steps/3/upper,workdir=steps/3/work');
  assert.equal(commonParent(['/a/b', '/a/b/c']), '/a');
  assert.equal(commonParent(['/x/1', '/y/2']), '/');
  for (const bad of ['/s/a,b', '/s/a:b', '/s/a\\b']) {
    assert.throws(() => overlayMountData({ ...layout, lowers: [bad] }, { userns: false, options: [] }, '/s'), /overlayfs cannot take the path/);
  }
  const many = { ...layout, lowers: Array.from({ length: 300 }, (_, i) => `/s/steps/${i}/upper-with-a-long-name`) };
  assert.throws(() => overlayMountData(many, { userns: false, options: [] }, '/s'), /over the kernel's limit/);
});

test('resolveInRoot: symlinks are followed inside the rootfs, never out of it', async () => {
  const root = await scratch('root');
  await mkdir(join(root, 'etc'));
  await mkdir(join(root, 'run/systemd'), { recursive: true });
  await writeFile(join(root, 'etc/real'), 'x');
  await symlink('../run/systemd/resolve/stub-resolv.conf', join(root, 'etc/resolv.conf'));
  await symlink('/etc/real', join(root, 'etc/abs'));
  await symlink('../../../../etc/real', join(root, 'etc/up'));
  await symlink('/', join(root, 'etc/top'));
  await symlink('loop2', join(root, 'etc/loop1'));
  await symlink('loop1', join(root, 'etc/loop2'));
  await symlink('/run', join(root, 'var'));
  const cases: Array<[string, { path: string; kind: string | undefined; missingFrom?: string }]> = [
    ['/etc/real', { path: '/etc/real', kind: 'file' }],
    ['/etc/abs', { path: '/etc/real', kind: 'file' }],
    ['/etc/up', { path: '/etc/real', kind: 'file' }],
    ['/etc/top/etc/real', { path: '/etc/real', kind: 'file' }],
    ['/etc/resolv.conf', { path: '/run/systemd/resolve/stub-resolv.conf', kind: undefined, missingFrom: '/run/systemd/resolve' }],
    ['/var/secrets/x', { path: '/run/secrets/x', kind: undefined, missingFrom: '/run/secrets' }],
    ['/', { path: '/', kind: 'dir' }],
    ['/../../etc', { path: '/etc', kind: 'dir' }],
  ];
  for (const [p, want] of cases) assert.deepEqual(await resolveInRoot(root, p), want, p);
  await assert.rejects(resolveInRoot(root, '/etc/loop1'), /too many levels of symbolic links/);
  await assert.rejects(resolveInRoot(root, '/etc/real/x'), /"\/etc\/real" is not a directory/);
});

const SPEC: SandboxSpec = {
  root: '/b/merged',
  enter: ['nsenter', '--target=1', '--mount', '--'],
  userns: 'none',
  argv: ['/bin/sh', '-c', 'set -e\ntrue'],
  env: [
    ['PATH', '/bin'],
    ['SOURCE_DATE_EPOCH', '1'],
  ],
  cwd: '/srv',
  uid: 0,
  gid: 0,
  hostname: 'ocibuild',
  network: false,
  tmpfs: [
    { path: '/tmp', mode: 0o1777 },
    { path: '/run', mode: 0o755 },
  ],
  binds: [
    { source: '/etc/resolv.conf', target: '/etc/resolv.conf', readOnly: true },
    { source: '/h/cache:x', target: '/var/cache/a:b', readOnly: false },
  ],
};

test('bwrapArgs: the merged tree as /, fresh kernel filesystems, namespaces, exact environment', () => {
  const a = bwrapArgs(SPEC, 3);
  const text = a.join(' ');
  assert.ok(text.startsWith('bwrap --bind /b/merged / --proc /proc --dev /dev --perms 1777 --tmpfs /dev/shm --perms 1777 --tmpfs /tmp --perms 0755 --tmpfs /run '));
  assert.ok(text.includes('--ro-bind /etc/resolv.conf /etc/resolv.conf --bind /h/cache:x /var/cache/a:b'));
  assert.ok(a.includes('--unshare-net'));
  assert.ok(!a.includes('--unshare-user'), 'as root no user namespace: ids stay real');
  assert.ok(text.includes('--clearenv --setenv PATH /bin --setenv SOURCE_DATE_EPOCH 1 --chdir /srv --info-fd 3 -- /bin/sh -c'));
  assert.ok(!bwrapArgs({ ...SPEC, network: true }).includes('--unshare-net'));
  const nested = bwrapArgs({ ...SPEC, userns: 'inside', uid: 1000, gid: 50 }).join(' ');
  assert.ok(nested.includes('--unshare-user --uid 1000 --gid 50'));
  assert.ok(!bwrapArgs({ ...SPEC, userns: 'inside' }).includes('--unshare-user'), 'root inside the holder namespace needs none');
});

test('nspawnArgs: flags for a machine without systemd as PID 1, escaped binds, injected variables unset', () => {
  const a = nspawnArgs(SPEC, 'ocibuild-abc');
  for (const flag of ['--register=no', '--keep-unit', '--as-pid2', '--pipe', '--settings=no', '--resolv-conf=off', '--timezone=off', '--link-journal=no', '--private-network', '--directory=/b/merged', '--chdir=/srv', '--hostname=ocibuild', '--machine=ocibuild-abc']) {
    assert.ok(a.includes(flag), flag);
  }
  assert.ok(a.includes('--bind-ro=/etc/resolv.conf:/etc/resolv.conf'));
  assert.ok(a.includes('--bind=/h/cache\\:x:/var/cache/a\\:b'));
  assert.ok(a.includes('--setenv=PATH=/bin'));
  const wrapper = a[a.indexOf('-c') + 1]!;
  assert.ok(a.slice(0, 3).join(' ') === 'setpriv --pdeathsig=TERM --');
  assert.match(wrapper, /^unset container container_uuid .*TERM HOME .*SHLVL; exec "\$@"$/);
  assert.doesNotMatch(wrapper, / PATH /, 'PATH is given, so it is overridden, not unset');
  assert.ok(!nspawnArgs({ ...SPEC, network: true }, 'm').includes('--private-network'));
  assert.throws(() => nspawnArgs({ ...SPEC, userns: 'inside' }, 'm'));
  assert.ok(isPropagateNoise('Attempted to remove disk file system under "/run/systemd/nspawn/propagate/ocibuild-0a1b", and we can\'t allow that.'));
  assert.ok(!isPropagateNoise('Attempted to remove disk file system under "/somewhere/else", and we can\'t allow that.'));
});

test('LineTail: the last lines of interleaved streams, partial lines kept per stream', () => {
  const t = new LineTail(3);
  t.push('stdout', 'a\nb');
  t.push('stderr', 'E1\n');
  t.push('stdout', 'c\nd\r\n');
  t.push('stderr', 'tail without newline');
  assert.deepEqual(t.finish(), ['bc', 'd', 'tail without newline']);
});

test('parseLdd: the loader and the libraries', () => {
  const out = '\tlinux-vdso.so.1 (0x00007ffd)\n\tlibcap-ng.so.0 => /lib/x86_64-linux-gnu/libcap-ng.so.0 (0x00007f54)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f54)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f54)\n';
  assert.deepEqual(parseLdd(out), {
    loader: '/lib64/ld-linux-x86-64.so.2',
    libs: [
      { soname: 'libcap-ng.so.0', path: '/lib/x86_64-linux-gnu/libcap-ng.so.0' },
      { soname: 'libc.so.6', path: '/lib/x86_64-linux-gnu/libc.so.6' },
    ],
  });
});

function deps(over: Partial<DetectDeps> & { have?: string[]; sysctl?: Record<string, string> }): DetectDeps {
  const have = new Set(over.have ?? ['bwrap', 'systemd-nspawn', 'unshare', 'nsenter', 'mount', 'setpriv', 'true']);
  return {
    uid: over.uid ?? 1000,
    which: async (n) => (have.has(n) ? `/usr/bin/${n}` : undefined),
    readSysctl: async (p) => over.sysctl?.[p],
    trial: over.trial ?? (async () => ({ code: 0, output: '' })),
  };
}

test('detectSandbox: bwrap by default, nspawn on request as root', async () => {
  assert.deepEqual(await detectSandbox('auto', deps({ uid: 1000 })), { kind: 'bwrap', root: false, namespaced: false });
  assert.deepEqual(await detectSandbox('auto', deps({ uid: 0 })), { kind: 'bwrap', root: true, namespaced: false });
  assert.deepEqual(await detectSandbox('nspawn', deps({ uid: 0 })), { kind: 'nspawn', root: true, namespaced: false });
  assert.deepEqual(await detectSandbox('auto', deps({ uid: 0, have: ['systemd-nspawn', 'unshare', 'nsenter', 'mount', 'setpriv'] })), { kind: 'nspawn', root: true, namespaced: false });
});

test('detectSandbox: errors say what to install and which kernel feature is off', async () => {
  const cases: Array<[string, Parameters<typeof deps>[0], 'auto' | 'bwrap' | 'nspawn', RegExp, RegExp]> = [
    ['nothing installed, no root', { uid: 1000, have: [] }, 'auto', /bwrap: bwrap is not installed; systemd-nspawn: systemd-nspawn needs root/, /apt-get install bubblewrap/],
    ['nothing installed, root', { uid: 0, have: ['unshare', 'nsenter', 'mount', 'setpriv'] }, 'auto', /systemd-nspawn is not installed/, /apt-get install bubblewrap.*apt-get install systemd-container/],
    ['no util-linux', { uid: 0, have: ['bwrap', 'mount'] }, 'bwrap', /unshare is not installed/, /util-linux/],
    ['nspawn without root', { uid: 1000 }, 'nspawn', /sandbox nspawn cannot be used: systemd-nspawn needs root/, /sandbox: bwrap/],
    [
      'Debian switch off',
      { uid: 1000, sysctl: { '/proc/sys/kernel/unprivileged_userns_clone': '0' } },
      'bwrap',
      /kernel\.unprivileged_userns_clone = 0/,
      /run ocibuild as root/,
    ],
    ['no user namespaces', { uid: 1000, sysctl: { '/proc/sys/user/max_user_namespaces': '0' } }, 'bwrap', /user\.max_user_namespaces = 0/, /root/],
    ['AppArmor', { uid: 1000, sysctl: { '/proc/sys/kernel/apparmor_restrict_unprivileged_userns': '1' } }, 'bwrap', /AppArmor restricts unprivileged user namespaces/, /root/],
    [
      'bwrap refused by the kernel',
      { uid: 0, trial: async (argv) => (argv[0] === 'bwrap' ? { code: 1, output: 'bwrap: Creating new namespace failed: Operation not permitted' } : { code: 0, output: '' }) },
      'bwrap',
      /a trial bwrap run failed: bwrap: Creating new namespace failed: Operation not permitted/,
      /CAP_SYS_ADMIN/,
    ],
    [
      'nspawn refused',
      { uid: 0, trial: async (argv) => (argv[0] === 'systemd-nspawn' ? { code: 1, output: 'Failed to create /init.scope control group' } : { code: 0, output: '' }) },
      'nspawn',
      /a trial systemd-nspawn run failed \(exit code 1\): Failed to create \/init\.scope control group/,
      /bwrap/,
    ],
  ];
  for (const [name, d, req, message, hint] of cases) {
    await assert.rejects(detectSandbox(req, deps(d)), (e: unknown) => {
      assert.ok(e instanceof OcibuildError, name);
      assert.match(e.message, message, name);
      assert.match(e.hint ?? '', hint, name);
      return true;
    });
  }
  assert.equal(await usernsBlocker(async () => undefined), undefined);
});
