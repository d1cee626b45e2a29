/**
 * Rules for user-given image annotations (the spec's `annotations:` and the
 * `--annotation`, `--source`, `--revision` options). Pure; each check returns what is
 * wrong and what to write instead, and the caller adds where it was written.
 */

export const SOURCE_KEY = 'org.opencontainers.image.source';
export const REVISION_KEY = 'org.opencontainers.image.revision';

/** Keys ocibuild sets itself, and where their value comes from. */
const RESERVED: Readonly<Record<string, string>> = {
  'org.opencontainers.image.created': 'ocibuild sets it from SOURCE_DATE_EPOCH (--source-date-epoch)',
  'org.opencontainers.image.ref.name': 'ocibuild sets it from the tag of --output (oci:DIR:TAG)',
  'org.opencontainers.image.base.name': 'ocibuild sets it from the base image (from:)',
  'org.opencontainers.image.base.digest': 'ocibuild sets it from the base image (from:)',
};

export interface AnnotationProblem {
  message: string;
  hint: string;
  /** Which part is wrong, for pointing at it. */
  on: 'key' | 'value';
}

// annotations.md: keys SHOULD be reverse-domain names; anything printable without
// spaces is accepted, and '=' is left out so that --annotation KEY=VALUE is unambiguous.
const KEY_RE = /^[\x21-\x3c\x3e-\x7e]+$/;
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\x00-\x08\x0b-\x1f\x7f]/;

/** What is wrong with annotation `key` = `value`, or undefined when it is fine. */
export function annotationProblem(key: string, value: string): AnnotationProblem | undefined {
  if (!KEY_RE.test(key)) {
    return {
      message: `invalid annotation key ${JSON.stringify(key)}`,
      hint: 'write a reverse-domain name without spaces or "=", e.g. com.example.team',
      on: 'key',
    };
  }
  const reserved = RESERVED[key];
  if (reserved !== undefined) return { message: `annotation ${key} cannot be set by hand`, hint: reserved, on: 'key' };
  if (CONTROL_RE.test(value)) {
    return { message: `annotation ${key}: the value contains control characters`, hint: 'write plain text (newlines and tabs are allowed)', on: 'value' };
  }
  if (key === SOURCE_KEY) return sourceProblem(value);
  if (key === REVISION_KEY) return revisionProblem(value);
  return undefined;
}

/** org.opencontainers.image.source is "URL to get source code": an absolute URL, without secrets. */
export function sourceProblem(value: string): AnnotationProblem | undefined {
  let url: URL | undefined;
  try {
    url = /^[A-Za-z][A-Za-z0-9+.-]*:/.test(value) ? new URL(value) : undefined;
  } catch {
    url = undefined;
  }
  if (!url || /\s/.test(value)) {
    return {
      message: `${SOURCE_KEY} ${JSON.stringify(value)} is not a URL`,
      hint: 'write the repository URL, e.g. https://github.com/example/app, or --source git to take the origin remote',
      on: 'value',
    };
  }
  if (url.username !== '' || url.password !== '') {
    return {
      message: `${SOURCE_KEY} contains credentials (user or password before "@")`,
      hint: 'an annotation is public: remove the credentials from the URL',
      on: 'value',
    };
  }
  return undefined;
}

/** org.opencontainers.image.revision: one identifier, e.g. a commit hash. */
export function revisionProblem(value: string): AnnotationProblem | undefined {
  if (value === '' || /\s/.test(value)) {
    return {
      message: `${REVISION_KEY} ${JSON.stringify(value)} is not a revision`,
      hint: 'write one identifier without spaces (a commit hash or tag), or --revision git to take HEAD',
      on: 'value',
    };
  }
  return undefined;
}
