#!/usr/bin/env bash
# Benchmark: incremental builds (issue 6's step cache). For each example image, three
# timed cases with hyperfine, in one run:
#   cold        every layer written again (the layer cache and rootfs trees removed
#               before each run; the .debs stay: warm store)
#   no change   nothing to redo: inputs hashed, layers from the cache, output written
#   RUN change  one RUN line different each run: the RUN layer and what follows are
#               redone, the apt layer comes from the cache
# Targets (issue 6): no-change rebuild under 5 % of the cold build and under 1 s.
#
#   bash bench/incremental.sh                   # print the tables and ratios
#   bash bench/incremental.sh --write-results   # ... and append a section to bench/RESULTS.md
#
# Environment: RUNS (default 5). Needs the network once (the .debs from deb.debian.org),
# root (the RUN sandbox), hyperfine, and the compiled CLI (npm run build).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WRITE_RESULTS=0
for arg in "$@"; do
  case "$arg" in
    --write-results) WRITE_RESULTS=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "bench/incremental.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done
RUNS="${RUNS:-5}"
OCIBUILD="$ROOT/bin/ocibuild"
command -v hyperfine >/dev/null || { echo "bench/incremental.sh: hyperfine not found (apt-get install hyperfine)" >&2; exit 1; }
[ -f "$ROOT/dist/cli/main.js" ] || { echo "bench/incremental.sh: the CLI is not compiled: run 'npm run build'" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ocibuild-bench-incr.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
STORE="$WORK/store"

# The examples, each with a RUN step added (a counter file makes the RUN-change case
# different on every run).
# RUN needs /bin/sh: dash joins the packages where the example has no shell.
make_case() { # NAME EXAMPLE RUN-LINE EXTRA-PACKAGE
  mkdir -p "$WORK/$1"
  sed "s/^  packages: \[\(.*\)\]/  packages: [\1${4:+, $4}]/" "examples/$2/image.yaml" >"$WORK/$1/image.yaml"
  printf 'run:\n  - %s\n' "$3" >>"$WORK/$1/image.yaml"
}
make_case busybox busybox 'echo 0 > /stamp' dash
make_case debian-python debian-python 'echo 0 > /stamp' dash
CASES=(busybox debian-python)

args=()
for c in "${CASES[@]}"; do
  spec="$WORK/$c/image.yaml"
  out="oci:$WORK/$c/out:x"
  build="$OCIBUILD build -q -f $spec --output $out --cache-dir $STORE"
  echo "== $c: first build (untimed: downloads the .debs)" >&2
  $build >/dev/null
  # The RUN-change case: the line's number is bumped before each run.
  echo 0 >"$WORK/$c/counter"
  bump="n=\$(( \$(cat $WORK/$c/counter) + 1 )); echo \$n > $WORK/$c/counter; sed -i \"s/echo [0-9]* > \\/stamp/echo \$n > \\/stamp/\" $spec"
  args+=(-n "$c: cold (warm .deb store)" --prepare "rm -rf $STORE/cache/layers-v1 $STORE/rootfs" "$build")
  args+=(-n "$c: no change" --prepare true "$build")
  args+=(-n "$c: one RUN line changed" --prepare "$bump" "$build")
done
hyperfine --runs "$RUNS" --warmup 1 --style basic --export-markdown "$WORK/table.md" --export-json "$WORK/result.json" "${args[@]}" >&2

RATIOS="$(node -e '
  const rs = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).results;
  const f = (x) => x.toFixed(3);
  for (let i = 0; i + 2 < rs.length; i += 3) {
    const [cold, same, run] = rs.slice(i, i + 3);
    console.log("- " + cold.command.split(":")[0] + ": no change / cold = **" + f(same.mean / cold.mean) + "** (target < 0.05; " + f(same.mean) + " s, target < 1 s), RUN change / cold = " + f(run.mean / cold.mean));
  }' "$WORK/result.json")"
echo "$RATIOS"

if [ "$WRITE_RESULTS" = 1 ]; then
  {
    echo
    echo "## Incremental builds: cold, no change, one RUN line changed"
    echo
    echo "- Date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "- Machine: $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM; load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- Software: node $(node --version), $(hyperfine --version); ocibuild $(git rev-parse --short HEAD)$(git diff --quiet -- src || echo ' with uncommitted changes in src/')"
    echo "- Method: \`bash bench/incremental.sh\`, hyperfine --warmup 1 --runs $RUNS. The examples with a RUN line added; cold = layer cache and rootfs trees removed before each run (.debs kept); RUN change = the RUN line's text changes before each run."
    echo
    cat "$WORK/table.md"
    echo
    echo "$RATIOS"
  } >>bench/RESULTS.md
  echo "appended to bench/RESULTS.md" >&2
fi
