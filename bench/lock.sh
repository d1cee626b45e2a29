#!/usr/bin/env bash
# Benchmark: `ocibuild lock` against `apt-get install -s --no-install-recommends` on
# the same index (Debian bookworm main amd64, http://deb.debian.org/debian).
#
#   bash bench/lock.sh                  # print the tables and ratios
#   bash bench/lock.sh --write-results  # ... and append a section to bench/RESULTS.md
#   bash bench/lock.sh --apt-only       # only the apt-get side (no ocibuild needed)
#
# Environment: OCIBUILD_BENCH_WORK=DIR keeps apt lists and ocibuild's index cache in DIR
# between runs (default: a fresh temp dir, removed at exit); RUNS (default 5).
#
# What is timed, per package set:
#   ocibuild        `ocibuild lock` with a warm index cache (one untimed run first),
#                   the previous lockfile removed before each run so it resolves again
#   apt-get warm    apt-get install -s with its binary cache (pkgcache.bin) present
#   apt-get cold    the same with pkgcache.bin and srcpkgcache.bin deleted before each
#                   run, so apt parses the Packages list as ocibuild has to
# apt runs in an isolated configuration (test/support/apt-oracle.ts): the host's
# /etc/apt, /var/lib/apt and /var/lib/dpkg are not read or written.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib/results.sh
. "$ROOT/bench/lib/results.sh"
cd "$ROOT"

WRITE_RESULTS=0
APT_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --write-results) WRITE_RESULTS=1 ;;
    --apt-only) APT_ONLY=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "bench/lock.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

RUNS="${RUNS:-5}"
MIRROR=http://deb.debian.org/debian
SUITE=bookworm
ARCH=amd64
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
SETS=("python3" "git openssh-server perl locales")

for tool in hyperfine apt-get node; do
  command -v "$tool" >/dev/null || { echo "bench/lock.sh: $tool not found (Debian: apt-get install $tool)" >&2; exit 1; }
done
[ -r "$KEYRING" ] || { echo "bench/lock.sh: $KEYRING missing (apt-get install debian-archive-keyring)" >&2; exit 1; }
if [ "$APT_ONLY" = 0 ] && [ ! -f "$ROOT/dist/cli/main.js" ]; then
  echo "bench/lock.sh: the CLI is not compiled: run 'npm run build' (or use --apt-only)" >&2
  exit 1
fi

if [ -n "${OCIBUILD_BENCH_WORK:-}" ]; then
  WORK="$(mkdir -p "$OCIBUILD_BENCH_WORK" && cd "$OCIBUILD_BENCH_WORK" && pwd)"
else
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/ocibuild-bench-lock.XXXXXX")"
  trap 'rm -rf "$WORK"' EXIT
fi
APTDIR="$WORK/apt"
CACHE="$WORK/cache"
mkdir -p "$CACHE"

echo "== apt-get update (isolated sandbox in $APTDIR)" >&2
APTDIR="$APTDIR" MIRROR="$MIRROR" SUITE="$SUITE" ARCH="$ARCH" KEYRING="$KEYRING" \
  node --import tsx --input-type=module -e "
    import { createAptSandbox } from '$ROOT/test/support/apt-oracle.ts';
    const e = process.env;
    const apt = await createAptSandbox({
      sources: [{ url: e.MIRROR, suites: [e.SUITE], components: ['main'], keyring: e.KEYRING }],
      arch: e.ARCH, recommends: false, workDir: e.APTDIR,
    });
    await apt.update();
    await apt.close();
  "
export APT_CONFIG="$APTDIR/apt.conf"
APT_CACHE_BIN="$APTDIR/cache/pkgcache.bin $APTDIR/cache/srcpkgcache.bin"
# The warm variant needs pkgcache.bin: any apt-get call as root (re)builds it.
apt-get -q install -s --no-install-recommends python3 >/dev/null

results=()
i=0
for set in "${SETS[@]}"; do
  i=$((i + 1))
  spec="$WORK/set-$i"
  mkdir -p "$spec"
  # shellcheck disable=SC2086
  pkgs_yaml="$(printf '%s, ' $set)"; pkgs_yaml="[${pkgs_yaml%, }]"
  cat >"$spec/image.yaml" <<EOF
from: scratch
apt:
  sources:
    - url: $MIRROR
      suites: [$SUITE]
      components: [main]
      keyring: $KEYRING
  packages: $pkgs_yaml
  install: unpack
platforms: [linux/$ARCH]
EOF
  lockfile="$spec/Packages-$SUITE-$ARCH.lock"
  apt_cmd="apt-get -q install -s --no-install-recommends $set"
  oci_cmd="$ROOT/bin/ocibuild lock -q -f $spec/image.yaml --cache-dir $CACHE"

  # Check both sides work before timing them (hyperfine hides their output).
  n_apt="$($apt_cmd | grep -c '^Inst ')"
  args=(--warmup 1 --runs "$RUNS" --style basic
        --export-markdown "$spec/table.md" --export-json "$spec/result.json")
  if [ "$APT_ONLY" = 0 ]; then
    echo "== warming ocibuild's index cache: $oci_cmd" >&2
    $oci_cmd >&2
    n_oci="$(grep -c '^Package:' "$lockfile")"
    args+=(-n "ocibuild lock ($set)" --prepare "rm -f $lockfile" "$oci_cmd")
  else
    n_oci=-
  fi
  args+=(-n "apt-get -s, warm pkgcache ($set)" --prepare "true" "$apt_cmd"
         -n "apt-get -s, cold pkgcache ($set)" --prepare "rm -f $APT_CACHE_BIN" "$apt_cmd")
  echo "== [$set]: apt-get installs $n_apt packages, ocibuild locks $n_oci" >&2
  hyperfine "${args[@]}" >&2
  # Leave pkgcache.bin in place for the next set's warm variant.
  $apt_cmd >/dev/null
  results+=("$spec|$set|$n_apt|$n_oci")
done

# The section: machine, date, tables, ratios.
section="$WORK/section.md"
{
  echo "## Lock: ocibuild vs apt-get"
  echo
  echo "- Date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- Machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo)"
  echo "- Load average when the section was written (other work on the machine skews timings): $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- Software: $(apt-get --version | head -1), node $(node --version), $(hyperfine --version)"
  echo "- Index: $MIRROR $SUITE main $ARCH (one Packages file, $(du -h "$APTDIR"/state/lists/*_Packages | cut -f1) uncompressed)"
  echo "- Method: \`bash bench/lock.sh\`: hyperfine --warmup 1 --runs $RUNS. ocibuild with a warm index cache and its lockfile deleted before each run; apt-get install -s --no-install-recommends in an isolated sandbox with its lists already updated, warm = pkgcache.bin present, cold = pkgcache.bin and srcpkgcache.bin deleted before each run."
  echo
  for r in "${results[@]}"; do
    IFS='|' read -r spec set n_apt n_oci <<<"$r"
    echo "### \`$set\` (apt-get: $n_apt packages, ocibuild: $n_oci)"
    echo
    cat "$spec/table.md"
    echo
    if [ "$APT_ONLY" = 0 ]; then
      node --input-type=module -e "
        import { readFileSync } from 'node:fs';
        const rs = JSON.parse(readFileSync(process.argv[1], 'utf8')).results;
        const [oci, warm, cold] = rs.map((r) => r.mean);
        const f = (x) => x.toFixed(2);
        console.log('Ratios (mean time, lower is better for ocibuild): ocibuild / apt-get warm = ' + f(oci / warm) +
          ', ocibuild / apt-get cold = ' + f(oci / cold) + '.');
      " "$spec/result.json"
      echo
    fi
  done
} >"$section"

cat "$section"
if [ "$WRITE_RESULTS" = 1 ]; then bench_append_results "$section"; fi
