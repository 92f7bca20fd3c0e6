#!/usr/bin/env bash
# Runs the e2e suite the way `make test` and CI do:
#  - against the cluster in $KUBECONFIG when it is set (berth's chart is installed there unless
#    BERTH_E2E_OPERATOR=external says berth already runs in the cluster, as on kind);
#  - otherwise against the local control plane, started here if it is not running and stopped afterwards.
#
# Two modes:
#  - default (kwok nodes): the operator runs as a host process authenticated as the chart's ServiceAccount
#    (a TokenRequest token), so every missing RBAC rule in the chart fails a test;
#  - BERTH_REAL_NODE=1 (a real node, needs root): the operator image and the tenant images are built locally,
#    the chart is installed with them, berth runs as pods, and the real-node tests run. A cluster started here
#    is stopped afterwards and the machine is checked for anything the node left behind.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"

real=${BERTH_REAL_NODE:-0}
if [ "$real" = 1 ]; then
  tests=${BERTH_E2E_TESTS:-realnode}
  threads=${BERTH_E2E_THREADS:-3}
else
  tests=${BERTH_E2E_TESTS:-cluster api customer database scheduler operator security webhooks plugin}
  threads=${BERTH_E2E_THREADS:-4}
fi
release_ns=berth-system

if [ "$real" = 1 ]; then
  # The operator image is made from the release binary, before the node imports the images.
  cargo build --release -p berth-operator --locked
  "$here/images.sh" build >/dev/null
fi

own_cluster=0
if [ -z "${KUBECONFIG:-}" ]; then
  if ! "$here/cluster.sh" status >/dev/null 2>&1; then
    "$here/cluster.sh" up
    own_cluster=1
  elif [ "$real" = 1 ]; then
    # Running already: `up` reuses every component and imports the images just built.
    "$here/cluster.sh" up >/dev/null
  fi
  KUBECONFIG=$("$here/cluster.sh" kubeconfig)
  export KUBECONFIG
fi
finish() {
  local rc=$?
  if [ "$own_cluster" = 1 ]; then
    "$here/cluster.sh" down || rc=1
    if [ "$real" = 1 ]; then "$here/node.sh" leftovers || rc=1; fi
  fi
  exit "$rc"
}
trap finish EXIT

bin=$("$here/build-components.sh" | tail -n 1)
export PATH="$bin:$PATH"

if [ "$real" = 1 ]; then
  # As a user would: helm install, berth runs as pods.
  [ "${BERTH_E2E_OPERATOR:-}" = external ] || "$here/install.sh" real --set logFormat=text >/dev/null
else
  cargo build -p berth-operator --locked
  if [ "${BERTH_E2E_OPERATOR:-}" != external ]; then
    # The chart brings CRDs, ServiceAccount and RBAC; the real operator is the host process the tests
    # start, with the chart's identity.
    "$here/install.sh" >/dev/null
    sa_kubeconfig="$repo/target/e2e-operator.kubeconfig"
    "$here/operator-kubeconfig.sh" "$release_ns" berth "$sa_kubeconfig"
    export BERTH_E2E_OPERATOR_KUBECONFIG="$sa_kubeconfig"
  fi
fi

# `kubectl berth`, which the tests run through kubectl as a user would.
cargo build -p kubectl-berth --locked
args=()
for t in $tests; do args+=(--test "$t"); done
cargo test -p berth-e2e --locked "${args[@]}" -- --test-threads="$threads"
if [ "$real" != 1 ] && [ -z "${BERTH_E2E_TESTS:-}" ]; then
  # The chart's tests that need a cluster (a second release, installed and uninstalled); the rest of chart.rs
  # renders templates and runs in `make unit`.
  cargo test -p berth-e2e --locked --test chart -- --ignored --test-threads=1
  # Last: they stop and restart the control plane's components, which no other test should live through.
  cargo test -p berth-e2e --locked --test faults -- --test-threads="$threads"
fi
