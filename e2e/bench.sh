#!/usr/bin/env bash
# Scale benchmark (issue #9, `make bench`): berth against the API server's own floor and against kro.
#
#   e2e/bench.sh              N=200 tenants (a quick run, a few minutes)
#   N=1000 e2e/bench.sh       the full run (30+ minutes on 2 cores: the local control plane's StatefulSet
#                             controller, at kube-controller-manager's default 20 requests/s, bounds both
#                             phases; the bench adds a ServiceCIDR since the local /24 holds ~250 Services)
#
# Phase 1 (floor): a tight client creates, per tenant, exactly the objects berth would create (berth's own
# builders) with berth's concurrency, and waits for the same readiness. Phase 2 (berth): the release operator
# runs as a process, N Customers are created and each is awaited until Ready, then 60 s of steady state are
# watched, then the operator is restarted and measured until it has re-verified every tenant. Phase 3 (kro):
# kro's controller (built once by e2e/build-kro.sh, version in versions.env) converges the same tenants from one
# ResourceGraphDefinition derived from berth's builders. Results: a table on stdout, target/bench/result.json, target/bench/ready.png (Ready tenants over
# time), the operator's log in target/bench/operator.log. Targets are reported, not asserted.
#
# Against the cluster in $KUBECONFIG when set (it needs room for 3 pods per tenant). Otherwise against the local
# control plane (e2e/cluster.sh), started here with enough fake nodes and stopped afterwards if it was not
# running before. Every BERTH_* variable of cluster.sh is honoured, so a second cluster can be used, e.g.
#   BERTH_CLUSTER_DIR=/tmp/berth-bench BERTH_APISERVER_PORT=46443 BERTH_ETCD_PORT=53790 \
#   BERTH_ETCD_PEER_PORT=53800 BERTH_KCM_PORT=46257 BERTH_SCHEDULER_PORT=46259 e2e/bench.sh
#
# Other knobs (see e2e/src/bin/bench.rs): BENCH_CONCURRENCY (8), BENCH_FLOOR_VERB (create|apply),
# BENCH_SETTLE_SECONDS (60), BENCH_TIMEOUT_SECONDS, BENCH_OPERATOR_LOG (RUST_LOG of berth), BENCH_RESTART (1),
# BENCH_KRO (1; 0 skips building and running kro).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"

export N=${N:-200}
log() { printf '[bench] %s\n' "$*" >&2; }

# Build first: a compile error should not cost a cluster start.
cargo build --release --locked -p berth-operator -p berth-e2e --bin berth --bin bench
if [ "${BENCH_KRO:-1}" != 0 ]; then
  BENCH_KRO_DIR=$("$here/build-kro.sh")
  # shellcheck source=versions.env
  KRO_VERSION=$(source "$here/versions.env" && echo "$KRO_VERSION")
  export BENCH_KRO_DIR KRO_VERSION
fi

if [ -z "${KUBECONFIG:-}" ]; then
  export BERTH_CLUSTER_DIR=${BERTH_CLUSTER_DIR:-$repo/.cluster}
  # 3 pods per tenant, 110 per fake node, plus headroom for the system's own pods.
  export BERTH_NODES=${BERTH_NODES:-$(((3 * N + 109) / 110 + 2))}
  # (Not `status | grep -q`: grep exits at the first match and pipefail would see cluster.sh's SIGPIPE.)
  status=$("$here/cluster.sh" status 2>/dev/null || true)
  if ! grep -q '^kube-apiserver .*running' <<<"$status"; then
    log "starting the local control plane in $BERTH_CLUSTER_DIR with $BERTH_NODES fake nodes"
    trap '"$here/cluster.sh" down' EXIT
    # Tenants are torn down with the cluster; no need to wait for their deletion.
    export BENCH_SKIP_FINAL_CLEANUP=${BENCH_SKIP_FINAL_CLEANUP:-1}
  else
    log "reusing the running control plane in $BERTH_CLUSTER_DIR (ensuring $BERTH_NODES fake nodes)"
  fi
  # Idempotent: on a running cluster it only adds missing nodes.
  "$here/cluster.sh" up >/dev/null
  KUBECONFIG=$("$here/cluster.sh" kubeconfig)
  export KUBECONFIG
fi

# A separate CARGO_TARGET_DIR (a second worktree) holds the binaries just built.
target=${CARGO_TARGET_DIR:-$repo/target}
export BERTH_BIN="${BERTH_BIN:-$target/release/berth}"
"$target/release/bench"
