#!/usr/bin/env bash
# Builds the container images the real node runs, as docker-archive tars, without Docker or a registry: each
# image is one uncompressed layer made from files of this machine (Debian packages, locally built binaries).
#
#   e2e/images.sh build           # build missing or stale archives, print their paths
#   e2e/images.sh import SOCKET   # build, then import into containerd's k8s.io namespace (skips what is there)
#   e2e/images.sh names           # the image references, one per line
#
# An archive is named <image>-<tag>-<key>.tar; the key hashes everything that goes into it (this script's
# functions that make it, its config, the sha256 of binaries and libraries, package versions), so an
# unchanged image is never rebuilt and the same inputs give the same image id (sorted tar, mtime 0, owner 0).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$here/versions.env"

cache=${BERTH_CACHE:-$HOME/.cache/berth}
out="$cache/images"
kbin="$cache/k8s-$K8S_VERSION/bin"
berth_bin=${BERTH_BIN:-${CARGO_TARGET_DIR:-target}/release/berth}
[[ $berth_bin = /* ]] || berth_bin="$repo/$berth_bin"
go=$(command -v go || echo /usr/local/go/bin/go)
pg_pkgs=(postgresql-15 postgresql-client-15 pgbouncer libpq5)
refs=(berth.local/pause:3.10 berth.local/busybox:1.36 berth.local/berth:dev berth.local/postgres:15
  "berth.local/coredns:$COREDNS_VERSION")
archives=()
berth_libs="" pg_libs="" certs=()
[ ! -f /etc/ssl/certs/ca-certificates.crt ] || certs=(/etc/ssl/certs/ca-certificates.crt)
tmp=""
trap '[ -z "$tmp" ] || rm -rf "$tmp"' EXIT

log() { printf '[images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# libs FILE...: the shared libraries (and dynamic loader) the ELF files load, as ldd resolves them here.
libs() {
  local found
  found=$(ldd "$@" 2>/dev/null || true)
  if grep -q 'not found' <<<"$found"; then die "missing libraries: $(grep 'not found' <<<"$found" | sort -u)"; fi
  awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $2 ~ /^\(0x/ {print $1}' <<<"$found" | sort -u
}

# add ROOT < PATHS: copies host paths (one a line) to the same paths under ROOT: directories recursively,
# symlinks as symlinks, and every link of a chain along with its target.
add() {
  local p t
  while read -r p; do
    printf '%s\n' "${p#/}"
    while [ -L "$p" ]; do
      t=$(readlink "$p")
      [[ $t = /* ]] || t="$(dirname "$p")/$t"
      p=$(realpath -s -m "$t")
      printf '%s\n' "${p#/}"
    done
  done | LC_ALL=C sort -u >"$tmp/add.list"
  tar -C / -cf - -T "$tmp/add.list" | tar -C "$1" --keep-directory-symlink -xpf -
}

# usrmerge ROOT: the host's /bin, /lib... -> usr/... links, so library paths from ldd resolve as they do here.
usrmerge() {
  local d
  for d in bin sbin lib lib64; do
    if [ -L "/$d" ]; then mkdir -p "$1/usr/${d}"; ln -s "$(readlink "/$d")" "$1/$d"; fi
  done
}

# users ROOT NAME:ID[:HOME]...: /etc/passwd and /etc/group, each user in a group of the same id.
users() {
  local root=$1 u name id home
  shift
  mkdir -p "$root/etc"
  for u in "$@"; do
    IFS=: read -r name id home <<<"$u"
    printf '%s:x:%s:%s:%s:%s:/bin/sh\n' "$name" "$id" "$id" "$name" "${home:-/nonexistent}" >>"$root/etc/passwd"
    printf '%s:x:%s:\n' "$name" "$id" >>"$root/etc/group"
  done
}

# applets ROOT DIR: busybox applet links in DIR (next to DIR/busybox), leaving existing files alone.
applets() {
  local a
  for a in $(/bin/busybox --list); do
    [ -e "$1/$2/$a" ] || [ -L "$1/$2/$a" ] || ln -s busybox "$1/$2/$a"
  done
}

img_pause() {
  (cd "$here/images/pause" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 GOTOOLCHAIN=local GOFLAGS=-mod=mod \
    "$go" build -trimpath -ldflags "-s -w" -o "$1/pause" .)
}

img_busybox() {
  mkdir -p "$1/bin" "$1/usr"
  mkdir -m 1777 "$1/tmp"
  install -m 0755 /bin/busybox "$1/bin/busybox"
  applets "$1" bin
  ln -s bin "$1/sbin"
  ln -s ../bin "$1/usr/bin" # for #!/usr/bin/env
  users "$1" root:0:/root nobody:65534 app:1000
}

# Like gcr.io/distroless/cc-debian12:nonroot plus the binary: glibc and what else ldd lists, CA certificates.
img_berth() {
  usrmerge "$1"
  mkdir -m 1777 "$1/tmp"
  install -m 0755 "$berth_bin" "$1/berth"
  printf '%s\n' "$berth_libs" "${certs[@]}" | add "$1"
  users "$1" root:0:/root nobody:65534 nonroot:65532
}

# The files of the PostgreSQL packages, without directories (they come with their files) and without what a
# container does not need: docs, /etc (this machine's configuration; pods bring their own), systemd units, the
# LLVM JIT (libLLVM alone is 170 MB; without llvmjit.so PostgreSQL just does not JIT), the extension build kit.
pg_files() {
  local f skip='^/(etc|lib/systemd|usr/share/(doc|man|locale|lintian|bug))/|/bitcode/|/llvmjit|/pgxs/'
  dpkg -L "${pg_pkgs[@]}" | grep -Ev "$skip" | while read -r f; do [ -d "$f" ] || echo "$f"; done
}

img_postgres() {
  usrmerge "$1"
  # C.utf8 for LANG=C.UTF-8 (not built into glibc 2.36); `locale -a` is how initdb finds system collations.
  { pg_files; printf '%s\n' "$pg_libs" /usr/share/zoneinfo /usr/lib/locale/C.utf8 /usr/bin/locale /bin/busybox; } |
    add "$1"
  applets "$1" bin
  mkdir -p "$1/var/run"
  mkdir -m 1777 "$1/tmp" "$1/var/run/postgresql"
  users "$1" root:0:/root postgres:999:/var/lib/postgresql
  if [ "$(id -u)" = 0 ]; then # a library missing from the image shows here, not in a crash-looping pod
    for b in /usr/lib/postgresql/15/bin/postgres /usr/lib/postgresql/15/bin/psql /usr/sbin/pgbouncer; do
      chroot "$1" "$b" --version >/dev/null || die "$b does not run in the postgres image"
    done
  fi
}

img_coredns() {
  install -m 0755 "$kbin/coredns" "$1/coredns"
  users "$1" root:0:/root nobody:65534 nonroot:65532
}

# image REF FUNCTION CONFIG INPUTS: the archive for REF, built by FUNCTION ROOTFS unless cached. CONFIG is the
# JSON inside "config"; INPUTS fingerprints whatever FUNCTION copies from outside this script.
image() {
  local ref=$1 fn=$2 config=$3 inputs=$4 key base archive diff id
  key=$({
    declare -f "$fn" image add usrmerge users applets libs pg_files
    printf '%s\n' "$ref" "$config" "$inputs"
  } | sha256sum | cut -c1-16)
  base=${ref#*/}
  base=${base//:/-}
  archive="$out/$base-$key.tar"
  if [ ! -f "$archive" ]; then
    log "building $ref"
    tmp=$(mktemp -d "$out/.build-XXXXXX")
    mkdir -m 0755 "$tmp/root" "$tmp/image"
    "$fn" "$tmp/root"
    (cd "$tmp/root" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort) >"$tmp/top"
    tar -C "$tmp/root" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
      -cf "$tmp/layer.tar" -T "$tmp/top"
    diff=$(sha256sum "$tmp/layer.tar" | cut -d' ' -f1)
    printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{%s},%s}' "$config" \
      "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$diff\"]}" >"$tmp/config.json"
    id=$(sha256sum "$tmp/config.json" | cut -d' ' -f1)
    mkdir "$tmp/image/$diff"
    mv "$tmp/layer.tar" "$tmp/image/$diff/layer.tar"
    mv "$tmp/config.json" "$tmp/image/$id.json"
    printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]\n' "$id" "$ref" "$diff" \
      >"$tmp/image/manifest.json"
    # manifest.json first, so `import` reads it without scanning the layer
    tar -C "$tmp/image" --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
      -cf "$tmp/image.tar" manifest.json "$id.json" "$diff/layer.tar"
    mv "$tmp/image.tar" "$archive"
    find "$out" -maxdepth 1 -name "$base-*.tar" ! -name "$base-$key.tar" -delete # older versions
    rm -rf "$tmp"
    tmp=""
    log "built $ref ($(du -h "$archive" | cut -f1), id sha256:${id:0:12})"
  fi
  archives+=("$archive")
}

# optional NAME REF FN CONFIG: an image from a binary of build-components.sh, skipped while it is not built.
optional() {
  if [ -x "$kbin/$1" ]; then
    image "$2" "$3" "$4" "$(sha256sum "$kbin/$1")"
  elif [ "${BERTH_IMAGES_STRICT:-0}" = 1 ]; then
    die "$kbin/$1 is missing (e2e/build-components.sh builds it)"
  else
    log "warning: skipping $2: $kbin/$1 is not built yet"
  fi
}

build() {
  mkdir -p "$out"
  local sums path='"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]'
  # Everything needed from outside is checked first, so a failure says what to do before any work is done.
  [ -x "$berth_bin" ] || die "$berth_bin does not exist: run cargo build --release -p berth-operator --locked"
  dpkg-query -W busybox-static "${pg_pkgs[@]}" >/dev/null 2>&1 ||
    die "packages missing: apt-get install busybox-static ${pg_pkgs[*]}"
  image berth.local/pause:3.10 img_pause '"Entrypoint":["/pause"],"User":"65535:65535"' \
    "$(cat "$here/images/pause/go.mod" "$here/images/pause/main.go"; "$go" version)"

  image berth.local/busybox:1.36 img_busybox "$path,\"Cmd\":[\"sh\"]" "$(sha256sum /bin/busybox)"

  berth_libs=$(libs "$berth_bin")
  # shellcheck disable=SC2086 # one path per line, no spaces
  sums=$(sha256sum "$berth_bin" $berth_libs "${certs[@]}")
  image berth.local/berth:dev img_berth \
    "$path,\"Entrypoint\":[\"/berth\"],\"User\":\"65532:65532\",\"ExposedPorts\":{\"8080/tcp\":{}}" "$sums"

  # shellcheck disable=SC2046 # one path per line, no spaces
  pg_libs=$(libs $(pg_files | grep -E '/s?bin/|\.so') /usr/bin/locale)
  # shellcheck disable=SC2086 # one path per line, no spaces
  sums=$(dpkg-query -W "${pg_pkgs[@]}" tzdata libc-bin busybox-static; sha256sum $pg_libs)
  image berth.local/postgres:15 img_postgres \
    '"Env":["PATH=/usr/lib/postgresql/15/bin:/usr/sbin:/usr/bin:/bin","LANG=C.UTF-8"]' "$sums"

  optional coredns "berth.local/coredns:$COREDNS_VERSION" img_coredns "$path,\"Entrypoint\":[\"/coredns\"]"
}

# present SOCKET LISTING REF ID: REF is in containerd (LISTING is `ctr images ls`) and its manifest names the
# config ID, i.e. the image id is the same.
present() {
  local digest
  digest=$(awk -v r="$3" '$1 == r {print $3}' <<<"$2")
  [ -n "$digest" ] && ctr -a "$1" -n k8s.io content get "$digest" 2>/dev/null | grep -q "sha256:$4"
}

import() {
  local sock=$1 listing archive manifest ref id
  [ -S "$sock" ] || die "$sock is not a socket"
  build
  listing=$(ctr -a "$sock" -n k8s.io images ls)
  for archive in "${archives[@]}"; do
    manifest=$(tar --occurrence=1 -xOf "$archive" manifest.json)
    [[ $manifest =~ \"Config\":\"([0-9a-f]+)\.json\",\"RepoTags\":\[\"([^\"]+)\" ]] ||
      die "$archive: unexpected manifest.json"
    id=${BASH_REMATCH[1]} ref=${BASH_REMATCH[2]}
    if present "$sock" "$listing" "$ref" "$id"; then
      log "$ref is up to date (sha256:${id:0:12})"
    else
      log "importing $ref"
      ctr -a "$sock" -n k8s.io images import "$archive" >&2
    fi
  done
}

case "${1:-}" in
  build) build; printf '%s\n' "${archives[@]}" ;;
  import) [ $# = 2 ] || die "usage: $0 import SOCKET"; import "$2" ;;
  names) printf '%s\n' "${refs[@]}" ;;
  *) echo "usage: $0 build | import SOCKET | names" >&2; exit 2 ;;
esac
