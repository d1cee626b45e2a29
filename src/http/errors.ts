/** Reading the code off a network error, wherever Node or src/http put it. */
import { HTTP_CONNECT_TIMEOUT, HTTP_HEADERS_TIMEOUT, HTTP_IDLE_TIMEOUT } from './client.js';

/** Codes of a connection that failed or broke: worth another attempt (mirrors and registries alike). */
export const TRANSIENT_NETWORK_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  HTTP_CONNECT_TIMEOUT,
  HTTP_HEADERS_TIMEOUT,
  HTTP_IDLE_TIMEOUT,
]);

/** The first system (or src/http) code found on the error, its cause, or its AggregateError parts. */
export function errorCode(err: unknown, depth = 0): string | undefined {
  if (depth > 4 || typeof err !== 'object' || err === null) return undefined;
  const e = err as { code?: unknown; cause?: unknown; errors?: unknown };
  if (typeof e.code === 'string') return e.code;
  if (Array.isArray(e.errors)) {
    for (const inner of e.errors) {
      const c = errorCode(inner, depth + 1);
      if (c) return c;
    }
  }
  return errorCode(e.cause, depth + 1);
}

/** An AbortSignal's doing (Ctrl-C, a cancelled build), not a network failure. */
export function isAbortError(err: unknown): boolean {
  const name = (err as { name?: unknown } | null)?.name;
  return name === 'AbortError' || errorCode(err) === 'ABORT_ERR';
}
