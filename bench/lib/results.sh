# shellcheck shell=bash
# Sourced by the bench/*.sh scripts: appending a finished section to bench/RESULTS.md.

bench_append_results() { # SECTION_FILE: appended to $ROOT/bench/RESULTS.md
  local results_md="$ROOT/bench/RESULTS.md"
  # Append only: other benchmarks write their own sections to the same file.
  [ -f "$results_md" ] || printf '# Benchmark results\n' >"$results_md"
  { echo; cat "$1"; } >>"$results_md"
  echo "== appended to $results_md" >&2
}
