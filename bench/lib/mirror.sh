# shellcheck shell=bash
# Sourced by bench/build.sh and bench/dpkg.sh: the work directory, a local signed apt
# repository made of exactly the .debs some lockfiles name, its HTTP server, and the
# machine description of a RESULTS.md section.
#
# The sourcing script sets NAME (for messages), SUITE and ARCH first. Functions set
# globals, as noted at each: WORK KEEP GNUPGHOME SERVER_PID MIRROR_DEBS MKEYRING MURL.

bench_need() { # TOOL...: exit with an install hint when one is missing
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || {
      echo "$NAME: $tool not found (Debian: apt-get install hyperfine mmdebstrap dpkg-dev apt-utils gnupg python3 curl)" >&2
      exit 1
    }
  done
}

bench_work() { # TEMPLATE -> WORK, KEEP; the exit trap stops the server and removes WORK
  if [ -n "${OCIBUILD_BENCH_WORK:-}" ]; then
    WORK="$(mkdir -p "$OCIBUILD_BENCH_WORK" && cd "$OCIBUILD_BENCH_WORK" && pwd)"
    KEEP=1
  else
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")"
    KEEP=0
  fi
  # apt's methods (gpgv included) drop privileges to _apt: the generated keyring must be
  # readable by it, and mktemp -d makes a 0700 directory.
  chmod 755 "$WORK"
  SERVER_PID=
  export GNUPGHOME="$WORK/gnupg"
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

bench_cleanup() { # and bench_on_exit first, when the sourcing script defines one
  if declare -F bench_on_exit >/dev/null; then bench_on_exit || true; fi
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  [ -d "$GNUPGHOME" ] && gpgconf --kill gpg-agent 2>/dev/null || true
  [ "$KEEP" = 1 ] || rm -rf "$WORK"
}

lock_field() { # LOCKFILE FIELD -> one value per package paragraph
  awk -v f="$2" 'BEGIN { RS = ""; FS = "\n" }
    NR > 1 { for (i = 1; i <= NF; i++) if (index($i, f ": ") == 1) print substr($i, length(f) + 3) }' "$1"
}

# BLOBS MIRROR LOCKFILE... -> MIRROR_DEBS (count), MKEYRING. BLOBS holds the .debs named
# by their sha256 (a store's blobs/sha256); the mirror gets the union of the locks'
# packages, checked against the locks' SHA256: pool/, dists/SUITE/main/binary-ARCH/
# Packages(.gz) (dpkg-scanpackages), Release (apt-ftparchive) signed with a throwaway
# ed25519 key (InRelease, Release.gpg, WORK/keyring.gpg).
make_mirror() {
  local blobs="$1" mirror="$2" lock
  shift 2
  rm -rf "$mirror"
  mkdir -p "$mirror/dists/$SUITE/main/binary-$ARCH"
  for lock in "$@"; do paste <(lock_field "$lock" Filename) <(lock_field "$lock" SHA256); done | sort -u >"$WORK/mirror-debs"
  MIRROR_DEBS="$(wc -l <"$WORK/mirror-debs")"
  while IFS=$'\t' read -r filename sha; do
    mkdir -p "$mirror/$(dirname "$filename")"
    cp "$blobs/$sha" "$mirror/$filename"
    echo "$sha  $mirror/$filename"
  done <"$WORK/mirror-debs" | sha256sum --quiet -c -
  (
    cd "$mirror"
    dpkg-scanpackages --multiversion pool /dev/null 2>/dev/null >"dists/$SUITE/main/binary-$ARCH/Packages"
    gzip -9nk "dists/$SUITE/main/binary-$ARCH/Packages"
    apt-ftparchive \
      -o APT::FTPArchive::Release::Origin=ocibuild-bench \
      -o APT::FTPArchive::Release::Label=ocibuild-bench \
      -o APT::FTPArchive::Release::Suite="$SUITE" \
      -o APT::FTPArchive::Release::Codename="$SUITE" \
      -o APT::FTPArchive::Release::Architectures="$ARCH" \
      -o APT::FTPArchive::Release::Components=main \
      release "dists/$SUITE" >"$WORK/Release"
    # arch:all packages are in binary-amd64/Packages, as on Debian's mirrors.
    sed '/^Components:/a No-Support-for-Architecture-all: Packages' "$WORK/Release" >"dists/$SUITE/Release"
  )
  [ "$(grep -c '^Package:' "$mirror/dists/$SUITE/main/binary-$ARCH/Packages")" = "$MIRROR_DEBS" ] || {
    echo "$NAME: the mirror's Packages does not list the $MIRROR_DEBS .debs of the lock(s)" >&2
    exit 1
  }
  rm -rf "$GNUPGHOME"
  mkdir -m 700 "$GNUPGHOME"
  gpg --batch --quiet --passphrase '' --quick-gen-key 'ocibuild bench <bench@localhost>' ed25519 sign never 2>/dev/null
  gpg --batch --quiet --yes --clearsign -o "$mirror/dists/$SUITE/InRelease" "$mirror/dists/$SUITE/Release"
  gpg --batch --quiet --yes --armor --detach-sign -o "$mirror/dists/$SUITE/Release.gpg" "$mirror/dists/$SUITE/Release"
  MKEYRING="$WORK/keyring.gpg"
  gpg --batch --export >"$MKEYRING"
  chmod 644 "$MKEYRING"
}

# MIRROR -> MURL, SERVER_PID; the access log in WORK/http.log.
serve_mirror() {
  local port
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  # HTTP/1.1 (keep-alive), as real mirrors speak it. (It was also a workaround for an
  # undici crash on HTTP/1.0 connection close, nodejs/undici#5360; ocibuild has used
  # node:http since, which reads HTTP/1.0 servers fine.)
  python3 -m http.server --protocol HTTP/1.1 --bind 127.0.0.1 --directory "$1" "$port" >"$WORK/http.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  MURL="http://127.0.0.1:$port"
  echo "== serving $MURL (pid $SERVER_PID)" >&2
}

bench_machine() { # -> "2 CPUs, AMD EPYC ..., 23.5 GiB RAM"
  echo "$(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo)"
}

bench_load() { # -> the 1, 5 and 15 minute load averages
  cut -d' ' -f1-3 /proc/loadavg
}
