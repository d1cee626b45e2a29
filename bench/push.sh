#!/usr/bin/env bash
# Benchmark: `ocibuild push` against `skopeo copy` to a LOCAL registry, for the
# DESIGN.md target "Push of a fresh image to a local registry: at most skopeo's time for
# the same blobs". Also the re-push of an unchanged image (every blob already there).
#
#   bash bench/push.sh                    # print the tables and the ratios
#   bash bench/push.sh --write-results    # ... and append a section to bench/RESULTS.md
#   bash bench/push.sh --layout=random    # push a generated layout instead of a built one
#   bash bench/push.sh --profile          # also: one fresh push and one re-push under
#                                         #   `node --cpu-prof`, summarised by module/function
#
# Environment: RUNS (default 5), WARMUP (default 1); OCIBUILD_BENCH_WORK=DIR keeps the work
# dir (the store with the .debs, the layout) between runs (default: a fresh temp dir
# removed at exit).
#
# Steps:
#   1. The image: `ocibuild build -f examples/debian-python/image.yaml --locked` into an
#      OCI layout (python3 + ca-certificates from deb.debian.org, one gzip layer of about
#      25 MB). With --layout=random, or when that build fails (someone's work in
#      progress), a generated layout instead: 3 gzip layers of random bytes (5, 30 and
#      60 MiB) and a config.
#   2. Debian's docker-registry (distribution 2.8) on a free 127.0.0.1 port, filesystem
#      storage in the work dir, no auth. A helper (WORK/registry.sh) stops it, wipes the
#      storage, starts it again and waits for GET /v2/: the hyperfine --prepare of every
#      "fresh" run, so that each one pushes into an EMPTY registry.
#   3. Untimed check: one push with each tool into an empty registry; `skopeo inspect
#      --raw` must give the layout's manifest digest both times (skopeo copies OCI gzip
#      layers as they are); the registry's request log gives each tool's requests.
#   4. hyperfine --warmup $WARMUP --runs $RUNS, in one run: fresh push (ocibuild, skopeo),
#      re-push of the unchanged image (ocibuild, skopeo; the --prepare only makes sure
#      the image is there), and the bare process start of each tool as a reference.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib/results.sh
. "$ROOT/bench/lib/results.sh"
cd "$ROOT"

WRITE_RESULTS=0
PROFILE=0
LAYOUT_KIND=built
for arg in "$@"; do
  case "$arg" in
    --write-results) WRITE_RESULTS=1 ;;
    --profile) PROFILE=1 ;;
    --layout=built|--layout=random) LAYOUT_KIND="${arg#--layout=}" ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "bench/push.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

RUNS="${RUNS:-5}"
WARMUP="${WARMUP:-1}"
OCIBUILD="$ROOT/bin/ocibuild"
REGISTRY_BIN=/usr/bin/docker-registry
SPEC=examples/debian-python/image.yaml
TAG=bench
REPO=bench/app
REF_TAG=1

for tool in hyperfine skopeo node curl python3 sha256sum tar gzip; do
  command -v "$tool" >/dev/null || {
    echo "bench/push.sh: $tool not found (Debian: apt-get install hyperfine skopeo curl python3)" >&2
    exit 1
  }
done
[ -x "$REGISTRY_BIN" ] || { echo "bench/push.sh: $REGISTRY_BIN missing (apt-get install docker-registry)" >&2; exit 1; }
[ -f "$ROOT/dist/cli/main.js" ] || { echo "bench/push.sh: the CLI is not compiled: run 'npm run build'" >&2; exit 1; }

if [ -n "${OCIBUILD_BENCH_WORK:-}" ]; then
  WORK="$(mkdir -p "$OCIBUILD_BENCH_WORK" && cd "$OCIBUILD_BENCH_WORK" && pwd)"
  KEEP=1
else
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/ocibuild-bench-push.XXXXXX")"
  KEEP=0
fi
REG="$WORK/registry"
CTL="$WORK/registry.sh"
cleanup() {
  [ -x "$CTL" ] && "$CTL" stop 2>/dev/null || true
  [ "$KEEP" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. the image -------------------------------------------------------------------
LAYOUT="$WORK/layout"
STORE="$WORK/store"
make_random_layout() {
  local gen="$WORK/gen" size n=0 diff_ids=() layers=()
  rm -rf "$LAYOUT" "$gen"
  mkdir -p "$LAYOUT/blobs/sha256" "$gen"
  for size in 5 30 60; do
    n=$((n + 1))
    mkdir -p "$gen/l$n/data"
    head -c "$((size * 1024 * 1024))" /dev/urandom >"$gen/l$n/data/random-$size.bin"
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$gen/l$n" -cf "$gen/l$n.tar" data
    gzip -1 -n -c "$gen/l$n.tar" >"$gen/l$n.tar.gz"
    local diff digest bytes
    diff="$(sha256sum "$gen/l$n.tar" | cut -d' ' -f1)"
    digest="$(sha256sum "$gen/l$n.tar.gz" | cut -d' ' -f1)"
    bytes="$(stat -c %s "$gen/l$n.tar.gz")"
    mv "$gen/l$n.tar.gz" "$LAYOUT/blobs/sha256/$digest"
    diff_ids+=("\"sha256:$diff\"")
    layers+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$digest\",\"size\":$bytes}")
  done
  local IFS=,
  printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[%s]}}' "${diff_ids[*]}" >"$gen/config"
  local cdigest csize
  cdigest="$(sha256sum "$gen/config" | cut -d' ' -f1)"; csize="$(stat -c %s "$gen/config")"
  mv "$gen/config" "$LAYOUT/blobs/sha256/$cdigest"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
    "$cdigest" "$csize" "${layers[*]}" >"$gen/manifest"
  local mdigest msize
  mdigest="$(sha256sum "$gen/manifest" | cut -d' ' -f1)"; msize="$(stat -c %s "$gen/manifest")"
  mv "$gen/manifest" "$LAYOUT/blobs/sha256/$mdigest"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$LAYOUT/oci-layout"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
    "$mdigest" "$msize" "$TAG" >"$LAYOUT/index.json"
  rm -rf "$gen"
}

if [ "$LAYOUT_KIND" = built ]; then
  echo "== 1. ocibuild build -f $SPEC --locked -> oci:$LAYOUT:$TAG" >&2
  rm -rf "$LAYOUT"
  if "$OCIBUILD" build -q -f "$SPEC" --locked --output "oci:$LAYOUT:$TAG" --cache-dir "$STORE" >/dev/null 2>"$WORK/build.log"; then
    LAYOUT_NOTE="built by \`ocibuild build -f $SPEC --locked\` (python3 + ca-certificates, Debian 12, \`install: unpack\`, packages from deb.debian.org)"
  else
    tail -5 "$WORK/build.log" >&2
    echo "bench/push.sh: the build failed; pushing a generated layout instead" >&2
    LAYOUT_KIND=random-fallback
  fi
fi
if [ "$LAYOUT_KIND" != built ]; then
  echo "== 1. generated layout: 3 gzip layers of random bytes (5, 30, 60 MiB) -> $LAYOUT" >&2
  make_random_layout
  LAYOUT_NOTE="generated: 3 gzip layers of random bytes (5, 30 and 60 MiB of data), a config, an OCI manifest"
  [ "$LAYOUT_KIND" = random-fallback ] && LAYOUT_NOTE="$LAYOUT_NOTE (fallback: \`ocibuild build -f $SPEC\` failed)"
fi
MANIFEST_DIGEST="$(python3 -c '
import json, sys
idx = json.load(open(sys.argv[1] + "/index.json"))
m = [d for d in idx["manifests"] if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == sys.argv[2]]
print(m[0]["digest"])' "$LAYOUT" "$TAG")"
BLOBS_NOTE="$(python3 -c '
import json, sys
m = json.load(open(sys.argv[1] + "/blobs/sha256/" + sys.argv[2].split(":")[1]))
sizes = [l["size"] for l in m["layers"]]
mib = lambda n: "%.1f MiB" % (n / 1048576)
print("%d layer%s (%s) + config (%d B), %s of blobs" % (len(sizes), "" if len(sizes) == 1 else "s",
      ", ".join(mib(s) for s in sizes), m["config"]["size"], mib(sum(sizes) + m["config"]["size"])))
print(sum(sizes) + m["config"]["size"])' "$LAYOUT" "$MANIFEST_DIGEST")"
BLOB_BYTES="$(tail -1 <<<"$BLOBS_NOTE")"
BLOBS_NOTE="$(head -1 <<<"$BLOBS_NOTE")"
echo "== image $MANIFEST_DIGEST: $BLOBS_NOTE" >&2

# --- 2. the registry ----------------------------------------------------------------
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
HOST="127.0.0.1:$PORT"
mkdir -p "$REG/storage"
cat >"$REG/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: "$REG/storage"
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $HOST
  secret: $(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
EOF
# The helper the --prepare commands run. The registry runs detached from the shell that
# starts it (output to REG/log), its pid in REG/pid; `stop` waits until the process is
# gone (or a zombie) and the port is free, so the next start binds it again.
cat >"$CTL" <<EOF
#!/usr/bin/env bash
set -euo pipefail
REG='$REG'
HOST='$HOST'
LAYOUT='$LAYOUT'
TAG='$TAG'
REPO='$REPO'
REF_TAG='$REF_TAG'
MANIFEST_URL='http://$HOST/v2/$REPO/manifests/$REF_TAG'
EOF
cat >>"$CTL" <<'EOF'
alive() { # PID: running and not a zombie
  local state
  state="$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}
up() { curl -fs -o /dev/null --max-time 1 "http://$HOST/v2/"; }
start() {
  /usr/bin/docker-registry serve "$REG/config.yml" </dev/null >>"$REG/log" 2>&1 &
  local pid=$!
  echo "$pid" >"$REG/pid"
  for _ in $(seq 500); do
    up && return 0
    alive "$pid" || { tail -5 "$REG/log" >&2; echo "registry.sh: docker-registry exited" >&2; exit 1; }
    sleep 0.01
  done
  echo "registry.sh: no answer on http://$HOST/v2/" >&2; exit 1
}
stop() {
  [ -f "$REG/pid" ] || return 0
  local pid
  pid="$(cat "$REG/pid")"
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 500); do alive "$pid" || break; sleep 0.01; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$REG/pid"
  for _ in $(seq 500); do up || break; sleep 0.01; done
}
case "$1" in
  start) start ;;
  stop) stop ;;
  # empty storage, fresh process
  reset) stop; rm -rf "$REG/storage"; mkdir -p "$REG/storage"; start ;;
  # the image is in the registry (for a re-push): push it with skopeo if not
  ensure)
    curl -fs -o /dev/null -I -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$MANIFEST_URL" ||
      skopeo copy -q --insecure-policy --dest-tls-verify=false "oci:$LAYOUT:$TAG" "docker://$HOST/$REPO:$REF_TAG" ;;
  *) echo "registry.sh start|stop|reset|ensure" >&2; exit 2 ;;
esac
EOF
chmod +x "$CTL"
"$CTL" reset
echo "== docker-registry on http://$HOST (storage $REG/storage)" >&2

# --- 3. untimed check: same manifest digest, requests per tool -------------------------
DEST="$HOST/$REPO:$REF_TAG"
oci_cmd="$OCIBUILD push oci:$LAYOUT:$TAG $DEST -q"
sk_cmd="skopeo copy --insecure-policy --dest-tls-verify=false oci:$LAYOUT:$TAG docker://$DEST"
registry_digest() {
  skopeo inspect --raw --tls-verify=false "docker://$DEST" | sha256sum | sed 's/^/sha256:/; s/ .*//'
}
# Requests the registry logged since line $1: "N (HEAD a, POST b, ...)".
requests_since() {
  tail -n "+$1" "$REG/log" | grep 'response completed' | grep -o 'http.request.method=[A-Z]*' | cut -d= -f2 |
    sort | uniq -c | awk '{ n += $1; s = s (s ? ", " : "") $2 " " $1 } END { printf "%d (%s)", n, s }'
}
check_push() { # NAME CMD
  "$CTL" reset
  local from=$(($(wc -l <"$REG/log") + 1)) digest
  eval "$2" >/dev/null
  local reqs; reqs="$(requests_since "$from")"
  from=$(($(wc -l <"$REG/log") + 1))
  eval "$2" >/dev/null
  local rereqs; rereqs="$(requests_since "$from")"
  digest="$(registry_digest)"
  echo "== $1: registry manifest $digest; requests: fresh push $reqs, re-push $rereqs" >&2
  if [ "$digest" != "$MANIFEST_DIGEST" ]; then
    echo "bench/push.sh: $1 left $digest in the registry, the layout's manifest is $MANIFEST_DIGEST" >&2
    exit 1
  fi
  printf '%s\t%s\n' "$reqs" "$rereqs"
}
echo "== 3. one push with each tool into an empty registry (untimed)" >&2
OCI_REQS="$(check_push "ocibuild push" "$oci_cmd")"
SK_REQS="$(check_push "skopeo copy" "$sk_cmd")"

# --- 4. the timed run -----------------------------------------------------------------
echo "== 4. hyperfine --warmup $WARMUP --runs $RUNS" >&2
LOG_FROM=$(($(wc -l <"$REG/log") + 1))
hyperfine --warmup "$WARMUP" --runs "$RUNS" --style basic \
  --export-markdown "$WORK/table.md" --export-json "$WORK/result.json" \
  -n "ocibuild push, empty registry" --prepare "$CTL reset" "$oci_cmd" \
  -n "skopeo copy, empty registry" --prepare "$CTL reset" "$sk_cmd" \
  -n "ocibuild push, re-push (unchanged)" --prepare "$CTL ensure" "$oci_cmd" \
  -n "skopeo copy, re-push (unchanged)" --prepare "$CTL ensure" "$sk_cmd" \
  -n "bin/ocibuild --version (process start)" --prepare true "$OCIBUILD --version" \
  -n "skopeo --version (process start)" --prepare true "skopeo --version" >&2
# What the registry saw during the timed runs, per client (User-Agent) and request
# kind: how long it took to answer (for a PATCH or a monolithic PUT that includes
# receiving the body, i.e. how fast the client sent it).
REGISTRY_MD="$(tail -n "+$LOG_FROM" "$REG/log" | grep 'response completed' | python3 -c '
import collections, re, statistics, sys
units = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1000.0}
d = collections.defaultdict(list)
for line in sys.stdin:
    f = {k: v.strip("\"") for k, v in re.findall(r"([\w.]+)=(\"[^\"]*\"|\S+)", line)}
    agent = f.get("http.request.useragent", "?").split("/")[0].split(" ")[0]
    uri = f.get("http.request.uri", "")
    kind = "manifest" if "/manifests/" in uri else "upload session" if "/blobs/uploads/" in uri else "blob" if "/blobs/" in uri else uri
    m = re.match(r"([\d.]+)([a-zµ]+)$", f.get("http.response.duration", ""))
    if m and m.group(2) in units:
        d[(agent, f.get("http.request.method", "?"), kind)].append(float(m.group(1)) * units[m.group(2)])
print("| client | request | count | registry time, median [ms] | max [ms] |")
print("|:---|:---|---:|---:|---:|")
for (agent, method, kind), v in sorted(d.items()):
    if agent in ("curl",): continue
    print("| %s | %s %s | %d | %.1f | %.1f |" % (agent, method, kind, len(v), statistics.median(v), max(v)))
')"
FINAL_DIGEST="$(registry_digest)"
[ "$FINAL_DIGEST" = "$MANIFEST_DIGEST" ] || { echo "bench/push.sh: the registry ends with $FINAL_DIGEST, not $MANIFEST_DIGEST" >&2; exit 1; }

# Ratios of the mean wall times and of CPU time (user + sys of the client, all its
# processes; the registry's own CPU is not counted): on a shared machine CPU time is the
# steadier figure.
RATIOS="$(node -e '
  const rs = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).results;
  const bytes = Number(process.argv[2]);
  const [of, sf, orp, srp] = rs;
  const f = (x) => x.toFixed(2);
  const cpu = (r) => r.user + r.system;
  console.log("| | wall, mean [s] | wall, median [s] | CPU (user + sys), mean [s] |");
  console.log("|:---|---:|---:|---:|");
  for (const r of rs) console.log("| `" + r.command + "` | " + f(r.mean) + " | " + f(r.median) + " | " + f(cpu(r)) + " |");
  console.log();
  console.log("ocibuild / skopeo, fresh push: wall (mean) **" + f(of.mean / sf.mean) + "**, wall (median) " + f(of.median / sf.median) +
    ", CPU " + f(cpu(of) / cpu(sf)) + " (target: at most 1.00). Re-push of the unchanged image: wall (mean) **" +
    f(orp.mean / srp.mean) + "**, wall (median) " + f(orp.median / srp.median) + ", CPU " + f(cpu(orp) / cpu(srp)) + ".");
  const mbs = (r) => (bytes / 1048576 / r.mean).toFixed(0);
  console.log("Fresh-push throughput (blob bytes / mean wall time): ocibuild " + mbs(of) + " MiB/s, skopeo " + mbs(sf) + " MiB/s.");
  console.error("ratio ocibuild/skopeo: fresh " + f(of.mean / sf.mean) + ", re-push " + f(orp.mean / srp.mean));' \
  "$WORK/result.json" "$BLOB_BYTES")"

# --- optional: where ocibuild's time goes ------------------------------------------
PROFILE_MD=
if [ "$PROFILE" = 1 ]; then
  PROFILE_MD="$WORK/profile.md"
  # Summary of a .cpuprofile: idle / GC / startup, the CPU time spent evaluating each npm
  # package's modules (the outermost module top-level frame of that package), self time
  # per module and per function.
  cat >"$WORK/profile-summary.cjs" <<'EOF'
const fs = require('fs');
const [dir, wallMs, root, title] = process.argv.slice(2);
const p = JSON.parse(fs.readFileSync(dir + '/' + fs.readdirSync(dir).find((f) => f.endsWith('.cpuprofile')), 'utf8'));
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const total = (p.endTime - p.startTime) / 1000;
const rel = (u) => u.replace('file://' + root + '/', '');
const pkg = (u) => {
  const i = u.lastIndexOf('/node_modules/');
  if (i < 0) return undefined;
  const parts = u.slice(i + 14).split('/');
  return parts[0].startsWith('@') ? parts[0] + '/' + parts[1] : parts[0];
};
const moduleOf = (cf) => !cf.url ? cf.functionName : cf.url.startsWith('node:') ? 'node: internals' : pkg(cf.url) ? 'node_modules/' + pkg(cf.url) : rel(cf.url);
const add = (m, k, v) => m.set(k, (m.get(k) ?? 0) + v);
const selfMod = new Map(), selfFn = new Map(), pkgLoad = new Map();
let t = 0, firstRequest, lastOwn = 0;
for (let i = 0; i < p.samples.length; i++) {
  const us = p.timeDeltas[i] ?? 0;
  t += us;
  const id = p.samples[i];
  const cf = byId.get(id).callFrame;
  add(selfMod, moduleOf(cf), us);
  add(selfFn, (cf.functionName || '(anonymous)') + (cf.url ? ' ' + (pkg(cf.url) ? pkg(cf.url) + ':' + cf.url.split('/').pop() : rel(cf.url)) + ':' + (cf.lineNumber + 1) : ''), us);
  let outer;
  for (let x = id; x !== undefined; x = parent.get(x)) {
    const f = byId.get(x).callFrame;
    if (f.functionName === '' && f.lineNumber === 0 && pkg(f.url)) outer = pkg(f.url);
    if (firstRequest === undefined && f.functionName === 'send' && f.url.endsWith('/dist/registry/transport.js')) firstRequest = t;
    if (f.url.includes('/dist/')) lastOwn = t;
  }
  if (outer) add(pkgLoad, outer, us);
}
const ms = (us) => (us / 1000).toFixed(0);
const pct = (us) => (us / 10 / total).toFixed(0);
const top = (m, n) => [...m].sort((a, b) => b[1] - a[1]).slice(0, n);
console.log('#### ' + title);
console.log();
console.log('`node --cpu-prof`: ' + wallMs + ' ms wall for the process, ' + total.toFixed(0) + ' ms profiled (from the start of the main script); ' +
  'first registry request sent at ' + (firstRequest === undefined ? '?' : ms(firstRequest)) + ' ms; idle (waiting for the registry or the disk) ' +
  ms(selfMod.get('(idle)') ?? 0) + ' ms; garbage collection ' + ms(selfMod.get('(garbage collector)') ?? 0) + ' ms; ' +
  'after the last sample in ocibuild\'s own code (dist/, at ' + ms(lastOwn) + ' ms) the profile goes on for ' + ms(total * 1000 - lastOwn) + ' ms until the process exits.');
console.log();
console.log('CPU time evaluating npm packages (module loading): ' + top(pkgLoad, 8).map(([k, v]) => k + ' ' + ms(v) + ' ms').join(', ') + '.');
console.log();
console.log('| self time by module | ms | % |');
console.log('|:---|---:|---:|');
for (const [k, us] of top(selfMod, 10)) console.log('| ' + k + ' | ' + ms(us) + ' | ' + pct(us) + ' |');
console.log();
console.log('| self time by function | ms | % |');
console.log('|:---|---:|---:|');
for (const [k, us] of top(selfFn, 14)) console.log('| `' + k + '` | ' + ms(us) + ' | ' + pct(us) + ' |');
EOF
  : >"$PROFILE_MD"
  profile_push() { # NAME PREPARE
    "$CTL" "$2"
    rm -rf "$WORK/prof"
    local start_ns wall_ms
    start_ns="$(date +%s%N)"
    node --cpu-prof --cpu-prof-dir "$WORK/prof" "$OCIBUILD" push "oci:$LAYOUT:$TAG" "$DEST" -q >/dev/null 2>&1
    wall_ms=$((($(date +%s%N) - start_ns) / 1000000))
    node "$WORK/profile-summary.cjs" "$WORK/prof" "$wall_ms" "$ROOT" "$1" >>"$PROFILE_MD"
    echo >>"$PROFILE_MD"
  }
  echo "== profile: one fresh push and one re-push under node --cpu-prof" >&2
  profile_push "Profile: ocibuild push, empty registry" reset
  profile_push "Profile: ocibuild push, re-push (unchanged)" ensure
  cat "$PROFILE_MD" >&2
fi

section="$WORK/section.md"
{
  echo "## Push: ocibuild vs skopeo"
  echo
  echo "- Date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- Machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo)"
  echo "- Load average when the section was written (other work on the machine skews timings): $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- Software: node $(node --version), $(skopeo --version), $($REGISTRY_BIN --version | sed 's/^docker-registry //'), $(hyperfine --version); ocibuild from dist/ of a working tree at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo ' with uncommitted changes in src/')"
  echo "- Image: $LAYOUT_NOTE; $BLOBS_NOTE; manifest $MANIFEST_DIGEST."
  echo "- Registry: Debian's docker-registry (distribution 2.8) on 127.0.0.1, plain HTTP, no auth, filesystem storage in a temp dir, log level info to a file."
  echo "- Method: \`bash bench/push.sh\`, hyperfine --warmup $WARMUP --runs $RUNS, all commands in one run."
  echo "  - empty registry: the --prepare of every run (warmups included) stops the registry, wipes its storage, starts it again and waits for \`GET /v2/\`, so each push finds nothing and uploads every blob (the same repository name each time)."
  echo "  - re-push (unchanged): the image is already in the repository (the --prepare only checks that its manifest is there); nothing is uploaded, the tools check the blobs and put the manifest again."
  echo "  - \`$oci_cmd\` versus \`$sk_cmd\` (the tables name them by their hyperfine names)."
  echo "  - Same result: \`skopeo inspect --raw\` gives $MANIFEST_DIGEST (the layout's manifest) after a push by either tool into an empty registry, and after the timed runs: skopeo copied the OCI gzip layers as they are."
  echo "  - Requests the registry logged (untimed check), fresh push / re-push: ocibuild $(cut -f1 <<<"$OCI_REQS") / $(cut -f2 <<<"$OCI_REQS"); skopeo $(cut -f1 <<<"$SK_REQS") / $(cut -f2 <<<"$SK_REQS")."
  echo "  - skopeo runs with the host's blob-info cache (/var/lib/containers/cache as root), as it would for a user; what it remembers about this registry (blob locations) no longer exists after a wipe, so it uploads every blob."
  echo "  - Reference rows: the bare process start of each tool (\`--version\`)."
  echo
  cat "$WORK/table.md"
  echo
  echo "$RATIOS"
  echo
  echo "Registry side, all timed runs (warmups included; from its request log: the time from the request's arrival to the end of the response, so a PATCH or a PUT with a body includes receiving it; the curl rows of the --prepare helper left out):"
  echo
  echo "$REGISTRY_MD"
  if [ -n "$PROFILE_MD" ]; then
    echo
    cat "$PROFILE_MD"
  fi
} >"$section"

cat "$section"
if [ "$WRITE_RESULTS" = 1 ]; then bench_append_results "$section"; fi
