/**
 * The one error type users see. It carries what went wrong, the thing it concerns
 * (file:line:col, package, URL), a hint on what to do, and the exit code.
 * Internal bugs stay ordinary exceptions with stack traces.
 */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export interface OcibuildErrorOptions {
  /** What the error concerns: "image.yaml:3:5", a package name, a URL. */
  where?: string;
  /** What the user can do about it. */
  hint?: string;
  /** 1 for failures, 2 for usage and spec errors. */
  exitCode?: number;
  cause?: unknown;
}

export class OcibuildError extends Error {
  readonly where: string | undefined;
  readonly hint: string | undefined;
  readonly exitCode: number;

  constructor(message: string, options: OcibuildErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'OcibuildError';
    this.where = options.where;
    this.hint = options.hint;
    this.exitCode = options.exitCode ?? EXIT_FAILURE;
  }

  /** The text printed to stderr: "where: message" then "  hint: ...". */
  format(): string {
    const head = this.where ? `${this.where}: ${this.message}` : this.message;
    return this.hint ? `${head}\n  hint: ${this.hint}` : head;
  }
}

/** A spec or usage error (exit code 2). */
export function usageError(message: string, where?: string, hint?: string): OcibuildError {
  return new OcibuildError(message, { where, hint, exitCode: EXIT_USAGE });
}
