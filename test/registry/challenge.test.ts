import { test } from 'node:test';
import assert from 'node:assert/strict';
import { findChallenge, insufficientScope, parseWwwAuthenticate, type Challenge } from '../../src/registry/challenge.js';

const bearer = (params: Record<string, string>): Challenge => ({ scheme: 'bearer', params });
const basic = (params: Record<string, string>): Challenge => ({ scheme: 'basic', params });

// [header value(s), challenges]
const CASES: Array<[string | string[], Challenge[]]> = [
  // what registries send
  ['Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull"',
    [bearer({ realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/ubuntu:pull' })]],
  ['Basic realm="Registry Realm"', [basic({ realm: 'Registry Realm' })]],
  ['Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:o/a:pull,push",error="insufficient_scope"',
    [bearer({ realm: 'https://ghcr.io/token', service: 'ghcr.io', scope: 'repository:o/a:pull,push', error: 'insufficient_scope' })]],
  // scheme and parameter names are case-insensitive; values keep their case
  ['BEARER Realm="R", SERVICE=Svc', [bearer({ realm: 'R', service: 'Svc' })]],
  ['bAsIc REALM=x', [basic({ realm: 'x' })]],
  // whitespace: around "=", after commas, leading and trailing, tabs
  ['  Bearer   realm = "r" ,\tservice\t=\ts  ', [bearer({ realm: 'r', service: 's' })]],
  // several challenges in one header
  ['Basic realm="a", Bearer realm="b", service="c"', [basic({ realm: 'a' }), bearer({ realm: 'b', service: 'c' })]],
  ['Bearer realm="b",Basic realm="a"', [bearer({ realm: 'b' }), basic({ realm: 'a' })]],
  ['Basic, Bearer realm="x"', [basic({}), bearer({ realm: 'x' })]],
  ['Basic realm=a, Negotiate, Bearer', [basic({ realm: 'a' }), { scheme: 'negotiate', params: {} }, bearer({})]],
  // several headers
  [['Basic realm="a"', 'Bearer realm="b"'], [basic({ realm: 'a' }), bearer({ realm: 'b' })]],
  [['Bearer realm="b", Basic realm="a"', 'Custom x=1'], [bearer({ realm: 'b' }), basic({ realm: 'a' }), { scheme: 'custom', params: { x: '1' } }]],
  [[], []],
  // quoted strings: commas, "=" and escapes inside quotes
  ['Bearer scope="repository:a/b:pull,push", realm="r"', [bearer({ scope: 'repository:a/b:pull,push', realm: 'r' })]],
  ['Bearer realm="a\\"b\\\\c\\d"', [bearer({ realm: 'a"b\\cd' })]],
  ['Bearer realm="x=y, Basic realm=z"', [bearer({ realm: 'x=y, Basic realm=z' })]],
  ['Bearer realm=""', [bearer({ realm: '' })]],
  // token68
  ['Negotiate YIIC+/abc==', [{ scheme: 'negotiate', params: {}, token68: 'YIIC+/abc==' }]],
  ['Negotiate abc, Basic realm="r"', [{ scheme: 'negotiate', params: {}, token68: 'abc' }, basic({ realm: 'r' })]],
  ['Basic dXNlcjpwYXNz=', [{ scheme: 'basic', params: {}, token68: 'dXNlcjpwYXNz=' }]],
  // unknown schemes are kept
  ['X-Custom-Auth a=1, b="2"', [{ scheme: 'x-custom-auth', params: { a: '1', b: '2' } }]],
  // empty list elements (RFC 9110 5.6.1)
  [', , Basic realm=a ,, , Bearer realm=b,', [basic({ realm: 'a' }), bearer({ realm: 'b' })]],
  // the first of a repeated parameter wins
  ['Bearer realm=a, realm=b', [bearer({ realm: 'a' })]],
  // unquoted URL values (not RFC tokens, sent by some servers)
  ['Bearer realm=https://auth.example.com/token,service=example', [bearer({ realm: 'https://auth.example.com/token', service: 'example' })]],
  // a parameter called __proto__ is an ordinary parameter
  ['Bearer __proto__=x', [bearer(Object.defineProperty({}, '__proto__', { value: 'x', enumerable: true, writable: true, configurable: true }))]],
  // garbage: nothing throws, what can be read is kept
  ['', []],
  ['   ', []],
  [',,,', []],
  ['"just a string"', []],
  ['=oops, Basic realm=a', [basic({ realm: 'a' })]],
  ['Bearer=x, Basic realm=a', [basic({ realm: 'a' })]],
  ['Bearer realm="unterminated', [bearer({})]],
  ['Bearer realm="r", service="unterminated, Basic realm=a', [bearer({ realm: 'r' })]],
  ['Bearer realm="r" junk, service=s', [bearer({ realm: 'r', service: 's' })]],
  ['Bearer realm="r"; service=s', [bearer({ realm: 'r' })]],
  ['Bearer @@@, Basic realm=a', [bearer({}), basic({ realm: 'a' })]],
  // "realm=" then a comma is a token68 by the grammar; the element after it is no challenge
  ['Bearer realm=, service=s', [{ scheme: 'bearer', params: {}, token68: 'realm=' }]],
  ['Bearer ="x", realm=r', [bearer({ realm: 'r' })]],
  ['Bearer realm="r",\u00ff=1, service=s', [bearer({ realm: 'r', service: 's' })]],
  ['\u00e9\u00e9 Basic realm=a', []],
  ['\u00e9\u00e9, Basic realm=a', [basic({ realm: 'a' })]],
];

for (const [input, expected] of CASES) {
  test(`parseWwwAuthenticate(${JSON.stringify(input)})`, () => {
    assert.deepEqual(parseWwwAuthenticate(input), expected);
  });
}

test('parseWwwAuthenticate never throws on arbitrary input', () => {
  // deterministic pseudo-random strings over the characters that matter to the grammar
  const alphabet = 'aB =,"\\\t/+~.:;@é';
  let seed = 12345;
  const next = (): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed;
  };
  for (let i = 0; i < 3000; i++) {
    let s = '';
    const length = next() % 40;
    for (let j = 0; j < length; j++) s += alphabet[next() % alphabet.length];
    const challenges = parseWwwAuthenticate(s);
    for (const c of challenges) {
      assert.match(c.scheme, /^[!#$%&'*+\-.^_`|~0-9a-z]+$/, JSON.stringify(s));
      for (const key of Object.keys(c.params)) assert.equal(key, key.toLowerCase());
    }
  }
});

test('insufficientScope', () => {
  const cases: Array<[string, string | undefined]> = [
    ['Bearer realm="r",error="insufficient_scope",scope="repository:a/b:pull,push"', 'repository:a/b:pull,push'],
    ['Bearer error=INSUFFICIENT_SCOPE, scope=repository:a:pull', 'repository:a:pull'],
    ['Bearer realm="r",error="invalid_token",scope="repository:a/b:pull"', undefined],
    ['Bearer realm="r",scope="repository:a/b:pull"', undefined],
    ['Bearer error="insufficient_scope"', undefined],
  ];
  for (const [header, scope] of cases) {
    const [ch] = parseWwwAuthenticate(header);
    assert.ok(ch, header);
    assert.equal(insufficientScope(ch), scope, header);
  }
});

test('findChallenge picks the first of a scheme, case-insensitively', () => {
  const chs = parseWwwAuthenticate('Basic realm=a, Bearer realm=b, bearer realm=c');
  assert.deepEqual(findChallenge(chs, 'Bearer'), bearer({ realm: 'b' }));
  assert.deepEqual(findChallenge(chs, 'basic'), basic({ realm: 'a' }));
  assert.equal(findChallenge(chs, 'digest'), undefined);
});
