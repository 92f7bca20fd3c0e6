#!/usr/bin/env bash
# `make demo`: start the local cluster with a real node, build berth's images, install the chart (berth runs as
# pods), apply the seed Customer and show what berth made of it, down to a workflow's own log output and a query
# answered through the tenant's pool. Everything keeps running afterwards so you can look around;
# `make cluster-down` stops it all.
#
# The real node needs root. Without root (or with BERTH_REAL_NODE=0) the demo runs on kwok's simulated nodes:
# berth then runs as a host process with the chart's ServiceAccount, and no container executes.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

real=${BERTH_REAL_NODE:-$([ "$(id -u)" = 0 ] && echo 1 || echo 0)}
export BERTH_REAL_NODE=$real

# kubectl finds its `berth` plugin on PATH.
cargo build -p kubectl-berth --locked
# Where cargo puts the binaries (CARGO_TARGET_DIR, relative to here, or target).
bin=$(realpath -m "${CARGO_TARGET_DIR:-target}")
export PATH="$bin/debug:$PATH"

if [ "$real" = 1 ]; then
  say "Building berth (release) and the images of the real node (no registry: built here, imported)"
  cargo build --release -p berth-operator --locked
  "$here/images.sh" build >/dev/null
else
  say "Building berth"
  cargo build -p berth-operator --locked
fi

say "Local Kubernetes cluster (components built from source on first run; that takes a while)"
"$here/cluster.sh" up
KUBECONFIG=$("$here/cluster.sh" kubeconfig)
export KUBECONFIG
PATH="$("$here/build-components.sh" | tail -n 1):$PATH"
state=$(dirname "$KUBECONFIG")

if [ "$real" = 1 ]; then
  say "helm install berth charts/berth (with the locally built images)"
  "$here/install.sh" real --set logFormat=text
  kubectl -n berth-system get pods -o wide
else
  say "helm install berth charts/berth"
  "$here/install.sh"
  "$here/operator-kubeconfig.sh" berth-system berth "$state/berth-operator.kubeconfig"
  say "Running the operator as a host process (log: $state/berth.log)"
  if [ -f "$state/berth.pid" ] && kill -0 "$(<"$state/berth.pid")" 2>/dev/null; then
    kill -TERM "$(<"$state/berth.pid")"
    sleep 2
  fi
  KUBECONFIG="$state/berth-operator.kubeconfig" nohup "$bin/debug/berth" \
    --http-addr 127.0.0.1:18080 --lease-namespace berth-system >"$state/berth.log" 2>&1 &
  echo $! >"$state/berth.pid"
fi

say "kubectl apply -f examples/customer.yaml"
cat examples/customer.yaml
kubectl apply -f examples/customer.yaml
kubectl wait --for=condition=Ready customer/big-client-0815 --timeout=5m

say "kubectl get customers"
kubectl get customers -o wide
say "kubectl get berth -A"
kubectl get berth -A
say "kubectl berth tree big-client-0815: the tenant, from the Customer down, with health and age"
kubectl berth tree big-client-0815
say "kubectl berth status big-client-0815"
kubectl berth status big-client-0815
say "kubectl describe customer big-client-0815"
kubectl describe customer big-client-0815

if [ "$real" = 1 ]; then
  say "The tenant's pods, running on the real node"
  kubectl -n big-client-0815 get pods -o wide

  say "A workflow: kubectl patch customer big-client-0815 (runs every minute, at most 4 at once)"
  busybox=$("$here/images.sh" names | grep '/busybox:')
  kubectl patch customer big-client-0815 --type merge -p "{\"spec\":{\"features\":{\"scheduler\":{\"workflows\":[
    {\"name\":\"hello\",\"schedule\":\"* * * * *\",\"image\":\"$busybox\",
     \"command\":[\"sh\",\"-c\",\"echo hello from \$(hostname), uid \$(id -u), at \$(date -u +%TZ)\"]}]}}}}"
  echo "waiting for the next minute's run..."
  deadline=$((SECONDS + 90))
  until kubectl -n big-client-0815 get jobs -l berth.dev/workflow=hello -o name | grep -q .; do
    ((SECONDS < deadline)) || { echo "no run of workflow hello after 90 s" >&2; exit 1; }
    sleep 1
  done
  job=$(kubectl -n big-client-0815 get jobs -l berth.dev/workflow=hello -o name | head -n 1)
  kubectl -n big-client-0815 wait --for=condition=Complete "$job" --timeout=2m
  say "kubectl -n big-client-0815 logs $job"
  kubectl -n big-client-0815 logs "$job"

  say "kubectl berth psql big-client-0815: a query through the tenant's pool, from a pod of the tenant's"
  kubectl berth psql big-client-0815 -- -c "select current_user, version()"
fi

cat <<EOF

berth is running$([ "$real" = 1 ] && echo " as pods in berth-system" || echo " (pid $(<"$state/berth.pid"), metrics on http://127.0.0.1:18080/metrics)").
  export KUBECONFIG=$KUBECONFIG PATH=$bin/debug:\$PATH
  kubectl get customers
  kubectl berth tree big-client-0815
  make cluster-down      # stop everything
EOF
