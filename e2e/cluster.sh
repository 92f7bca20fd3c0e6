#!/usr/bin/env bash
# A local Kubernetes control plane for berth's e2e tests, made of upstream components started as plain processes:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (which plays the kubelets of fake nodes
# and a fake volume provisioner). No Docker, no root, no real containers. With BERTH_REAL_NODE=1 the fake nodes
# make way for one real node (e2e/node.sh: containerd, kubelet, kube-proxy, CNI, DNS, NetworkPolicies; needs
# root). See e2e/README.md.
#
#   e2e/cluster.sh up           build what is missing, start everything, wait until usable (running twice is harmless)
#   e2e/cluster.sh down         stop what `up` started and delete the state directory
#   e2e/cluster.sh status       which components run
#   e2e/cluster.sh kubeconfig   print the admin kubeconfig path
#   e2e/cluster.sh bin          print the directory of the built binaries (kubectl, helm, ...)
#   e2e/cluster.sh stop NAME    stop one component (etcd, kube-apiserver, ...), for fault-injection tests
#   e2e/cluster.sh start NAME   start it again as \`up\` did and wait until it answers
#   e2e/cluster.sh compact      compact etcd's history up to now (watches resuming from before answer 410 Gone)
#   e2e/cluster.sh audit        print the path of the API server's audit log (writes only; see audit-policy.yaml)
#
# Environment:
#   BERTH_CLUSTER_DIR     state directory (default: <repo>/.cluster)
#   BERTH_APISERVER_PORT  kube-apiserver secure port on 127.0.0.1 (default 16443)
#   BERTH_ETCD_PORT, BERTH_ETCD_PEER_PORT, BERTH_KCM_PORT, BERTH_SCHEDULER_PORT
#                         the other loopback ports (defaults 23790, 23800, 16257, 16259); all of them must differ
#                         to run a second cluster next to the first one (with another BERTH_CLUSTER_DIR)
#   BERTH_NODES           number of fake nodes kwok-node-0..N-1 (default 3; 0 with BERTH_REAL_NODE=1)
#   BERTH_REAL_NODE       1: a real node instead of fake ones; the API server then listens on the node's
#                         address (BERTH_NODE_IP, default 10.243.0.1) so that pods reach it
#   BERTH_UP_TIMEOUT      seconds each readiness wait may take (default 120)
#   BERTH_CACHE           build cache of e2e/build-components.sh (default ~/.cache/berth)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$here/versions.env"

state=${BERTH_CLUSTER_DIR:-$repo/.cluster}
api_port=${BERTH_APISERVER_PORT:-16443}
real=${BERTH_REAL_NODE:-0}
# Without BERTH_REAL_NODE, a cluster that exists keeps the mode it was started in.
if [ -z "${BERTH_REAL_NODE:-}" ] && grep -qx 'real=1' "$state/.berth-cluster" 2>/dev/null; then real=1; fi
node_ip=${BERTH_NODE_IP:-10.243.0.1}
if [ "$real" = 1 ]; then
  nodes=${BERTH_NODES:-0}
  api_host=$node_ip
else
  nodes=${BERTH_NODES:-3}
  api_host=127.0.0.1
fi
timeout=${BERTH_UP_TIMEOUT:-120}
bin="${BERTH_CACHE:-$HOME/.cache/berth}/k8s-$K8S_VERSION/bin"
# Non-default ports, so that a developer's own etcd or cluster on the usual ports does not collide.
etcd_port=${BERTH_ETCD_PORT:-23790}
etcd_peer_port=${BERTH_ETCD_PEER_PORT:-23800}
kcm_port=${BERTH_KCM_PORT:-16257}
scheduler_port=${BERTH_SCHEDULER_PORT:-16259}
service_cidr=10.0.0.0/16
pod_cidr=10.244.0.0/16

pki="$state/pki"
logs="$state/logs"
pids="$state/pids"
kubeconfig="$state/kubeconfig"
# Start order; `down` stops in reverse.
components=(etcd kube-apiserver kube-controller-manager kube-scheduler)
[ "$real" = 1 ] || components+=(kwok)
log_tag=cluster

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

kubectl() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

# ------------------------------------------------------------------------------------------------ bootstrap

node_manifests() {
  local i
  for ((i = 0; i < nodes; i++)); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    node-role.kubernetes.io/agent: ""
spec:
  podCIDR: 10.244.$i.0/24
  podCIDRs: [10.244.$i.0/24]
status:
  addresses:
  - {type: InternalIP, address: 10.240.0.$((i + 1))}
  capacity: {cpu: "32", memory: 256Gi, pods: "110", ephemeral-storage: 1Ti}
  allocatable: {cpu: "32", memory: 256Gi, pods: "110", ephemeral-storage: 1Ti}
EOF
  done
}

nodes_ready() {
  local ready taints
  ready=$(kubectl get nodes -l type=kwok \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$')
  taints=$(kubectl get nodes -l type=kwok -o jsonpath='{.items[*].spec.taints}')
  [ "$ready" -ge "$nodes" ] && [ -z "$taints" ]
}

# ------------------------------------------------------------------------------------------------ commands

up() {
  local t0=$SECONDS built
  built=$("$here/build-components.sh" | tail -n 1)
  [ "$built" = "$bin" ] || die "build-components.sh printed $built, expected $bin"
  if [ -f "$state/.berth-cluster" ] && [ "$(cat "$state/.berth-cluster")" != "real=$real" ]; then
    die "$state holds a cluster with $(cat "$state/.berth-cluster") (this call asks for real=$real); run $0 down first"
  fi
  mkdir -p "$pki" "$logs" "$pids"
  echo "real=$real" >"$state/.berth-cluster"
  # The node's address must exist before the API server binds to it.
  [ "$real" = 1 ] && "$here/node.sh" address
  certificates
  write_kubeconfig "$kubeconfig" admin
  local c
  for c in kube-controller-manager kube-scheduler kwok; do
    write_kubeconfig "$state/$c.kubeconfig" "$c"
  done

  # etcd: loopback only, plain HTTP (nothing else can reach it). --unsafe-no-fsync: this is throwaway test data
  # and fsync dominates apiserver write latency on slow disks.
  start etcd "$etcd_port" \
    --name=berth --data-dir="$state/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster="berth=http://127.0.0.1:$etcd_peer_port" --initial-cluster-state=new \
    --unsafe-no-fsync --log-level=warn
  wait_for "etcd /health" etcd curl -fsS "http://127.0.0.1:$etcd_port/health"

  local apiserver_node_args=(--advertise-address=127.0.0.1 --endpoint-reconciler-type=none)
  if [ "$real" = 1 ]; then
    # Pods reach the API server through the kubernetes Service, whose endpoint is the advertised address; the
    # API server reaches the kubelet (logs, exec) with a client certificate and checks the kubelet's.
    apiserver_node_args=(--advertise-address="$api_host" --endpoint-reconciler-type=lease
      --kubelet-client-certificate="$pki/kubelet-client.crt" --kubelet-client-key="$pki/kubelet-client.key"
      --kubelet-certificate-authority="$pki/ca.crt" --kubelet-preferred-address-types=InternalIP)
  fi
  start kube-apiserver "$api_port" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address="$api_host" --secure-port="$api_port" "${apiserver_node_args[@]}" \
    --tls-cert-file="$pki/kube-apiserver.crt" --tls-private-key-file="$pki/kube-apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --requestheader-client-ca-file="$pki/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$pki/front-proxy-client.crt" --proxy-client-key-file="$pki/front-proxy-client.key" \
    --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/service-account.pub" \
    --service-account-signing-key-file="$pki/service-account.key" \
    --service-cluster-ip-range="$service_cidr" \
    --allow-privileged=true \
    --audit-policy-file="$here/audit-policy.yaml" --audit-log-path="$logs/audit.log" \
    --audit-log-maxsize=200 --audit-log-maxbackup=1
  wait_for "kube-apiserver /readyz" kube-apiserver kubectl get --raw=/readyz

  start kube-controller-manager "$kcm_port" \
    --kubeconfig="$state/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$state/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$state/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$kcm_port" \
    --controllers='*' --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$pki/service-account.key" --root-ca-file="$pki/ca.crt" \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --cluster-name=berth-local --service-cluster-ip-range="$service_cidr" \
    --kube-api-qps=100 --kube-api-burst=200

  start kube-scheduler "$scheduler_port" \
    --kubeconfig="$state/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$state/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$state/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$scheduler_port" --leader-elect=false

  if [ "$real" != 1 ]; then
    # kwok serves nothing (no --node-port / --server-address): kubectl logs/exec cannot work without containers.
    start kwok - \
      --kubeconfig="$state/kwok.kubeconfig" --config="$here/kwok/stages.yaml" \
      --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
      --node-lease-duration-seconds=40 --cidr="$pod_cidr"
    kubectl apply -f "$here/kwok/storageclass.yaml" >/dev/null
    node_manifests | kubectl apply -f - >/dev/null
  fi

  wait_for "kube-controller-manager /healthz" kube-controller-manager \
    curl -fsSk "https://127.0.0.1:$kcm_port/healthz"
  wait_for "kube-scheduler /readyz" kube-scheduler curl -fsSk "https://127.0.0.1:$scheduler_port/readyz"
  [ "$real" = 1 ] || wait_for "$nodes kwok nodes Ready and untainted" kwok nodes_ready
  wait_for "ServiceAccount default/default (serviceaccount controller)" kube-controller-manager \
    kubectl -n default get serviceaccount default
  [ "$real" = 1 ] && "$here/node.sh" up

  log "cluster ready in $((SECONDS - t0))s"
  kubectl version
  kubectl get nodes -o wide
  echo
  echo "export KUBECONFIG=$kubeconfig"
}

down() {
  if [ ! -d "$state" ]; then
    log "no cluster state in $state"
    return 0
  fi
  [ -f "$state/.berth-cluster" ] || die "$state was not created by this script; not touching it"
  local i
  # The node first, while the API server still answers, so its pods are torn down as usual; with the
  # controllers stopped, nothing re-creates them.
  if [ -d "$state/node" ]; then
    stop kube-controller-manager
    stop kube-scheduler
    "$here/node.sh" down
  fi
  for ((i = ${#components[@]} - 1; i >= 0; i--)); do
    stop "${components[i]}"
  done
  [ -d "$state/node" ] && "$here/node.sh" address-down
  rm -rf "$state"
  log "removed $state"
}

# status: what runs; exits 0 only when every component runs and the API server is ready.
status() {
  local c pid any=0 all=1 ready
  for c in "${components[@]}"; do
    if pid=$(pid_of "$c"); then
      printf '%-24s running (pid %s)\n' "$c" "$pid"
      any=1
    else
      printf '%-24s stopped\n' "$c"
      all=0
    fi
  done
  if [ "$any" = 1 ] && [ -f "$kubeconfig" ]; then
    ready=$(kubectl get --raw=/readyz 2>&1) || all=0
    printf '%-24s %s\n' "readyz" "$ready"
    printf '%-24s %s\n' "kubeconfig" "$kubeconfig"
  fi
  if [ "$real" = 1 ]; then "$here/node.sh" status || all=0; fi
  [ "$all" = 1 ] && [ "$any" = 1 ]
}

# compact: compact etcd's history up to now, so that every watch resuming from an older resourceVersion is
# answered 410 Gone and must list again. Through etcd's JSON gateway, so that no etcdctl is needed.
compact() {
  local url="http://127.0.0.1:$etcd_port/v3/kv" rev
  rev=$(curl -fsS -X POST "$url/range" -d '{"key":"AA==","limit":1}' | sed -n 's/.*"revision":"\([0-9]*\)".*/\1/p')
  [ -n "$rev" ] || die "could not read etcd's revision"
  curl -fsS -X POST "$url/compaction" -d "{\"revision\":\"$rev\",\"physical\":true}" >/dev/null
  log "etcd compacted at revision $rev"
}

# start_component NAME: start one component again and wait until it answers.
start_component() {
  local name=$1
  start_again "$name"
  case "$name" in
    etcd) wait_for "etcd /health" etcd curl -fsS "http://127.0.0.1:$etcd_port/health" ;;
    kube-apiserver) wait_for "kube-apiserver /readyz" kube-apiserver kubectl get --raw=/readyz ;;
  esac
}

case "${1:-}" in
  up) up ;;
  stop) stop "${2:?which component}" ;;
  start) start_component "${2:?which component}" ;;
  audit) echo "$logs/audit.log" ;;
  compact) compact ;;
  down) down ;;
  status) status ;;
  kubeconfig) echo "$kubeconfig" ;;
  bin) echo "$bin" ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
