// The registries configuration podman and docker users keep: registries.conf (v2
// [[registry]] tables, v1 lists, drop-ins overriding the main file, the user's file
// instead of the system's), docker's daemon.json, and what they decide: plain HTTP,
// blocked. The blocked case end to end against a real docker-registry.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { OcibuildError } from '../../src/errors.js';
import { loadRegistryPolicy } from '../../src/registry/registries-conf.js';
import { matchesRegistry, registryBaseUrl } from '../../src/registry/reference.js';
import { ocibuild } from '../support/cli.js';
import { startRegistry, writeTinyImage } from '../support/registry.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'ocibuild-regconf-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function write(rel: string, text: string): string {
  const p = path.join(tmp, rel);
  mkdirSync(path.dirname(p), { recursive: true });
  writeFileSync(p, text);
  return p;
}

test('registries.conf v2 and v1, drop-ins override, daemon.json; namespaced locations left out', async () => {
  const conf = write(
    'sys/registries.conf',
    [
      'unqualified-search-registries = ["docker.io"]',
      '[[registry]]',
      'location = "registry.lan:5000"',
      'insecure = true',
      '[[registry]]',
      'location = "quay.io/team"',
      'insecure = true',
      '[[registry]]',
      'prefix = "*.corp.example"',
      'location = "mirror.corp.example"',
      'insecure = true',
      '[[registry]]',
      'location = "evil.example"',
      'blocked = true',
      '[[registry]]',
      'location = "was-insecure.example"',
      'insecure = true',
      '',
    ].join('\n'),
  );
  write('sys/registries.conf.d/50-override.conf', '[[registry]]\nlocation = "was-insecure.example"\ninsecure = false\n');
  write('sys/registries.conf.d/10-aliases.conf', '[aliases]\n"x" = "docker.io/library/x"\n');
  const daemon = write('docker/daemon.json', JSON.stringify({ 'insecure-registries': ['10.20.0.0/16', 'build-cache:5000'] }));
  const policy = await loadRegistryPolicy({ env: { CONTAINERS_REGISTRIES_CONF: conf, HOME: path.join(tmp, 'nohome') }, daemonJson: daemon });
  assert.deepEqual(policy.insecure.sort(), ['*.corp.example', '10.20.0.0/16', 'build-cache:5000', 'registry.lan:5000']);
  assert.deepEqual(policy.blocked, ['evil.example']);
  assert.ok(policy.sources.includes(conf) && policy.sources.includes(daemon));

  const url = (r: string): string => registryBaseUrl(r, policy.insecure);
  assert.equal(url('registry.lan:5000'), 'http://registry.lan:5000');
  assert.equal(url('registry.lan:5001'), 'https://registry.lan:5001');
  assert.equal(url('a.corp.example:443'), 'http://a.corp.example:443');
  assert.equal(url('corp.example'), 'https://corp.example');
  assert.equal(url('10.20.3.4:5000'), 'http://10.20.3.4:5000');
  assert.equal(url('10.21.3.4:5000'), 'https://10.21.3.4:5000');
  assert.equal(url('quay.io'), 'https://quay.io', 'a namespaced location does not make the registry plain HTTP');
  assert.equal(url('was-insecure.example'), 'https://was-insecure.example', 'the drop-in turned it off');
  assert.ok(matchesRegistry('0.0.0.0/0', '192.168.1.1'));
  assert.ok(!matchesRegistry('10.0.0.0/8', 'ten.example'));
});

test('v1 lists; the user file replaces the system one; a broken file is named with its line', async () => {
  const home = path.join(tmp, 'home');
  write('home/.config/containers/registries.conf', '[registries.insecure]\nregistries = ["old.lan"]\n[registries.block]\nregistries = ["blocked.lan"]\n');
  const system = write('sys2/registries.conf', '[[registry]]\nlocation = "system-only.lan"\ninsecure = true\n');
  const policy = await loadRegistryPolicy({ env: { HOME: home }, systemConf: system, daemonJson: path.join(tmp, 'none.json') });
  assert.deepEqual(policy.insecure, ['old.lan']);
  assert.deepEqual(policy.blocked, ['blocked.lan']);

  const broken = write('broken/registries.conf', '[[registry]]\nlocation = "x"\ninsecure = yes please\n');
  await assert.rejects(loadRegistryPolicy({ env: { CONTAINERS_REGISTRIES_CONF: broken }, daemonJson: path.join(tmp, 'none.json') }), (err: unknown) => {
    assert.ok(err instanceof OcibuildError);
    assert.match(err.where ?? '', /broken\/registries\.conf:3$/);
    return true;
  });
  const badJson = write('docker2/daemon.json', '{"insecure-registries": [');
  await assert.rejects(loadRegistryPolicy({ env: { CONTAINERS_REGISTRIES_CONF: path.join(tmp, 'missing.conf') }, daemonJson: badJson }), /cannot read .*daemon\.json/);
});

test('a registry blocked in registries.conf is refused by push, naming the file', async () => {
  const registry = await startRegistry();
  try {
    const conf = write('block/registries.conf', `[[registry]]\nlocation = "${registry.host}"\nblocked = true\n`);
    const image = await writeTinyImage(path.join(tmp, 'image'));
    const r = await ocibuild(['push', image.ref, `${registry.host}/blocked/app:1`], { CONTAINERS_REGISTRIES_CONF: conf });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`the registry ${registry.host.replace(/\./g, '\\.')} is blocked by the registries configuration`));
    assert.ok(r.stderr.includes(conf), r.stderr);
    const allowed = await ocibuild(['push', image.ref, `${registry.host}/blocked/app:1`], { CONTAINERS_REGISTRIES_CONF: path.join(tmp, 'missing.conf') });
    assert.equal(allowed.code, 0, allowed.stderr);
  } finally {
    await registry.stop();
  }
});
