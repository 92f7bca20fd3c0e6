#!/usr/bin/env bash
# `make demo`: start the local control plane, install berth's chart, run the operator (as the chart's
# ServiceAccount), apply the seed Customer and show what berth made of it. Everything keeps running
# afterwards so you can look around; `make cluster-down` stops it all.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Local Kubernetes control plane (built from source on first run; that takes a while)"
"$here/cluster.sh" up
KUBECONFIG=$("$here/cluster.sh" kubeconfig)
export KUBECONFIG
PATH="$("$here/build-components.sh" | tail -n 1):$PATH"

say "Building berth"
cargo build -p berth-operator --locked

say "helm install berth charts/berth"
helm upgrade --install berth charts/berth -n berth-system --create-namespace --wait --timeout 3m
state=$(dirname "$KUBECONFIG")
"$here/operator-kubeconfig.sh" berth-system berth "$state/berth-operator.kubeconfig"

say "Running the operator (log: $state/berth.log)"
if [ -f "$state/berth.pid" ] && kill -0 "$(<"$state/berth.pid")" 2>/dev/null; then
  kill -TERM "$(<"$state/berth.pid")"
  sleep 2
fi
KUBECONFIG="$state/berth-operator.kubeconfig" nohup target/debug/berth \
  --http-addr 127.0.0.1:18080 --lease-namespace berth-system >"$state/berth.log" 2>&1 &
echo $! >"$state/berth.pid"

say "kubectl apply -f examples/customer.yaml"
cat examples/customer.yaml
kubectl apply -f examples/customer.yaml
kubectl wait --for=condition=Ready customer/big-client-0815 --timeout=5m

say "kubectl get customers"
kubectl get customers -o wide
say "kubectl get berth -A"
kubectl get berth -A
say "What the tenant namespace holds"
kubectl -n big-client-0815 get statefulsets,deployments,services,poddisruptionbudgets,pvc,secrets,configmaps,resourcequotas,limitranges,networkpolicies,rolebindings
say "kubectl describe customer big-client-0815"
kubectl describe customer big-client-0815

cat <<EOF

berth is running (pid $(<"$state/berth.pid"), metrics on http://127.0.0.1:18080/metrics).
  export KUBECONFIG=$KUBECONFIG
  kubectl get customers
  make cluster-down      # stop the operator and the cluster
EOF
