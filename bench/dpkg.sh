#!/usr/bin/env bash
# Benchmark: `ocibuild build` with `install: dpkg` from scratch (cold build, warm .deb
# store) against `mmdebstrap --variant=essential` on a LOCAL mirror, for issue 5's
# target: "at most one third of mmdebstrap's time". Debian bookworm amd64.
#
#   bash bench/dpkg.sh                   # print the table and the ratios (as root)
#   bash bench/dpkg.sh --write-results   # ... and append a section to bench/RESULTS.md
#   bash bench/dpkg.sh --unsafe-io       # also mmdebstrap --dpkgopt=force-unsafe-io (one more row)
#   bash bench/dpkg.sh --dir             # also mmdebstrap into a directory (one more row)
#
# Environment: RUNS (default 3), WARMUP (default 0: the untimed runs of steps 3 and 4
# warm the page cache); OCIBUILD_BENCH_WORK=DIR keeps the work dir (upstream .debs,
# local mirror, store) between runs (default: a fresh temp dir removed at exit).
# A default run takes about 10 minutes on a 2-CPU machine (45-65 s per ocibuild or
# mmdebstrap run, plus ~2 min of untimed setup); each extra row adds RUNS x ~1 min.
# Must run as root. CPU time is taken from a cgroup per row (see below).
#
# Two ocibuild specs, `from: scratch`, `install: dpkg` (ocibuild locks the Essential: yes
# set with the packages, unpacks the essential set, then dpkg --install in a bwrap
# sandbox, as mmdebstrap's essential variant bootstraps):
#   dpkg: packages python3 ca-certificates curl (mmdebstrap's --include below);
#   live: the same plus passwd, and `run:` python3 -c 'import ssl; ...' and useradd app
#         (issue 5's live spec; mmdebstrap has no RUN step, so this row has no
#         counterpart; its --customize-hook would be the nearest thing).
#
# Steps:
#   1. `ocibuild lock` of both specs against http://deb.debian.org/debian (bookworm main,
#      the host's debian-archive-keyring); the locked .debs downloaded with curl into
#      WORK/debs (named by sha256, checked), once per kept work dir.
#   2. A local apt repository with the union of the two locks' .debs, served over HTTP
#      on 127.0.0.1 (bench/lib/mirror.sh, shared with bench/build.sh).
#   3. ocibuild on the mirror: both specs locked (must name the same packages and
#      versions as upstream), the live spec built once (untimed: fills the store with the
#      .debs, checks the run: output). Timed: `ocibuild build -q --locked` with
#      STORE/cache/layers-v1, STORE/rootfs (the trees steps run on) and the output
#      removed before each run (hyperfine --prepare); the .debs stay in the store.
#   4. mmdebstrap --variant=essential --include=python3,ca-certificates,curl into a .tar
#      from the same mirror (untimed once): its var/lib/dpkg/status is compared with the
#      dpkg spec's lock (names and versions).
#   5. hyperfine --warmup $WARMUP --runs $RUNS: the two ocibuild specs and mmdebstrap into
#      a .tar; with --unsafe-io also mmdebstrap --dpkgopt=force-unsafe-io (ocibuild's dpkg
#      runs with it; mmdebstrap's default lets dpkg fsync every file), with --dir also
#      mmdebstrap into a directory. Afterwards the dpkg status of ocibuild's image is
#      compared with the lock too.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib/results.sh
. "$ROOT/bench/lib/results.sh"
cd "$ROOT"
NAME=bench/dpkg.sh
# shellcheck source=bench/lib/mirror.sh
. "$ROOT/bench/lib/mirror.sh"

WRITE_RESULTS=0
DIR_ROW=0
UNSAFE_ROW=0
for arg in "$@"; do
  case "$arg" in
    --write-results) WRITE_RESULTS=1 ;;
    --dir) DIR_ROW=1 ;;
    --unsafe-io) UNSAFE_ROW=1 ;;
    -h|--help) sed -n '2,45p' "$0"; exit 0 ;;
    *) echo "$NAME: unknown argument $arg" >&2; exit 2 ;;
  esac
done

RUNS="${RUNS:-3}"
WARMUP="${WARMUP:-0}"
UPSTREAM=http://deb.debian.org/debian
SUITE=bookworm
ARCH=amd64
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
PACKAGES=(python3 ca-certificates curl)
LIVE_PACKAGES=("${PACKAGES[@]}" passwd)
LIVE_RUN=("python3 -c 'import ssl; print(ssl.OPENSSL_VERSION)'" "useradd app")
OCIBUILD="$ROOT/bin/ocibuild"
LOAD_START="$(bench_load)"
dist_time() { # the newest file of dist/ (other work on the tree may recompile it mid-run)
  date -u -d "@$(find "$ROOT/dist" -type f -printf '%T@\n' | sort -n | tail -1)" +%Y-%m-%dT%H:%M:%SZ
}

bench_need hyperfine mmdebstrap dpkg-scanpackages apt-ftparchive gpg python3 node sha256sum curl tar
[ "$(id -u)" = 0 ] || { echo "$NAME: run as root (mmdebstrap's root mode; ocibuild's sandbox as root)" >&2; exit 1; }
[ -r "$KEYRING" ] || { echo "$NAME: $KEYRING missing (apt-get install debian-archive-keyring)" >&2; exit 1; }
[ -f "$ROOT/dist/cli/main.js" ] || { echo "$NAME: the CLI is not compiled: run 'npm run build'" >&2; exit 1; }

bench_work ocibuild-bench-dpkg

# CPU time per command from a cgroup of its own (all its processes, the sandbox's
# included): hyperfine's user + sys come from the rusage of waited-for children, and
# that misses what runs in a bwrap --unshare-pid sandbox (`/usr/bin/time bwrap
# --unshare-pid ... sh -c LOOP` reports 0.00 s user), i.e. ocibuild's whole dpkg run.
# cgroup v1 cpuacct, else a cgroup v2 at /sys/fs/cgroup; without either, hyperfine's
# figures are reported and marked as such.
CG_ROOT=
CGROUPS=()
if [ -f /sys/fs/cgroup/cpuacct/cpuacct.usage ]; then CG_ROOT=/sys/fs/cgroup/cpuacct; CG_KIND="cgroup v1 cpuacct"
elif [ -f /sys/fs/cgroup/cgroup.controllers ]; then CG_ROOT=/sys/fs/cgroup; CG_KIND="cgroup v2 cpu.stat"
fi
cg_wrap() { # CGROUP COMMAND -> COMMAND run inside CGROUP (hyperfine runs it with sh -c)
  if [ -n "$1" ]; then echo "echo \$\$ >$1/cgroup.procs && $2"; else echo "$2"; fi
}
cg_usage() { # CGROUP -> "total user sys" in seconds, since its creation
  if [ -f "$1/cpuacct.usage" ]; then
    echo "$(cat "$1/cpuacct.usage") $(cat "$1/cpuacct.usage_user") $(cat "$1/cpuacct.usage_sys")" | awk '{ printf "%.3f %.3f %.3f", $1 / 1e9, $2 / 1e9, $3 / 1e9 }'
  else
    awk '{ v[$1] = $2 } END { printf "%.3f %.3f %.3f", v["usage_usec"] / 1e6, v["user_usec"] / 1e6, v["system_usec"] / 1e6 }' "$1/cpu.stat"
  fi
}
bench_on_exit() {
  local cg
  for cg in "${CGROUPS[@]}"; do rmdir "$cg" 2>/dev/null || true; done
}

yaml_list() { local s; s="$(printf '%s, ' "$@")"; echo "[${s%, }]"; }
write_spec() { # DIR URL KEYRING live|dpkg
  mkdir -p "$1"
  {
    cat <<EOF
from: scratch
apt:
  sources:
    - url: $2
      suites: [$SUITE]
      components: [main]
      keyring: $3
EOF
    if [ "$4" = live ]; then
      echo "  packages: $(yaml_list "${LIVE_PACKAGES[@]}")"
      echo "  install: dpkg"
      echo "run:"
      printf '  - %s\n' "${LIVE_RUN[@]}"
    else
      echo "  packages: $(yaml_list "${PACKAGES[@]}")"
      echo "  install: dpkg"
    fi
    echo "platforms: [linux/$ARCH]"
  } >"$1/image.yaml"
}
lock_set() { # LOCKFILE -> name=version, sorted
  paste -d= <(lock_field "$1" Package) <(lock_field "$1" Version) | sort
}
status_set() { # dpkg status on stdin -> name=version of the installed packages, sorted
  awk 'BEGIN { RS = ""; FS = "\n" }
    { p = v = s = ""
      for (i = 1; i <= NF; i++) {
        if (index($i, "Package: ") == 1) p = substr($i, 10)
        else if (index($i, "Version: ") == 1) v = substr($i, 10)
        else if (index($i, "Status: ") == 1) s = substr($i, 9)
      }
      if (s == "install ok installed") print p "=" v }' | sort
}
set_note() { # LEFT-NAME LEFT-FILE RIGHT-NAME RIGHT-FILE -> one sentence
  if diff "$2" "$4" >"$WORK/set-diff"; then
    echo "the same $(wc -l <"$2") packages (names and versions) in $1 and $3"
  else
    echo "$1 $(wc -l <"$2") packages, $3 $(wc -l <"$4"); difference (< $1 only, > $3 only): $(grep '^[<>]' "$WORK/set-diff" | tr '\n' ' ')"
  fi
}

# --- 1. lock against the real archive, the .debs downloaded once -------------------
UPSTORE="$WORK/upstream-store"
DEBS="$WORK/debs"
mkdir -p "$DEBS"
for spec in dpkg live; do
  write_spec "$WORK/upstream-$spec" "$UPSTREAM" "$KEYRING" "$spec"
  echo "== 1. ocibuild lock ($spec spec) against $UPSTREAM" >&2
  "$OCIBUILD" lock -q -f "$WORK/upstream-$spec/image.yaml" --cache-dir "$UPSTORE" >&2
done
UPLOCK_DPKG="$WORK/upstream-dpkg/Packages-$SUITE-$ARCH.lock"
UPLOCK_LIVE="$WORK/upstream-live/Packages-$SUITE-$ARCH.lock"
for lock in "$UPLOCK_DPKG" "$UPLOCK_LIVE"; do
  paste <(lock_field "$lock" Source-URL) <(lock_field "$lock" Filename) <(lock_field "$lock" SHA256)
done | sort -u | while IFS=$'\t' read -r url filename sha; do
  [ -f "$DEBS/$sha" ] && continue
  curl -fsS -o "$DEBS/.part" "$url/$filename"
  echo "$sha  $DEBS/.part" | sha256sum --quiet -c -
  mv "$DEBS/.part" "$DEBS/$sha"
done

# --- 2. the local mirror ------------------------------------------------------------
MIRROR="$WORK/mirror"
make_mirror "$DEBS" "$MIRROR" "$UPLOCK_DPKG" "$UPLOCK_LIVE"
echo "== 2. local mirror in $MIRROR ($MIRROR_DEBS .debs)" >&2
serve_mirror "$MIRROR"

# --- 3. ocibuild on the local mirror: lock both, build the live spec once -----------
STORE="$WORK/store"
rm -rf "$STORE" "$WORK/ocibuild-dpkg" "$WORK/ocibuild-live" "$WORK"/out-*
for spec in dpkg live; do
  write_spec "$WORK/ocibuild-$spec" "$MURL" "$MKEYRING" "$spec"
  "$OCIBUILD" lock -q -f "$WORK/ocibuild-$spec/image.yaml" --cache-dir "$STORE" >&2
  if ! diff <(lock_set "$WORK/upstream-$spec/Packages-$SUITE-$ARCH.lock") <(lock_set "$WORK/ocibuild-$spec/Packages-$SUITE-$ARCH.lock") >&2; then
    echo "$NAME: the $spec lock on the mirror differs from the upstream lock" >&2; exit 1
  fi
done
LOCK_DPKG="$WORK/ocibuild-dpkg/Packages-$SUITE-$ARCH.lock"
LOCK_LIVE="$WORK/ocibuild-live/Packages-$SUITE-$ARCH.lock"
N_DPKG="$(grep -c '^Package:' "$LOCK_DPKG")"
N_LIVE="$(grep -c '^Package:' "$LOCK_LIVE")"
N_ESSENTIAL="$(grep -c '^Essential: yes' "$LOCK_DPKG" || true)"
oci_cmd() { echo "$OCIBUILD build -q --locked -f $WORK/ocibuild-$1/image.yaml --output oci:$WORK/out-$1:x --cache-dir $STORE"; }
oci_prepare() { echo "rm -rf $STORE/cache/layers-v1 $STORE/rootfs $WORK/out-$1"; }
echo "== 3. ocibuild build of the live spec from the mirror (untimed; fills $STORE)" >&2
T0=$SECONDS
if ! eval "$(oci_cmd live | sed 's/ -q / /')" >"$WORK/ocibuild-live.log" 2>&1; then
  tail -20 "$WORK/ocibuild-live.log" >&2
  echo "$NAME: ocibuild build of the live spec failed" >&2; exit 1
fi
LIVE_SECONDS=$((SECONDS - T0))
# The sandbox's output is shown indented by "  | ".
OPENSSL_LINE="$(sed -n 's/^  | \(OpenSSL .*\)/\1/p' "$WORK/ocibuild-live.log" | head -1)"
[ -n "$OPENSSL_LINE" ] || { echo "$NAME: the live build did not print the OpenSSL version (see $WORK/ocibuild-live.log)" >&2; exit 1; }
echo "== live build: $LIVE_SECONDS s, run: printed '$OPENSSL_LINE'" >&2
# The dpkg spec's .debs must be in the store already (warm store), so they must all be
# in the live lock: passwd only adds packages.
if [ -n "$(comm -23 <(lock_field "$LOCK_DPKG" SHA256 | sort) <(lock_field "$LOCK_LIVE" SHA256 | sort))" ]; then
  echo "== the dpkg lock has .debs the live lock has not: building the dpkg spec once too" >&2
  eval "$(oci_cmd dpkg)" >/dev/null
fi

# --- 4. mmdebstrap: check it works and what it installs -----------------------------
MMTAR="$WORK/mmdebstrap.tar"
MMDIR="$WORK/mmdebstrap-dir"
pkgs_comma="$(IFS=,; echo "${PACKAGES[*]}")"
mm_cmd="mmdebstrap --quiet --variant=essential --include=$pkgs_comma --keyring=$MKEYRING --aptopt='Acquire::Languages \"none\"' $SUITE $MMTAR 'deb $MURL $SUITE main'"
echo "== 4. mmdebstrap once (untimed): $mm_cmd" >&2
rm -rf "$MMTAR" "$MMDIR"
T0=$SECONDS
if ! eval "${mm_cmd/--quiet/--verbose}" >"$WORK/mmdebstrap.log" 2>&1; then
  tail -5 "$WORK/mmdebstrap.log" >&2
  echo "$NAME: mmdebstrap failed in its default mode; trying --mode=unshare" >&2
  mm_cmd="${mm_cmd/mmdebstrap /mmdebstrap --mode=unshare }"
  eval "$mm_cmd" >&2
  MM_MODE="unshare (the default mode failed)"
else
  MM_MODE="$(sed -n 's/^I: automatically chosen mode: //p' "$WORK/mmdebstrap.log" | head -1) (its automatic choice as root)"
fi
MM_SECONDS=$((SECONDS - T0))
echo "== mmdebstrap: $MM_SECONDS s, mode $MM_MODE" >&2
tar -xOf "$MMTAR" ./var/lib/dpkg/status | status_set >"$WORK/mm-packages"
lock_set "$LOCK_DPKG" >"$WORK/lock-packages"
SET_NOTE="$(set_note "ocibuild's lock" "$WORK/lock-packages" "mmdebstrap's dpkg status" "$WORK/mm-packages")"
echo "== package sets: $SET_NOTE" >&2
MM_TAR_SIZE="$(du -h "$MMTAR" | cut -f1)"

# How long one fsync takes here: what dpkg without --force-unsafe-io pays per file.
FSYNC_MS="$(python3 - "$WORK" <<'EOF'
import os, statistics, sys, time
ts = []
for i in range(20):
    p = os.path.join(sys.argv[1], f".fsync-probe-{i}")
    with open(p, "wb") as f:
        f.write(b"x" * 4096)
        t = time.perf_counter()
        os.fsync(f.fileno())
        ts.append(time.perf_counter() - t)
    os.unlink(p)
print(f"{statistics.median(ts) * 1000:.1f}")
EOF
)"

# --- 5. the timed run ---------------------------------------------------------------
LOAD_T0="$(bench_load)"
DIST_T0="$(dist_time)"
echo "== 5. hyperfine --warmup $WARMUP --runs $RUNS (load $LOAD_T0)" >&2
N_OCI_DPKG="ocibuild build, install: dpkg ($N_DPKG packages)"
N_OCI_LIVE="ocibuild build, live spec (+ passwd, run:)"
N_MM_TAR="mmdebstrap --variant=essential (.tar)"
N_MM_UNSAFE="mmdebstrap --variant=essential --dpkgopt=force-unsafe-io (.tar)"
N_MM_DIR="mmdebstrap --variant=essential (directory)"
# One cgroup per row, created in this shell (not in a $(...) subshell) so that
# bench_on_exit knows them.
ROW_IDS=(oci-dpkg oci-live mm-tar)
[ "$UNSAFE_ROW" = 1 ] && ROW_IDS+=(mm-unsafe)
[ "$DIR_ROW" = 1 ] && ROW_IDS+=(mm-dir)
declare -A CG=()
for id in "${ROW_IDS[@]}"; do
  CG[$id]=
  if [ -n "$CG_ROOT" ]; then
    CG[$id]="$CG_ROOT/ocibuild-bench-dpkg-$$-$id"
    mkdir "${CG[$id]}"
    CGROUPS+=("${CG[$id]}")
  fi
done
rows=(
  -n "$N_OCI_DPKG" --prepare "$(oci_prepare dpkg)" "$(cg_wrap "${CG[oci-dpkg]}" "$(oci_cmd dpkg)")"
  -n "$N_OCI_LIVE" --prepare "$(oci_prepare live)" "$(cg_wrap "${CG[oci-live]}" "$(oci_cmd live)")"
  -n "$N_MM_TAR" --prepare "rm -f $MMTAR" "$(cg_wrap "${CG[mm-tar]}" "$mm_cmd")"
)
[ "$UNSAFE_ROW" = 1 ] && rows+=(-n "$N_MM_UNSAFE" --prepare "rm -f $MMTAR" "$(cg_wrap "${CG[mm-unsafe]}" "${mm_cmd/ --variant=essential / --variant=essential --dpkgopt=force-unsafe-io }")")
[ "$DIR_ROW" = 1 ] && rows+=(-n "$N_MM_DIR" --prepare "rm -rf $MMDIR" "$(cg_wrap "${CG[mm-dir]}" "${mm_cmd/ $MMTAR / $MMDIR }")")
hyperfine --warmup "$WARMUP" --runs "$RUNS" --style basic \
  --export-markdown "$WORK/table.md" --export-json "$WORK/result.json" "${rows[@]}" >&2
LOAD_END="$(bench_load)"
DIST_END="$(dist_time)"
DIST_NOTE="dist/ last compiled $DIST_T0"
[ "$DIST_END" = "$DIST_T0" ] || DIST_NOTE="$DIST_NOTE, and again at $DIST_END, during the timed runs (by other work on the tree): the rows may not all have run the same code"
# The cgroups' CPU per run: {"name": [total, user, sys]}, for the ratios below.
{
  echo "{"
  sep=
  declare -A names=([oci-dpkg]="$N_OCI_DPKG" [oci-live]="$N_OCI_LIVE" [mm-tar]="$N_MM_TAR" [mm-unsafe]="$N_MM_UNSAFE" [mm-dir]="$N_MM_DIR")
  for id in "${ROW_IDS[@]}"; do
    cg="${CG[$id]}"
    [ -n "$cg" ] || continue
    read -r total user sys <<<"$(cg_usage "$cg")"
    echo "$sep\"${names[$id]}\": [$(awk -v n=$((WARMUP + RUNS)) -v t="$total" -v u="$user" -v s="$sys" 'BEGIN { printf "%.3f, %.3f, %.3f", t / n, u / n, s / n }')]"
    sep=,
  done
  echo "}"
} >"$WORK/cgroup-cpu.json"

# What dpkg left installed in ocibuild's image (the last timed run's output).
image_status() { # OCI-LAYOUT -> the image's var/lib/dpkg/status (the topmost layer that has one)
  python3 - "$1" <<'EOF'
import json, sys, tarfile
root = sys.argv[1]
blob = lambda d: f"{root}/blobs/{d.replace(':', '/')}"
index = json.load(open(f"{root}/index.json"))
manifest = json.load(open(blob(index["manifests"][0]["digest"])))
status = None
for layer in manifest["layers"]:
    with tarfile.open(blob(layer["digest"])) as t:
        for name in ("var/lib/dpkg/status", "./var/lib/dpkg/status"):
            try:
                status = t.extractfile(name).read()
                break
            except KeyError:
                pass
sys.stdout.buffer.write(status or b"")
EOF
}
image_status "$WORK/out-dpkg" | status_set >"$WORK/image-packages"
IMAGE_NOTE="$(set_note "ocibuild's lock" "$WORK/lock-packages" "the dpkg status of ocibuild's image" "$WORK/image-packages")"
echo "== image: $IMAGE_NOTE" >&2
OCI_LAYER_SIZE="$(du -h "$(ls -S "$WORK/out-dpkg"/blobs/sha256/* | head -1)" | cut -f1)"
MM_DIR_NOTE=
[ "$DIR_ROW" = 1 ] && MM_DIR_NOTE=" or a directory ($(du -sh "$MMDIR" | cut -f1))"

# Ratios of the mean wall times and of the CPU time per run. CPU: from the rows' cgroups
# when there are some (all processes), else hyperfine's user + sys (misses the sandbox).
RATIOS="$(N_OCI_DPKG="$N_OCI_DPKG" N_OCI_LIVE="$N_OCI_LIVE" N_MM_TAR="$N_MM_TAR" N_MM_UNSAFE="$N_MM_UNSAFE" N_MM_DIR="$N_MM_DIR" CG_KIND="${CG_ROOT:+$CG_KIND}" node -e '
  const fs = require("fs");
  const rs = JSON.parse(fs.readFileSync(process.argv[1], "utf8")).results;
  const cg = process.env.CG_KIND ? JSON.parse(fs.readFileSync(process.argv[2], "utf8")) : {};
  const by = (n) => rs.find((r) => r.command === process.env[n]);
  const [od, ol, mt, mu, md] = ["N_OCI_DPKG", "N_OCI_LIVE", "N_MM_TAR", "N_MM_UNSAFE", "N_MM_DIR"].map(by);
  const f = (x) => x.toFixed(2);
  const rusage = (r) => r.user + r.system;
  const cpu = (r) => (cg[r.command] ? cg[r.command][0] : rusage(r));
  const pair = (a, b) => f(a.mean / b.mean) + " / " + f(cpu(a) / cpu(b));
  const cpuName = process.env.CG_KIND ? "CPU (" + process.env.CG_KIND + ", all processes), mean [s]" : "CPU (user + sys, hyperfine: misses the bwrap sandbox), mean [s]";
  console.log("| | wall, mean [s] | wall, median [s] | " + cpuName + " | of which user / sys [s] | CPU by hyperfine (rusage), mean [s] |");
  console.log("|:---|---:|---:|---:|---:|---:|");
  for (const r of rs) {
    const c = cg[r.command];
    console.log("| `" + r.command + "` | " + f(r.mean) + " | " + f(r.median) + " | " + f(cpu(r)) + " | " +
      (c ? f(c[1]) + " / " + f(c[2]) : f(r.user) + " / " + f(r.system)) + " | " + f(rusage(r)) + " |");
  }
  console.log();
  console.log("Ratio ocibuild (install: dpkg) / mmdebstrap --variant=essential (.tar), the target'"'"'s pair: wall (mean) **" +
    f(od.mean / mt.mean) + "**, CPU " + f(cpu(od) / cpu(mt)) + ". Target: at most 0.33.");
  console.log();
  console.log("Other pairs, wall (mean) / CPU: " +
    (mu ? "install: dpkg vs mmdebstrap with --dpkgopt=force-unsafe-io (dpkg options like ocibuild'"'"'s) " + pair(od, mu) + "; " : "") +
    (md ? "install: dpkg vs mmdebstrap into a directory " + pair(od, md) + "; " : "") +
    "the live spec (+ passwd, run:, no mmdebstrap counterpart) vs mmdebstrap .tar " + pair(ol, mt) + (mu ? ", vs mmdebstrap with force-unsafe-io " + pair(ol, mu) : "") + ".");
  console.error("ratio ocibuild(install: dpkg)/mmdebstrap(essential, .tar) = " + f(od.mean / mt.mean) + " wall, " + f(cpu(od) / cpu(mt)) + " CPU");' "$WORK/result.json" "$WORK/cgroup-cpu.json")"

commit="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git -C "$ROOT" status --porcelain -- src bin 2>/dev/null)" ]; then commit="$commit + uncommitted changes in src/ or bin/"; fi
live_run="$(printf '`%s`, ' "${LIVE_RUN[@]}")"; live_run="${live_run%, }"
section="$WORK/section.md"
{
  echo "## Build, install: dpkg: ocibuild vs mmdebstrap --variant=essential"
  echo
  echo "- Date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- Machine: $(bench_machine)"
  echo "- Load average (1, 5, 15 min; other work on the machine skews timings): $LOAD_START at the script's start, $LOAD_T0 when the timed runs began, $LOAD_END when they ended"
  echo "- Software: ocibuild $commit ($DIST_NOTE), node $(node --version), $(bwrap --version 2>/dev/null || echo 'no bwrap'); $(mmdebstrap --version), $(apt-get --version | head -1), dpkg $(dpkg-query -W -f='${Version}' dpkg); $(hyperfine --version)"
  echo "- Package set: \`${PACKAGES[*]}\` and the Essential: yes set, Debian $SUITE $ARCH: $SET_NOTE ($N_ESSENTIAL of them Essential: yes)."
  echo "- Mirror: the $MIRROR_DEBS .debs of the two specs' locks against $UPSTREAM, copied into a local apt repository (dpkg-scanpackages, apt-ftparchive release, InRelease signed by a throwaway ed25519 key) served by \`python3 -m http.server --protocol HTTP/1.1\` on 127.0.0.1 (bench/lib/mirror.sh)."
  echo "- Method: \`bash bench/dpkg.sh\`, hyperfine --warmup $WARMUP --runs $RUNS, all commands in one run, after one untimed run of the live spec and of mmdebstrap (.tar)."
  echo "  - ocibuild: \`ocibuild build -q --locked\`, spec \`from: scratch\`, \`install: dpkg\`, with a warm store (lockfile present, .debs fetched from the mirror by the untimed build), \`STORE/cache/layers-v1\`, \`STORE/rootfs\` and the OCI layout removed before each run: checks the $N_DPKG .debs against the lock, unpacks the essential set into a tree, then in a bwrap sandbox without network \`dpkg --install\` of the essential set and then of the rest in batches (while dpkg runs, ocibuild writes copies of the .debs with data.tar decompressed, which dpkg takes when ready), \`dpkg --audit\`; writes the gzip layer ($OCI_LAYER_SIZE), config, manifest. No network. Checked after the timed runs: $IMAGE_NOTE."
  echo "  - live spec: the same plus \`passwd\` ($N_LIVE packages) and \`run:\` $live_run (a second layer). The untimed run printed \`$OPENSSL_LINE\`. mmdebstrap has no RUN step (its \`--customize-hook\`, a command run in the finished chroot, would be the nearest thing), so this row has no counterpart; its ratio to mmdebstrap is given for scale only."
  echo "  - mmdebstrap (mode: $MM_MODE), \`--variant=essential --include=$pkgs_comma --aptopt='Acquire::Languages \"none\"'\`, into a \`.tar\` ($MM_TAR_SIZE, uncompressed)$MM_DIR_NOTE: apt update from the local mirror, resolution, download of the .debs from the mirror, the essential set unpacked and installed with dpkg in a chroot, then apt-get installs the rest, then the tar. Nothing is kept between its runs (it has no store). The untimed run took $MM_SECONDS s, the untimed ocibuild live build (which also fetched the .debs from the mirror) $LIVE_SECONDS s."
  echo "  - fsync: ocibuild runs dpkg with \`--force-unsafe-io\` (src/build/dpkg-layer.ts: no fsync per unpacked file; the layer is written from the tree afterwards); mmdebstrap sets no such option by default, so its dpkg fsyncs every file$([ "$UNSAFE_ROW" = 1 ] && echo "; the \`--dpkgopt=force-unsafe-io\` row gives mmdebstrap the same (it also leaves that option in /etc/dpkg/dpkg.cfg.d/99mmdebstrap)"). An fsync on this machine's disk: $FSYNC_MS ms (median of 20, 4 KiB files, $(df --output=fstype "$WORK" | tail -1) on $(df --output=source "$WORK" | tail -1))."
  if [ -n "$CG_ROOT" ]; then
    echo "  - CPU time: each row's commands ran in a cgroup of their own ($CG_KIND; total over the $((WARMUP + RUNS)) runs / $((WARMUP + RUNS))), so it counts every process, the sandbox's included. hyperfine's own user + sys (last column) come from the rusage of waited-for children and miss what runs in ocibuild's bwrap --unshare-pid sandbox (\`/usr/bin/time bwrap --unshare-pid … sh -c LOOP\` reports 0.00 s user): for ocibuild rows they are only the Node process and its helpers. Kernel threads (writeback, the ext4 journal) are in neither."
  else
    echo "  - CPU time: hyperfine's user + sys (rusage of waited-for children; no cgroup was available): it misses what runs in ocibuild's bwrap --unshare-pid sandbox, i.e. dpkg and the maintainer scripts, so ocibuild's CPU figures are too low."
  fi
  echo
  cat "$WORK/table.md"
  echo
  echo "$RATIOS"
} >"$section"

cat "$section"
if [ "$WRITE_RESULTS" = 1 ]; then bench_append_results "$section"; fi
