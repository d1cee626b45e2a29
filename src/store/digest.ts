/**
 * `sha256:<hex>` digests as path segments. A module of its own: the OCI layout reader
 * names blob files with it and should not load the store (its locks and bookkeeping).
 */
const DIGEST_RE = /^sha256:([0-9a-f]{64})$/;

/** The hex part of a `sha256:<hex>` digest; throws (a programming error) otherwise. */
export function digestHex(digest: string): string {
  const m = DIGEST_RE.exec(digest);
  if (!m?.[1]) throw new Error(`not a sha256 digest: ${JSON.stringify(digest)}`);
  return m[1];
}
