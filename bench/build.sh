#!/usr/bin/env bash
# Benchmark: `ocibuild build` (cold build, warm store) against mmdebstrap on a LOCAL
# mirror, for the DESIGN.md target "Cold build, warm store (debs downloaded), local
# mirror: at most 1/3 of mmdebstrap's time". Package set: python3 ca-certificates curl,
# Debian bookworm amd64, `install: unpack`.
#
#   bash bench/build.sh                  # print the table and the ratio
#   bash bench/build.sh --write-results  # ... and append a section to bench/RESULTS.md
#   bash bench/build.sh --layer          # also: layer writing alone (bench/layer-write.ts)
#                                        #   vs tar | gzip -6 on the unpacked tree
#
# Environment: RUNS (default 5); OCIBUILD_BENCH_WORK=DIR keeps the work dir (upstream
# store, local mirror, stores) between runs (default: a fresh temp dir removed at exit).
#
# Steps:
#   1. `ocibuild build` once against http://deb.debian.org/debian (bookworm main, the
#      host's debian-archive-keyring) -> lockfile + the .debs in a store.
#   2. A local apt repository with exactly those .debs (copied from the store, checked
#      against the lock's SHA256): pool/, dists/bookworm/main/binary-amd64/Packages(.gz)
#      (dpkg-scanpackages), Release (apt-ftparchive) signed with a throwaway ed25519 key
#      (InRelease, Release.gpg, keyring.gpg), served by `python3 -m http.server --protocol HTTP/1.1` on a
#      free 127.0.0.1 port (bench/lib/mirror.sh, shared with bench/dpkg.sh).
#   3. ocibuild: spec on the local mirror, lock + build once (untimed, fills its own
#      store from the mirror); timed: `ocibuild build -q --locked` with
#      STORE/cache/layers-v1 and the output removed before each run (hyperfine --prepare).
#   4. mmdebstrap --variant=extract --include=python3,ca-certificates,curl into a tarball
#      from the same mirror (it runs apt update, resolves, downloads from the mirror,
#      extracts, tars). The package set it extracted is compared with the lock.
#   5. hyperfine --warmup 1 --runs $RUNS, both sides in one run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib/results.sh
. "$ROOT/bench/lib/results.sh"
cd "$ROOT"
NAME=bench/build.sh
# shellcheck source=bench/lib/mirror.sh
. "$ROOT/bench/lib/mirror.sh"

WRITE_RESULTS=0
LAYER=0
for arg in "$@"; do
  case "$arg" in
    --write-results) WRITE_RESULTS=1 ;;
    --layer) LAYER=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "bench/build.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

RUNS="${RUNS:-5}"
UPSTREAM=http://deb.debian.org/debian
SUITE=bookworm
ARCH=amd64
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
PACKAGES=(python3 ca-certificates curl)
OCIBUILD="$ROOT/bin/ocibuild"

bench_need hyperfine mmdebstrap dpkg-scanpackages apt-ftparchive gpg python3 node sha256sum
[ -r "$KEYRING" ] || { echo "bench/build.sh: $KEYRING missing (apt-get install debian-archive-keyring)" >&2; exit 1; }
[ -f "$ROOT/dist/cli/main.js" ] || { echo "bench/build.sh: the CLI is not compiled: run 'npm run build'" >&2; exit 1; }

bench_work ocibuild-bench-build

pkgs_yaml="$(printf '%s, ' "${PACKAGES[@]}")"; pkgs_yaml="[${pkgs_yaml%, }]"
pkgs_comma="$(IFS=,; echo "${PACKAGES[*]}")"
write_spec() { # DIR URL KEYRING
  mkdir -p "$1"
  cat >"$1/image.yaml" <<EOF
from: scratch
apt:
  sources:
    - url: $2
      suites: [$SUITE]
      components: [main]
      keyring: $3
  packages: $pkgs_yaml
  install: unpack
platforms: [linux/$ARCH]
EOF
}

# --- 1. lock + build once against the real archive ---------------------------------
UP="$WORK/upstream"
UPSTORE="$WORK/upstream-store"
write_spec "$UP" "$UPSTREAM" "$KEYRING"
echo "== 1. ocibuild build against $UPSTREAM (lockfile + .debs into $UPSTORE)" >&2
"$OCIBUILD" build -q -f "$UP/image.yaml" --output "oci:$UP/out:x" --cache-dir "$UPSTORE" >/dev/null
UPLOCK="$UP/Packages-$SUITE-$ARCH.lock"
N_LOCK="$(grep -c '^Package:' "$UPLOCK")"

# --- 2. the local mirror ------------------------------------------------------------
MIRROR="$WORK/mirror"
echo "== 2. local mirror in $MIRROR ($N_LOCK .debs)" >&2
make_mirror "$UPSTORE/blobs/sha256" "$MIRROR" "$UPLOCK"
serve_mirror "$MIRROR"

# --- 3. ocibuild on the local mirror: lock + fetch once ---------------------------
OCI="$WORK/ocibuild"
STORE="$WORK/store"
OUT="$WORK/out-oci"
rm -rf "$OCI" "$STORE" "$OUT"
write_spec "$OCI" "$MURL" "$MKEYRING"
echo "== 3. ocibuild lock + build once from the mirror (untimed; fills $STORE)" >&2
"$OCIBUILD" lock -q -f "$OCI/image.yaml" --cache-dir "$STORE" >&2
OCILOCK="$OCI/Packages-$SUITE-$ARCH.lock"
if ! diff <(lock_field "$UPLOCK" Package) <(lock_field "$OCILOCK" Package) >&2; then
  echo "bench/build.sh: the lock on the mirror differs from the upstream lock" >&2; exit 1
fi
"$OCIBUILD" build -q --locked -f "$OCI/image.yaml" --output "oci:$OUT:x" --cache-dir "$STORE" >/dev/null
oci_cmd="$OCIBUILD build -q --locked -f $OCI/image.yaml --output oci:$OUT:x --cache-dir $STORE"
oci_prepare="rm -rf $STORE/cache/layers-v1 $OUT"

# --- 4. mmdebstrap: check it works and what it extracts ---------------------------
MMOUT="$WORK/mmdebstrap.tar"
mm_cmd="mmdebstrap --quiet --variant=extract --include=$pkgs_comma --keyring=$MKEYRING --aptopt='Acquire::Languages \"none\"' $SUITE $MMOUT 'deb $MURL $SUITE main'"
echo "== 4. mmdebstrap once (untimed): $mm_cmd" >&2
LOG_FROM=$(($(wc -l <"$WORK/http.log") + 1))
if ! eval "${mm_cmd/--quiet/--verbose}" >"$WORK/mmdebstrap.log" 2>&1; then
  tail -5 "$WORK/mmdebstrap.log" >&2
  echo "bench/build.sh: mmdebstrap failed in its default mode; trying --mode=unshare" >&2
  mm_cmd="${mm_cmd/mmdebstrap /mmdebstrap --mode=unshare }"
  eval "$mm_cmd" >&2
  MM_MODE="unshare (the default mode failed)"
else
  MM_MODE="$(sed -n 's/^I: automatically chosen mode: //p' "$WORK/mmdebstrap.log" | head -1) (its automatic choice as root)"
fi
# Package set: the .debs (pool paths, so name and version) mmdebstrap downloaded (a
# variant=extract rootfs has no dpkg status), from the mirror's access log.
tail -n "+$LOG_FROM" "$WORK/http.log" | grep -o 'GET /pool/[^ ]*\.deb' | sed 's|^GET /||' |
  python3 -c 'import sys, urllib.parse; sys.stdout.writelines(urllib.parse.unquote(l) for l in sys.stdin)' | sort -u >"$WORK/mm-packages"
lock_field "$OCILOCK" Filename | sort -u >"$WORK/lock-packages"
N_MM="$(wc -l <"$WORK/mm-packages")"
if diff "$WORK/lock-packages" "$WORK/mm-packages" >"$WORK/set-diff"; then
  SET_NOTE="the same $N_LOCK packages (names and versions) on both sides"
else
  SET_NOTE="ocibuild $N_LOCK packages, mmdebstrap $N_MM; difference (< lock only, > mmdebstrap only): $(grep '^[<>]' "$WORK/set-diff" | tr '\n' ' ')"
fi
echo "== package sets: $SET_NOTE" >&2
MM_TAR_SIZE="$(du -h "$MMOUT" | cut -f1)"
OCI_LAYER_SIZE="$(du -h "$(ls -S "$OUT"/blobs/sha256/* | head -1)" | cut -f1)"

# --- 5. the timed run ---------------------------------------------------------------
echo "== 5. hyperfine --warmup 1 --runs $RUNS" >&2
OUTZ="$WORK/out-oci-zstd"
MMOUTGZ="$WORK/mmdebstrap.tar.gz"
hyperfine --warmup 1 --runs "$RUNS" --style basic \
  --export-markdown "$WORK/table.md" --export-json "$WORK/result.json" \
  -n "ocibuild build (gzip layer)" --prepare "$oci_prepare" "$oci_cmd" \
  -n "ocibuild build --compression zstd" --prepare "rm -rf $STORE/cache/layers-v1 $OUTZ" \
     "${oci_cmd/oci:$OUT:x/oci:$OUTZ:x} --compression zstd" \
  -n "mmdebstrap --variant=extract (.tar)" --prepare "rm -f $MMOUT" "$mm_cmd" \
  -n "mmdebstrap --variant=extract (.tar.gz)" --prepare "rm -f $MMOUTGZ" "${mm_cmd/ $MMOUT / $MMOUTGZ }" >&2
MMGZ_SIZE="$(du -h "$MMOUTGZ" | cut -f1)"
# Ratios of the mean wall times, and CPU time (user + sys, all processes) per command:
# on a shared machine CPU time is the steadier figure.
RATIOS="$(node -e '
  const rs = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).results;
  const [og, oz, mt, mg] = rs;
  const f = (x) => x.toFixed(2);
  console.log("| | wall, mean [s] | CPU (user + sys), mean [s] |");
  console.log("|:---|---:|---:|");
  for (const r of rs) console.log("| `" + r.command + "` | " + f(r.mean) + " | " + f(r.user + r.system) + " |");
  console.log();
  console.log("ocibuild / mmdebstrap, wall (mean): **" + f(og.mean / mt.mean) + "** (gzip layer vs .tar, the target'"'"'s pair), " +
    f(oz.mean / mt.mean) + " (zstd layer vs .tar), " + f(og.mean / mg.mean) + " (gzip layer vs .tar.gz). " +
    "CPU time: " + f((og.user + og.system) / (mt.user + mt.system)) + ", " + f((oz.user + oz.system) / (mt.user + mt.system)) + ", " +
    f((og.user + og.system) / (mg.user + mg.system)) + ". Target: at most 0.33.");
  console.error("ratio ocibuild(gzip)/mmdebstrap(.tar) = " + f(og.mean / mt.mean));' "$WORK/result.json")"

# --- optional: layer writing alone on the unpacked tree ------------------------------
LAYER_MD=
if [ "$LAYER" = 1 ]; then
  TREE="$WORK/tree"
  rm -rf "$TREE"
  echo "== layer writing: mmdebstrap tree in $TREE, bench/layer-write.ts" >&2
  eval "${mm_cmd/ $MMOUT / $TREE }" >&2
  LAYER_MD="$WORK/layer.md"
  # Escape the pipes of the reference rows' names for the Markdown table.
  node --import tsx bench/layer-write.ts "$TREE" --runs 3 |
    sed 's/^| tar | gzip -6 |/| `tar \\| gzip -6` |/; s/^| tar | zstd -T0 -3 |/| `tar \\| zstd -T0 -3` |/; s/^| tar |/| `tar` |/; s/^| | time |/\n&/' >"$LAYER_MD"
  rm -rf "$TREE"
fi

section="$WORK/section.md"
{
  echo "## Build: ocibuild vs mmdebstrap"
  echo
  echo "- Date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- Machine: $(bench_machine)"
  echo "- Load average when the section was written (other work on the machine skews timings): $(bench_load)"
  echo "- Software: $(mmdebstrap --version), $(apt-get --version | head -1), node $(node --version), $(hyperfine --version)"
  echo "- Package set: \`${PACKAGES[*]}\`, Debian $SUITE $ARCH, ocibuild \`install: unpack\`; $SET_NOTE."
  echo "- Mirror: the $N_LOCK .debs ocibuild locked against $UPSTREAM, copied into a local apt repository (dpkg-scanpackages, apt-ftparchive release, InRelease signed by a throwaway ed25519 key) served by \`python3 -m http.server --protocol HTTP/1.1\` on 127.0.0.1 (keep-alive, as real mirrors)."
  echo "- Method: \`bash bench/build.sh\`, hyperfine --warmup 1 --runs $RUNS, all four commands in one run."
  echo "  - ocibuild: \`ocibuild build -q --locked\` with a warm store (lockfile present, .debs downloaded by an untimed build), \`STORE/cache/layers-v1\` and the OCI layout removed before each run: reads and checks the $N_LOCK .debs, unpacks them, writes the gzip layer ($OCI_LAYER_SIZE), config, manifest. No network."
  echo "  - \`--compression zstd\`: the same build with a zstd layer (libzstd level 3)."
  echo "  - mmdebstrap (mode: $MM_MODE), \`--variant=extract --include=$pkgs_comma --aptopt='Acquire::Languages \"none\"'\`, tarball output, \`.tar\` ($MM_TAR_SIZE, uncompressed) or \`.tar.gz\` ($MMGZ_SIZE, compressed like ocibuild's default layer): apt update from the local mirror, resolution, download of the .debs from the mirror, extraction, tar. Nothing is kept between its runs (it has no store). \`extract\` only unpacks, like \`install: unpack\`; \`--variant=custom\` would be \`install: dpkg\` (dpkg --install in a chroot, maintainer scripts) and fails on this set anyway: it needs dpkg and a shell in the included packages."
  echo
  cat "$WORK/table.md"
  echo
  echo "$RATIOS"
  if [ -n "$LAYER_MD" ]; then
    echo
    echo "Layer writing alone on the unpacked tree (\`node --import tsx bench/layer-write.ts TREE --runs 3\`, TREE = mmdebstrap's extract of the same packages):"
    echo
    cat "$LAYER_MD"
  fi
} >"$section"

cat "$section"
if [ "$WRITE_RESULTS" = 1 ]; then bench_append_results "$section"; fi
