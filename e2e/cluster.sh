#!/usr/bin/env bash
# A local Kubernetes control plane for berth's e2e tests, made of upstream components started as plain processes:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (which plays the kubelets of fake nodes
# and a fake volume provisioner). No Docker, no root, no real containers. See e2e/README.md.
#
#   e2e/cluster.sh up           build what is missing, start everything, wait until usable (running twice is harmless)
#   e2e/cluster.sh down         stop what `up` started and delete the state directory
#   e2e/cluster.sh status       which components run
#   e2e/cluster.sh kubeconfig   print the admin kubeconfig path
#   e2e/cluster.sh bin          print the directory of the built binaries (kubectl, helm, ...)
#
# Environment:
#   BERTH_CLUSTER_DIR     state directory (default: <repo>/.cluster)
#   BERTH_APISERVER_PORT  kube-apiserver secure port on 127.0.0.1 (default 16443)
#   BERTH_ETCD_PORT, BERTH_ETCD_PEER_PORT, BERTH_KCM_PORT, BERTH_SCHEDULER_PORT
#                         the other loopback ports (defaults 23790, 23800, 16257, 16259); all of them must differ
#                         to run a second cluster next to the first one (with another BERTH_CLUSTER_DIR)
#   BERTH_NODES           number of fake nodes kwok-node-0..N-1 (default 3)
#   BERTH_UP_TIMEOUT      seconds each readiness wait may take (default 120)
#   BERTH_CACHE           build cache of e2e/build-components.sh (default ~/.cache/berth)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$here/versions.env"

state=${BERTH_CLUSTER_DIR:-$repo/.cluster}
api_port=${BERTH_APISERVER_PORT:-16443}
nodes=${BERTH_NODES:-3}
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
components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

log() { printf '[cluster] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

kubectl() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

# ------------------------------------------------------------------------------------------------ processes

# alive PID: the process exists and is not a zombie (the components outlive `up`, so their parent is init,
# which may take a while to reap them).
alive() {
  local stat
  stat=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  case "$stat" in *Z*) return 1 ;; esac
}

# pid_of NAME: prints the PID of the running component NAME, or fails. A PID file alone is not trusted: the PID
# must be alive and still run our binary (PIDs are reused).
pid_of() {
  local name=$1 pid args
  [ -f "$pids/$name.pid" ] || return 1
  pid=$(<"$pids/$name.pid")
  [ -n "$pid" ] && alive "$pid" || return 1
  args=$(ps -p "$pid" -o args= 2>/dev/null) || return 1
  case "$args" in
    "$bin/$name" | "$bin/$name "*) echo "$pid" ;;
    *) return 1 ;;
  esac
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start NAME PORT ARGS...: start the component in the background unless it already runs. PORT (- for none) must
# be free before starting.
start() {
  local name=$1 port=$2 pid
  shift 2
  if pid=$(pid_of "$name"); then
    log "$name already running (pid $pid), reusing it"
    return 0
  fi
  if [ "$port" != - ] && port_busy "$port"; then
    die "$name: port 127.0.0.1:$port is taken by another process (not started by this script; see ss -ltnp)"
  fi
  printf '\n===== %s starting %s\n' "$(date -u +%FT%TZ)" "$name" >>"$logs/$name.log"
  nohup "$bin/$name" "$@" >>"$logs/$name.log" 2>&1 &
  echo $! >"$pids/$name.pid"
  log "$name started (pid $!, log $logs/$name.log)"
}

# stop NAME: TERM, then KILL after 10 s.
stop() {
  local name=$1 pid i
  if ! pid=$(pid_of "$name"); then
    rm -f "$pids/$name.pid"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    alive "$pid" || break
    sleep 0.2
  done
  if alive "$pid"; then
    log "$name (pid $pid) ignored SIGTERM, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pids/$name.pid"
  log "$name stopped"
}

# wait_for WHAT COMPONENT CMD...: run CMD until it succeeds, for at most $timeout seconds. Fails early if
# COMPONENT (whose log is shown on failure) dies.
wait_for() {
  local what=$1 component=$2 deadline
  shift 2
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ! pid_of "$component" >/dev/null; then
      log "$component is not running while waiting for: $what"
      fail_logs "$component"
    fi
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout}s waiting for: $what"
      fail_logs "$component"
    fi
    sleep 0.5
  done
}

fail_logs() {
  local c
  for c in "$@"; do
    printf '\n----- last 30 lines of %s\n' "$logs/$c.log" >&2
    tail -n 30 "$logs/$c.log" >&2 2>/dev/null || true
  done
  die "cluster is not usable; logs in $logs, stop it with: $0 down"
}

# ------------------------------------------------------------------------------------------------ certificates

b64() { base64 <"$1" | tr -d '\n'; }

# ECDSA P-256 everywhere: generating RSA keys costs seconds on a busy machine, EC keys milliseconds.
newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# cert NAME SUBJECT EXTENSIONS [CA]: a key and a certificate signed by CA (default: ca), kept if they exist.
cert() {
  local name=$1 subject=$2 ext=$3 ca=${4:-ca}
  [ -s "$pki/$name.crt" ] && return 0
  printf '%b\n' "$ext" >"$pki/$name.ext"
  newkey "$pki/$name.key"
  openssl req -new -key "$pki/$name.key" -subj "$subject" -out "$pki/$name.csr" 2>/dev/null
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" -CAcreateserial -days 3650 \
    -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}

certificates() {
  local client='basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth'
  if [ ! -s "$pki/ca.crt" ]; then
    log "generating certificates in $pki"
    newkey "$pki/ca.key"
    openssl req -x509 -new -key "$pki/ca.key" -days 3650 -sha256 -subj "/CN=berth-local-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$pki/ca.crt" 2>/dev/null
  fi
  cert kube-apiserver "/CN=kube-apiserver" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,\
DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert admin "/O=system:masters/CN=berth-admin" "$client"
  cert kube-controller-manager "/CN=system:kube-controller-manager" "$client"
  cert kube-scheduler "/CN=system:kube-scheduler" "$client"
  cert kwok "/O=system:masters/CN=kwok-controller" "$client"
  # The front proxy (request-header authentication) has its own CA: a certificate from the cluster CA must not
  # be able to assert arbitrary X-Remote-User headers.
  if [ ! -s "$pki/front-proxy-ca.crt" ]; then
    newkey "$pki/front-proxy-ca.key"
    openssl req -x509 -new -key "$pki/front-proxy-ca.key" -days 3650 -sha256 -subj "/CN=berth-local-front-proxy-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$pki/front-proxy-ca.crt" 2>/dev/null
  fi
  cert front-proxy-client "/CN=front-proxy-client" "$client" front-proxy-ca
  if [ ! -s "$pki/service-account.key" ]; then
    newkey "$pki/service-account.key"
    openssl pkey -in "$pki/service-account.key" -pubout -out "$pki/service-account.pub" 2>/dev/null
  fi
  chmod 600 "$pki"/*.key
}

# write_kubeconfig FILE CERT: a kubeconfig for 127.0.0.1:$api_port with the client certificate CERT.
write_kubeconfig() {
  local file=$1 user=$2
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: berth-local
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(b64 "$pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(b64 "$pki/$user.crt")
    client-key-data: $(b64 "$pki/$user.key")
contexts:
- name: berth-local
  context:
    cluster: berth-local
    user: $user
current-context: berth-local
EOF
  chmod 600 "$file"
}

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
  mkdir -p "$pki" "$logs" "$pids"
  touch "$state/.berth-cluster"
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

  start kube-apiserver "$api_port" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --secure-port="$api_port" \
    --advertise-address=127.0.0.1 --endpoint-reconciler-type=none \
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
    --allow-privileged=true
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

  # kwok serves nothing (no --node-port / --server-address): kubectl logs/exec cannot work without containers.
  start kwok - \
    --kubeconfig="$state/kwok.kubeconfig" --config="$here/kwok/stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds=40 --cidr="$pod_cidr"

  kubectl apply -f "$here/kwok/storageclass.yaml" >/dev/null
  node_manifests | kubectl apply -f - >/dev/null

  wait_for "kube-controller-manager /healthz" kube-controller-manager \
    curl -fsSk "https://127.0.0.1:$kcm_port/healthz"
  wait_for "kube-scheduler /readyz" kube-scheduler curl -fsSk "https://127.0.0.1:$scheduler_port/readyz"
  wait_for "$nodes kwok nodes Ready and untainted" kwok nodes_ready
  wait_for "ServiceAccount default/default (serviceaccount controller)" kube-controller-manager \
    kubectl -n default get serviceaccount default

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
  for ((i = ${#components[@]} - 1; i >= 0; i--)); do
    stop "${components[i]}"
  done
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
  [ "$all" = 1 ] && [ "$any" = 1 ]
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  kubeconfig) echo "$kubeconfig" ;;
  bin) echo "$bin" ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
