#!/usr/bin/env bash
# Builds kro's controller (kubernetes-sigs/kro, the bench's peer phase) from source through the Go module proxy,
# once, into a cache outside the repo, and puts kro's CRDs from the same module next to it.
#
#   e2e/build-kro.sh          # build it if missing, print the directory holding `controller` and `crds/`
#
# kro's module has no `replace` directives, so `go install pkg@version` builds it as released: no wrapper
# module is needed (unlike build-components.sh).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache=${BERTH_CACHE:-$HOME/.cache/berth}
out="$cache/kro-$KRO_VERSION"
module=github.com/kubernetes-sigs/kro
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
# Caches of its own, removed after the build (as in build-components.sh): the binary and the CRDs are kept.
export GOMODCACHE="$cache/go-mod-kro" GOCACHE="$cache/go-build-kro"

log() { printf '[build-kro] %s\n' "$*" >&2; }

done_already() { [ -x "$out/controller" ] && compgen -G "$out/crds/*.yaml" >/dev/null; }
if done_already; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"
# One build at a time; the second finds the binary when the first is done.
exec 9>"$out/.lock"
flock 9
if done_already; then
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
start=$(date +%s)
log "kro $KRO_VERSION: controller (several minutes on 2 cores when the Go build cache is cold)"
GOBIN="$out/.bin" go install -trimpath -ldflags "-s -w" "$module/cmd/controller@$KRO_VERSION"
mv "$out/.bin/controller" "$out/controller"
rmdir "$out/.bin"
# The CRDs are the ones the released controller was built with, from the module just downloaded.
dir=$(go mod download -json "$module@$KRO_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
mkdir -p "$out/crds"
cp "$dir"/helm/crds/*.yaml "$out/crds/"
log "built $out/controller in $(($(date +%s) - start))s"
go clean -modcache
rm -rf "$GOCACHE"
echo "$out"
