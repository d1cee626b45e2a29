/**
 * The members in which two JSON documents (image configs, manifests, indices) differ,
 * named by their path (`config.Env[1]`, `annotations["org.opencontainers.image.created"]`,
 * `layers[2].digest`). Pure; what `ocibuild verify` prints when a config or manifest
 * digest differs.
 */

export interface JsonDifference {
  /** `rootfs.diff_ids[1]`; '' for the whole document. */
  path: string;
  /** The value on each side as compact JSON, cut to a readable length; undefined: absent. */
  a?: string;
  b?: string;
}

export interface JsonDiff {
  /** The first `limit` differences, in document order. */
  differences: JsonDifference[];
  total: number;
}

const MAX_VALUE = 100;

export function diffJson(a: unknown, b: unknown, limit = 50): JsonDiff {
  const differences: JsonDifference[] = [];
  let total = 0;
  const add = (path: string, x: unknown, y: unknown): void => {
    total++;
    if (differences.length >= limit) return;
    const d: JsonDifference = { path };
    if (x !== undefined) d.a = show(x);
    if (y !== undefined) d.b = show(y);
    differences.push(d);
  };
  const walk = (path: string, x: unknown, y: unknown): void => {
    if (Array.isArray(x) && Array.isArray(y)) {
      for (let i = 0; i < Math.max(x.length, y.length); i++) walk(`${path}[${i}]`, x[i], y[i]);
      return;
    }
    if (isObject(x) && isObject(y)) {
      const keys = [...new Set([...Object.keys(x), ...Object.keys(y)])].sort();
      for (const k of keys) walk(member(path, k), x[k], y[k]);
      return;
    }
    if (JSON.stringify(x) !== JSON.stringify(y)) add(path, x, y);
  };
  walk('', a, b);
  return { differences, total };
}

/** `path: A vs B`, with `(absent)` for a missing member. */
export function formatJsonDifference(d: JsonDifference): string {
  return `${d.path === '' ? '(document)' : d.path}: ${d.a ?? '(absent)'} vs ${d.b ?? '(absent)'}`;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function member(path: string, key: string): string {
  if (/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(key)) return path === '' ? key : `${path}.${key}`;
  return `${path}[${JSON.stringify(key)}]`;
}

function show(v: unknown): string {
  const text = JSON.stringify(v) ?? String(v);
  return text.length > MAX_VALUE ? `${text.slice(0, MAX_VALUE - 1)}…` : text;
}
