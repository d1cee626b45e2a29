/**
 * WWW-Authenticate challenges (RFC 7235 section 4.1, grammar in 2.1 and RFC 9110
 * 11.6.1):
 *
 *   WWW-Authenticate = 1#challenge
 *   challenge  = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
 *   auth-param = token BWS "=" BWS ( token / quoted-string )
 *
 * A comma separates both the parameters of one challenge and the challenges
 * themselves; a token followed by "=" is a parameter, any other token starts the
 * next challenge. Servers get this wrong in many ways, so the parser never throws:
 * it skips what it cannot read up to the next comma and keeps the rest.
 */

export interface Challenge {
  /** Lower-case: "basic", "bearer". */
  scheme: string;
  /** Parameter names lower-case, values unquoted; the first of a repeated name wins. */
  params: Record<string, string>;
  /** The token68 form ("Negotiate abc=="), which has no parameters. */
  token68?: string;
}

// RFC 9110 5.6.2 tchar
const TCHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;
// RFC 7235 2.1 token68 characters, before the trailing "="s
const T68CHAR = /[-._~+/0-9A-Za-z]/;
// An unquoted value should be a token; some servers send URLs unquoted
// (realm=https://…), so anything up to whitespace or a comma is taken.
const UNQUOTED = /[^ \t,"]/;

class Scanner {
  pos = 0;
  constructor(readonly s: string) {}

  get done(): boolean {
    return this.pos >= this.s.length;
  }

  peek(): string {
    return this.s.charAt(this.pos);
  }

  /** Optional whitespace (OWS/BWS): spaces and tabs. */
  skipSpace(): void {
    while (this.peek() === ' ' || this.peek() === '\t') this.pos++;
  }

  /** Whitespace and the empty list elements "1#" allows (", ,"). */
  skipSeparators(): void {
    while (this.peek() === ' ' || this.peek() === '\t' || this.peek() === ',') this.pos++;
  }

  run(re: RegExp): string {
    const start = this.pos;
    while (!this.done && re.test(this.peek())) this.pos++;
    return this.s.slice(start, this.pos);
  }

  /** A quoted-string from its opening quote; undefined when it is never closed. */
  quoted(): string | undefined {
    this.pos++;
    let value = '';
    while (!this.done) {
      const c = this.peek();
      this.pos++;
      if (c === '"') return value;
      if (c === '\\') {
        if (this.done) break;
        value += this.peek();
        this.pos++;
      } else {
        value += c;
      }
    }
    return undefined;
  }

  /** Past the next comma that is not inside a quoted-string (or to the end). */
  skipElement(): void {
    while (!this.done) {
      const c = this.peek();
      if (c === ',') return;
      if (c === '"') this.quoted();
      else this.pos++;
    }
  }
}

/** Parse one or several WWW-Authenticate header values into their challenges, in order. */
export function parseWwwAuthenticate(values: string | string[]): Challenge[] {
  const list = typeof values === 'string' ? [values] : values;
  const challenges: Challenge[] = [];
  for (const value of list) {
    if (typeof value === 'string') parseHeader(value, challenges);
  }
  return challenges;
}

function parseHeader(header: string, out: Challenge[]): void {
  const sc = new Scanner(header);
  for (;;) {
    sc.skipSeparators();
    if (sc.done) return;
    const scheme = sc.run(TCHAR);
    if (scheme === '') {
      sc.pos++;
      sc.skipElement();
      continue;
    }
    const afterScheme = sc.pos;
    sc.skipSpace();
    // Without a space after it, only "," or the end may follow a scheme.
    if (sc.pos === afterScheme && !sc.done && sc.peek() !== ',') {
      sc.skipElement();
      continue;
    }
    const challenge: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    out.push(challenge);
    if (readToken68(sc, challenge)) continue;
    readParams(sc, challenge);
  }
}

/** token68 is the whole rest of the element: characters, "="s, then "," or the end. */
function readToken68(sc: Scanner, challenge: Challenge): boolean {
  const start = sc.pos;
  const chars = sc.run(T68CHAR);
  if (chars !== '') {
    const equals = sc.run(/=/);
    sc.skipSpace();
    if (sc.done || sc.peek() === ',') {
      challenge.token68 = chars + equals;
      return true;
    }
  }
  sc.pos = start;
  return false;
}

function readParams(sc: Scanner, challenge: Challenge): void {
  for (;;) {
    sc.skipSeparators();
    if (sc.done) return;
    const start = sc.pos;
    const name = sc.run(TCHAR);
    if (name === '') {
      // Not a parameter and not a scheme: drop this element.
      sc.skipElement();
      continue;
    }
    sc.skipSpace();
    if (sc.peek() !== '=') {
      // A token without "=" is the next challenge's scheme.
      sc.pos = start;
      return;
    }
    sc.pos++;
    sc.skipSpace();
    const value = sc.peek() === '"' ? sc.quoted() : sc.run(UNQUOTED);
    if (value === undefined) return;
    const key = name.toLowerCase();
    if (!Object.hasOwn(challenge.params, key)) {
      // defineProperty, so that a parameter named "__proto__" is just a parameter.
      Object.defineProperty(challenge.params, key, { value, enumerable: true, writable: true, configurable: true });
    }
    sc.skipSpace();
    // Junk after a value (a missing comma, a stray quote) is skipped, the value kept.
    if (!sc.done && sc.peek() !== ',') sc.skipElement();
  }
}

/**
 * The scope a Bearer challenge asks for when the token in hand was not enough
 * (`error="insufficient_scope"`, RFC 6750 3.1), e.g. "repository:a/b:pull,push".
 */
export function insufficientScope(ch: Challenge): string | undefined {
  if (ch.params.error?.toLowerCase() !== 'insufficient_scope') return undefined;
  return ch.params.scope;
}

/** The first challenge of `scheme` (case-insensitive), e.g. findChallenge(chs, 'bearer'). */
export function findChallenge(challenges: readonly Challenge[], scheme: string): Challenge | undefined {
  const wanted = scheme.toLowerCase();
  return challenges.find((c) => c.scheme === wanted);
}
