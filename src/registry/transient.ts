/**
 * Which failures are worth another attempt against a registry: broken connections,
 * bodies cut short, and statuses that say "later" (408, 429, 5xx).
 */
import { OcibuildError } from '../errors.js';
import { errorCode, isAbortError, TRANSIENT_NETWORK_CODES } from '../http/errors.js';
import { HTTP_REQUEST_BODY_LENGTH } from '../http/client.js';

// A replayed upload stream that came out short (or long): the next attempt opens a fresh one.
const TRANSIENT_CODES = new Set([...TRANSIENT_NETWORK_CODES, HTTP_REQUEST_BODY_LENGTH]);

/** A failure worth replaying: the connection broke, or a body arrived cut short. */
export function isTransientError(err: unknown): boolean {
  if (err instanceof TruncatedBodyError || err instanceof TransientStatusError) return true;
  if (err instanceof OcibuildError) return false;
  const code = errorCode(err);
  return code !== undefined && TRANSIENT_CODES.has(code);
}

/** A response body shorter than its Content-Length (or its descriptor's size). */
export class TruncatedBodyError extends Error {}

/** A 408/429/5xx answer where the caller cannot simply return the response (pings, sequences). */
export class TransientStatusError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly retryAfter?: string,
  ) {
    super(message);
  }
}

export { errorCode, isAbortError };
