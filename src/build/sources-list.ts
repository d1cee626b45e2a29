/**
 * /etc/apt/sources.list of an image bootstrapped from scratch that has apt, as
 * debootstrap and mmdebstrap write one: the spec's sources (those its packages were
 * locked from), one `deb` line per suite, so `apt-get update` in a RUN line (with
 * network) works. Only sources signed by a distribution's archive keyring (the default
 * keyring, or the host's copy of it named in the spec): the image's own keyring package
 * makes its apt trust those. A source signed by another keyring of the build host
 * would make `apt-get update` in the image fail as a whole, so it is left out, and the
 * caller says so.
 */
import type { AptSource } from '../spec/types.js';

const ARCHIVE_KEYRING = /^\/usr\/share\/keyrings\/(debian|ubuntu)-archive-keyring\.(gpg|pgp|asc)$/;

export function sourcesList(sources: readonly AptSource[]): { text: string | undefined; leftOut: AptSource[] } {
  const kept = sources.filter((s) => s.keyring === undefined || ARCHIVE_KEYRING.test(s.keyring));
  const lines = kept.flatMap((s) => s.suites.map((suite) => `deb ${s.url} ${suite} ${s.components.join(' ')}\n`));
  return { text: lines.length > 0 ? lines.join('') : undefined, leftOut: sources.filter((s) => !kept.includes(s)) };
}

export const SOURCES_LIST = 'etc/apt/sources.list';
