/**
 * The shapes that flow through apt resolution. Kept small: the resolver and the
 * lockfile need these fields only; the full control data comes from the .deb itself.
 */

/** One index (Packages file) a record came from. */
export interface IndexOrigin {
  /** Archive root URL, e.g. http://deb.debian.org/debian (no trailing slash). */
  url: string;
  /** Suite (distribution) as written in the source, e.g. bookworm-updates. */
  suite: string;
  component: string;
  /** Architecture of the index: amd64, arm64, ... or all (binary-all). */
  arch: string;
  /** apt's default pin priority of the suite (500; 100 for backports-like suites; 1 for experimental-like ones). */
  pin?: number;
}

/** One paragraph of a Packages index, reduced to what resolution and locking need. */
export interface PackageRecord {
  package: string;
  version: string;
  /** amd64, arm64, ... or all. */
  architecture: string;
  /** 'no' when the field is absent. */
  multiArch: 'no' | 'same' | 'foreign' | 'allowed';
  essential: boolean;
  /** required, important, standard, optional, extra; '' when absent. */
  priority: string;
  /** Raw relationship fields ('' when absent); parsed lazily by the resolver. */
  preDepends: string;
  depends: string;
  recommends: string;
  conflicts: string;
  breaks: string;
  provides: string;
  /** Fields the resolver never follows, kept because apt's tie-breaking order
   *  (package creation order in its cache) depends on every name they mention. */
  suggests?: string;
  replaces?: string;
  enhances?: string;
  /** `Important: yes` or `Protected: yes` (apt prefers such providers). */
  important?: boolean;
  /** Path relative to origin.url, e.g. pool/main/c/curl/curl_7.88.1-10_amd64.deb */
  filename: string;
  size: number;
  /** Lower-case hex sha256 of the .deb. */
  sha256: string;
  /** Source package name (and version in parentheses if it differs), '' when absent. */
  source: string;
  /** Index into the origins list of the PackageUniverse it belongs to. */
  origin: number;
}

/** All candidate packages for one architecture, from all configured indices. */
export interface PackageUniverse {
  /** The native architecture (amd64, arm64, ...). */
  arch: string;
  origins: IndexOrigin[];
  records: PackageRecord[];
}

/** A package already installed (from a base image's var/lib/dpkg/status). */
export interface InstalledPackage {
  package: string;
  version: string;
  architecture: string;
  multiArch: PackageRecord['multiArch'];
  essential: boolean;
  provides: string;
  depends: string;
  preDepends: string;
  conflicts: string;
  breaks: string;
  /** Source package ("glibc" or "glibc (2.36-9)"), '' when it is the package's own name. */
  source?: string;
  /** Priority field (apt never removes an installed Priority: required package as garbage). */
  priority?: string;
}
