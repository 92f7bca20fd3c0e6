#!/usr/bin/env bash
# Builds the upstream control-plane binaries from source through the Go module proxy, once, into a cache
# outside the repo. No Docker and no release downloads are needed: only `go` and the module proxy.
#
#   e2e/build-components.sh          # build whatever is missing, print the bin directory
#
# Each component gets a tiny wrapper Go module, because `go install pkg@version` refuses modules with
# `replace` directives, and the staging replaces of k8s.io/kubernetes do not apply to dependents.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache=${BERTH_CACHE:-$HOME/.cache/berth}
bin="$cache/k8s-$K8S_VERSION/bin"
src="$cache/src"
mkdir -p "$bin" "$src"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
# Go's module and build caches of these builds take about 13 GB, far more than the binaries: they are kept
# apart from the user's own and removed once every binary is built (see the end), so a CI disk is not filled.
export GOMODCACHE="$cache/go-mod" GOCACHE="$cache/go-build"

log() { printf '[build] %s\n' "$*" >&2; }

# wrapper DIR MODULE VERSION [REPLACES]: a module that requires MODULE@VERSION.
wrapper() {
  local dir=$1 module=$2 version=$3 replaces=${4:-}
  mkdir -p "$dir"
  if [ ! -f "$dir/go.mod" ] || ! grep -q "$module $version" "$dir/go.mod"; then
    rm -f "$dir/go.mod" "$dir/go.sum"
    {
      echo "module berth.dev/localbuild/$(basename "$dir")"
      echo
      echo "go 1.25.0"
      echo
      echo "require $module $version"
      if [ -n "$replaces" ]; then printf "\nreplace (\n%s)\n" "$replaces"; fi
    } >"$dir/go.mod"
  fi
}

# The real node's kubelet and kube-proxy come from the same source and version as the control plane.
build_kubernetes() {
  local want=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy) missing=0 c
  for c in "${want[@]}"; do [ -x "$bin/$c" ] || missing=1; done
  [ "$missing" = 1 ] || return 0
  local dir="$src/kubernetes-$K8S_VERSION" minor staging gomod replaces=""
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  staging="v0.${K8S_VERSION#v1.}"
  (cd /tmp && go mod download "k8s.io/kubernetes@$K8S_VERSION")
  gomod="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.mod"
  # Every staging module k8s.io/kubernetes replaces with ./staging/... is published as k8s.io/<name> v0.X.Y.
  while read -r mod; do
    replaces+="	$mod => $mod $staging"$'\n'
  done < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$gomod")
  wrapper "$dir" k8s.io/kubernetes "$K8S_VERSION" "$replaces"
  local date ldflags=""
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  for c in "${want[@]}"; do
    [ -x "$bin/$c" ] && continue
    log "kubernetes $K8S_VERSION: $c"
    (cd "$dir" && go get "k8s.io/kubernetes/cmd/$c@$K8S_VERSION" &&
      go build -trimpath -ldflags "-s -w$ldflags" -o "$bin/$c" "k8s.io/kubernetes/cmd/$c")
  done
}

# simple NAME MODULE VERSION PACKAGE [LDFLAGS]
simple() {
  local name=$1 module=$2 version=$3 pkg=$4 ldflags=${5:-}
  [ -x "$bin/$name" ] && return 0
  local dir="$src/$name-$version"
  log "$name $version"
  wrapper "$dir" "$module" "$version"
  (cd "$dir" && go get "$pkg@$version" && go build -trimpath -ldflags "-s -w $ldflags" -o "$bin/$name" "$pkg")
}

build_kubernetes
simple etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3
simple kwok sigs.k8s.io/kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok \
  "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
simple helm helm.sh/helm/v3 "$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
  "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
# Cluster DNS of the real node (e2e/images.sh wraps it in an image) and its NetworkPolicy enforcer, kube-router
# with only its firewall controller (a host process).
simple coredns github.com/coredns/coredns "$COREDNS_VERSION" github.com/coredns/coredns \
  "-X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
simple kube-router github.com/cloudnativelabs/kube-router/v2 "$KUBE_ROUTER_VERSION" \
  github.com/cloudnativelabs/kube-router/v2/cmd/kube-router \
  "-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION"
# Volumes on the real node: the provisioner kind uses, a host process here (its helper pods run on the node).
simple local-path-provisioner github.com/rancher/local-path-provisioner "$LOCAL_PATH_VERSION" \
  github.com/rancher/local-path-provisioner
# The alert rules' checker (e2e/alerts.sh), stamped with the Prometheus release its module version stands for.
prom=${PROMETHEUS_VERSION#v0.}
simple promtool github.com/prometheus/prometheus "$PROMETHEUS_VERSION" github.com/prometheus/prometheus/cmd/promtool \
  "-X github.com/prometheus/common/version.Version=3.$((${prom%%.*} - 300)).${prom#*.}"
# Everything is built: the binaries are the cache now.
if [ -d "$GOMODCACHE" ] || [ -d "$GOCACHE" ]; then
  log "removing Go's caches of the builds ($(du -sh "$GOMODCACHE" "$GOCACHE" 2>/dev/null | cut -f1 | paste -sd+))"
  go clean -modcache
  rm -rf "$GOCACHE"
fi
echo "$bin"
