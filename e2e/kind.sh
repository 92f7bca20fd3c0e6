#!/usr/bin/env bash
# berth's e2e suite on a kind cluster, for machines with Docker (the local alternative without Docker is
# e2e/cluster.sh). Needs docker, kind, kubectl, helm and cargo on PATH (kubectl and helm fall back to the ones
# built by e2e/build-components.sh).
#
#   e2e/kind.sh          up, then test
#   e2e/kind.sh up       create the cluster (or reuse it), build and load the image, install the chart
#   e2e/kind.sh test     run the e2e suite against the operator installed by the chart
#   e2e/kind.sh down     delete the cluster
#
# Environment: BERTH_KIND_NAME (default berth), BERTH_KIND_IMAGE (node image, default: kind's own default),
# BERTH_KIND_KUBECONFIG (default <repo>/target/kind/kubeconfig; ~/.kube/config is left alone).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$here/versions.env"

name=${BERTH_KIND_NAME:-berth}
kubeconfig=${BERTH_KIND_KUBECONFIG:-$repo/target/kind/kubeconfig}
image=berth:dev
namespace=berth-system
built="${BERTH_CACHE:-$HOME/.cache/berth}/k8s-$K8S_VERSION/bin"

log() { printf '[kind] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# tool NAME: the command on PATH, else the one built by build-components.sh.
tool() {
  if command -v "$1" >/dev/null 2>&1; then
    command -v "$1"
  elif [ -x "$built/$1" ]; then
    echo "$built/$1"
  else
    die "$1 not found on PATH nor in $built"
  fi
}

exists() { kind get clusters 2>/dev/null | grep -qx "$name"; }

up() {
  local c kubectl helm
  for c in docker kind; do
    command -v "$c" >/dev/null 2>&1 || die "$c not found on PATH"
  done
  kubectl=$(tool kubectl)
  helm=$(tool helm)
  mkdir -p "$(dirname "$kubeconfig")"
  if exists; then
    log "reusing kind cluster $name"
    kind export kubeconfig --name "$name" --kubeconfig "$kubeconfig"
  else
    local args=(create cluster --name "$name" --config "$here/kind-config.yaml" --kubeconfig "$kubeconfig" --wait 180s)
    [ -n "${BERTH_KIND_IMAGE:-}" ] && args+=(--image "$BERTH_KIND_IMAGE")
    kind "${args[@]}"
  fi

  log "building $image"
  docker build -t "$image" "$repo"
  kind load docker-image "$image" --name "$name"

  local upgrading=0
  if KUBECONFIG=$kubeconfig "$helm" status berth -n "$namespace" >/dev/null 2>&1; then
    upgrading=1
  fi
  KUBECONFIG=$kubeconfig "$helm" upgrade --install berth "$repo/charts/berth" \
    --set image.repository=berth --set image.tag=dev --set image.pullPolicy=Never \
    -n "$namespace" --create-namespace --wait --timeout 5m
  if [ "$upgrading" = 1 ]; then
    # Same tag, new image: pods only pick it up when they are recreated.
    "$kubectl" --kubeconfig "$kubeconfig" -n "$namespace" rollout restart deployment
    "$kubectl" --kubeconfig "$kubeconfig" -n "$namespace" rollout status deployment --timeout 5m
  fi
  log "ready: export KUBECONFIG=$kubeconfig"
}

run_tests() {
  [ -f "$kubeconfig" ] || die "no kubeconfig at $kubeconfig; run: $0 up"
  cd "$repo"
  # The real-node tests pull public images there (kind's nodes have a registry; this machine's images do not
  # exist), and kind's network (kindnet) enforces NetworkPolicies.
  KUBECONFIG=$kubeconfig BERTH_E2E_OPERATOR=external BERTH_E2E_BUSYBOX_IMAGE=busybox:1.36 \
    BERTH_E2E_POSTGRES_IMAGE=ghcr.io/cloudnative-pg/postgresql:17 cargo test -p berth-e2e -- --test-threads=2
}

down() {
  if exists; then
    kind delete cluster --name "$name" --kubeconfig "$kubeconfig"
  else
    log "no kind cluster named $name"
  fi
  rm -f "$kubeconfig"
}

case "${1:-all}" in
  all)
    up
    run_tests
    ;;
  up) up ;;
  test) run_tests ;;
  down) down ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
