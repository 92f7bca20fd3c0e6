#!/usr/bin/env bash
# Runs the e2e suite the way `make test` and CI do:
#  - against the cluster in $KUBECONFIG when it is set (berth's chart is installed there unless
#    BERTH_E2E_OPERATOR=external says berth already runs in the cluster, as on kind);
#  - otherwise against the local control plane, started here if it is not running and stopped afterwards.
# The operator runs as a host process authenticated as the chart's ServiceAccount (a TokenRequest token),
# so every missing RBAC rule in the chart fails a test.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"

tests=${BERTH_E2E_TESTS:-cluster api customer database scheduler operator}
threads=${BERTH_E2E_THREADS:-4}
release_ns=berth-system

if [ -z "${KUBECONFIG:-}" ]; then
  if ! "$here/cluster.sh" status >/dev/null 2>&1; then
    "$here/cluster.sh" up
    trap '"$here/cluster.sh" down' EXIT
  fi
  KUBECONFIG=$("$here/cluster.sh" kubeconfig)
  export KUBECONFIG
fi
bin=$("$here/build-components.sh" | tail -n 1)
export PATH="$bin:$PATH"

cargo build -p berth-operator --locked

if [ "${BERTH_E2E_OPERATOR:-}" != external ]; then
  # The chart brings CRDs, ServiceAccount and RBAC. Its Deployment's pods land on kwok nodes and run nothing;
  # the real operator is the host process the tests start, with the chart's identity.
  helm upgrade --install berth charts/berth -n "$release_ns" --create-namespace --wait --timeout 3m >/dev/null
  sa_kubeconfig="$repo/target/e2e-operator.kubeconfig"
  "$here/operator-kubeconfig.sh" "$release_ns" berth "$sa_kubeconfig"
  export BERTH_E2E_OPERATOR_KUBECONFIG="$sa_kubeconfig"
fi

args=()
for t in $tests; do args+=(--test "$t"); done
cargo test -p berth-e2e --locked "${args[@]}" -- --test-threads="$threads"
