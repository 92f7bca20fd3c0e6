#!/usr/bin/env bash
# The real node of the local cluster (BERTH_REAL_NODE=1 e2e/cluster.sh up calls this; it needs root):
# containerd and runc from Debian with their own state directory and socket, kubelet and kube-proxy built from
# the control plane's source, a bridge from Debian's CNI plugins, CoreDNS as a pod, kube-router's firewall
# (NetworkPolicies) and local-path-provisioner for volumes. Images come from e2e/images.sh, never a registry.
#
#   e2e/node.sh address        the node's address (on lo), and blackhole routes for the pod and Service
#                              ranges, so that no packet kube-proxy did not translate follows the default route
#   e2e/node.sh up             start the node and its add-ons, wait until the node and DNS are Ready
#   e2e/node.sh down           stop everything the node started; containers, mounts, links and rules go too
#   e2e/node.sh address-down   remove the address and the routes
#   e2e/node.sh status         which node components run
#   e2e/node.sh leftovers      list what a node left on this machine; exits 1 if anything
#
# The pod network (POD_CIDR) knows only the cluster's ranges: pods have no default route at all.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$here/versions.env"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
log_tag=node

state=${BERTH_CLUSTER_DIR:-$repo/.cluster}
timeout=${BERTH_UP_TIMEOUT:-120}
bin="${BERTH_CACHE:-$HOME/.cache/berth}/k8s-$K8S_VERSION/bin"
api_port=${BERTH_APISERVER_PORT:-16443}
node_ip=${BERTH_NODE_IP:-10.243.0.1}
api_host=$node_ip
node_name=berth-node
bridge=berth-br0
service_cidr=10.0.0.0/16
dns_ip=10.0.0.10
pods_range=10.244.0.0/16
pod_cidr=10.244.250.0/24
pki="$state/pki"
logs="$state/logs"
pids="$state/pids"
kubeconfig="$state/kubeconfig"
dir="$state/node"
sock="$dir/containerd/containerd.sock"
components=(containerd kubelet kube-proxy kube-router local-path-provisioner)

kubectl() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }
ctr() { command ctr -a "$sock" -n k8s.io "$@"; }

need_root() { [ "$(id -u)" = 0 ] || die "the real node needs root (containerd, kubelet, links, nftables)"; }

# ------------------------------------------------------------------------------------------------ network

# The node's address lives on the loopback device (this kernel has no dummy links): local to the machine,
# reachable from pods through the bridge's gateway.
address() {
  need_root
  ip addr show dev lo | grep -q "inet $node_ip/" || ip addr add "$node_ip/32" dev lo label lo:berth
  # A packet for a Service address that kube-proxy did not translate, or for a pod that is not on this node's
  # bridge, is dropped here instead of following the default route out of the machine.
  ip route replace blackhole "$service_cidr"
  ip route replace blackhole "$pods_range"
}

address_down() {
  ip route del blackhole "$service_cidr" 2>/dev/null || true
  ip route del blackhole "$pods_range" 2>/dev/null || true
  ip addr del "$node_ip/32" dev lo 2>/dev/null || true
}

# ------------------------------------------------------------------------------------------------ configuration

# put FILE < CONTENT: writes FILE only when its content changes: kube-proxy exits when its config file is
# touched, and `up` on a running node must not restart anything.
put() {
  local new
  new=$(cat)
  [ -f "$1" ] && [ "$(cat "$1")" = "$new" ] && return 0
  printf '%s\n' "$new" >"$1"
}

configure() {
  mkdir -p "$dir"/{containerd,net.d,cni,kubelet,pod-logs,volumes}
  local client='basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth'
  cert node "/O=system:nodes/CN=system:node:$node_name" "$client"
  cert node-serving "/CN=$node_name" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth
subjectAltName=IP:$node_ip,DNS:$node_name"
  cert kube-proxy "/CN=system:kube-proxy" "$client"
  cert local-path-provisioner "/O=system:masters/CN=local-path-provisioner" "$client"
  cert kube-router "/O=system:masters/CN=kube-router" "$client"
  chmod 600 "$pki"/*.key
  write_kubeconfig "$dir/kubelet.kubeconfig" node
  write_kubeconfig "$dir/kube-proxy.kubeconfig" kube-proxy
  write_kubeconfig "$dir/local-path.kubeconfig" local-path-provisioner
  write_kubeconfig "$dir/kube-router.kubeconfig" kube-router

  local sandbox
  sandbox=$("$here/images.sh" names | grep '/pause:')
  # restrict_oom_score_adj: this machine refuses to lower oom_score_adj, which runc does for every sandbox.
  put "$dir/containerd/config.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/run"
[grpc]
  address = "$sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$sandbox"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  netns_mounts_under_state_dir = true
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "$dir/net.d"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  Root = "$dir/containerd/runc"
EOF

  # Routes only to the cluster's ranges and the node: a pod has no way out of the machine.
  put "$dir/net.d/10-berth.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "berth", "plugins": [
  {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$dir/cni", "ranges": [[{"subnet": "$pod_cidr"}]],
            "routes": [{"dst": "$pods_range"}, {"dst": "$service_cidr"}, {"dst": "$node_ip/32"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}
EOF

  # cgroup v1 with cgroupfs and no swap: what this machine has. resolvConf "": pods see only cluster DNS.
  put "$dir/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://$sock
address: $node_ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $pki/node-serving.crt
tlsPrivateKeyFile: $pki/node-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
clusterDNS: [$dns_ip]
clusterDomain: cluster.local
resolvConf: ""
podCIDR: $pod_cidr
podLogsDir: $dir/pod-logs
evictionHard: {}
imageGCHighThresholdPercent: 100
serializeImagePulls: false
EOF

  put "$dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $dir/kube-proxy.kubeconfig}
hostnameOverride: $node_name
mode: nftables
clusterCIDR: $pods_range
bindAddress: $node_ip
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [$node_ip/32]
# Zeros: leave the machine's conntrack sysctls as they are.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

# ------------------------------------------------------------------------------------------------ commands

node_ready() {
  [ "$(kubectl get node "$node_name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

addons() {
  local coredns
  coredns=$("$here/images.sh" names | grep '/coredns:')
  sed -e "s|@COREDNS_IMAGE@|$coredns|" -e "s|@DNS_IP@|$dns_ip|" "$here/node/addons.yaml" | kubectl apply -f - >/dev/null
  # Volumes: kind's provisioner. Its helper pods make (mode 0777, so any non-root uid can use them) and remove
  # directories under $dir/volumes on the node.
  local busybox
  busybox=$("$here/images.sh" names | grep '/busybox:')
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: local-path-storage}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: local-path-config, namespace: local-path-storage}
data:
  config.json: '{"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["$dir/volumes"]}]}'
  setup: |
    #!/bin/sh
    set -eu
    mkdir -m 0777 -p "\$VOL_DIR"
  teardown: |
    #!/bin/sh
    set -eu
    rm -rf "\$VOL_DIR"
  helperPod.yaml: |
    apiVersion: v1
    kind: Pod
    metadata: {name: helper-pod}
    spec:
      containers:
        - name: helper-pod
          image: $busybox
          imagePullPolicy: Never
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: rancher.io/local-path
reclaimPolicy: Delete
volumeBindingMode: WaitForFirstConsumer
EOF
}

up() {
  need_root
  local t0=$SECONDS
  for tool in ctr runc ip nft iptables ipset; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install containerd runc iproute2 nftables iptables ipset)"
  done
  [ -x /usr/lib/cni/bridge ] || die "CNI plugins are missing (apt-get install containernetworking-plugins)"
  address
  configure
  start containerd - --config "$dir/containerd/config.toml"
  wait_for "containerd socket" containerd ctr version
  "$here/images.sh" import "$sock" >/dev/null

  start kubelet - --kubeconfig="$dir/kubelet.kubeconfig" --config="$dir/kubelet/config.yaml" \
    --hostname-override="$node_name" --node-ip="$node_ip" --node-labels=berth.dev/node=real \
    --root-dir="$dir/kubelet" --cert-dir="$dir/kubelet/pki"
  wait_for "node $node_name Ready" kubelet node_ready
  start kube-proxy - --config="$dir/kube-proxy.yaml"
  # NetworkPolicies: kube-router's firewall alone (iptables and ipsets; kube-network-policies needs the nft
  # `queue` expression, which this kernel lacks). Routing and Services stay with the bridge and kube-proxy.
  start kube-router - --kubeconfig="$dir/kube-router.kubeconfig" --hostname-override="$node_name" \
    --run-firewall=true --run-router=false --run-service-proxy=false --enable-cni=false --health-port=0 \
    --service-cluster-ip-range="$service_cidr"
  addons
  start local-path-provisioner - --debug start --kubeconfig="$dir/local-path.kubeconfig" \
    --namespace=local-path-storage --configmap-name=local-path-config \
    --provisioner-name=rancher.io/local-path --service-account-name=default
  wait_for "CoreDNS ready" kubelet kubectl -n kube-system wait --for=condition=Available deployment/coredns --timeout=2s
  log "real node $node_name ready in $((SECONDS - t0))s (pods $pod_cidr, DNS $dns_ip)"
}

# Delete every pod through the API so that the kubelet tears each one down as usual (CNI DEL, unmounts), with
# the controllers that would re-create them stopped by cluster.sh beforehand.
drain() {
  kubectl get --raw=/readyz >/dev/null 2>&1 || return 0
  kubectl delete pods --all --all-namespaces --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
  local deadline=$((SECONDS + 60))
  while [ -n "$(ctr tasks ls -q 2>/dev/null)" ] && ((SECONDS < deadline)); do sleep 0.5; done
  kubectl delete node "$node_name" --wait=false >/dev/null 2>&1 || true
}

# unkube iptables|ip6tables: the KUBE-* chains and the jumps to them: the kubelet makes some whatever the proxy
# mode (KUBE-FIREWALL, KUBE-KUBELET-CANARY, ...), kube-router its KUBE-ROUTER-* and policy chains.
unkube() {
  local t rule chain
  for t in filter nat mangle; do
    while read -r rule; do
      # As iptables-save quotes them (comments have spaces): the words of the rule, re-read by the shell.
      eval "$1 -t $t -D ${rule#-A }" 2>/dev/null || true
    done < <("$1" -t "$t" -S 2>/dev/null | grep -E '^-A ' | grep -vE '^-A KUBE-' | grep -E -- '-j KUBE-' || true)
    for chain in $("$1" -t "$t" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
      "$1" -t "$t" -F "$chain" 2>/dev/null || true
    done
    for chain in $("$1" -t "$t" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
      "$1" -t "$t" -X "$chain" 2>/dev/null || true
    done
  done
}

down() {
  need_root
  if pid_of containerd >/dev/null && pid_of kubelet >/dev/null; then drain; fi
  stop local-path-provisioner
  stop kube-router
  stop kube-proxy
  stop kubelet
  if pid_of containerd >/dev/null; then
    local id
    for id in $(ctr tasks ls -q 2>/dev/null); do ctr tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    for id in $(ctr tasks ls -q 2>/dev/null); do ctr tasks delete -f "$id" >/dev/null 2>&1 || true; done
    for id in $(ctr containers ls -q 2>/dev/null); do ctr containers delete "$id" >/dev/null 2>&1 || true; done
  fi
  stop containerd
  # What the runtime mounted (kubelet's root directory, pod volumes, rootfs, network namespaces), deepest first.
  local m
  while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(awk -v d="$dir" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r)
  ip link del "$bridge" 2>/dev/null || true
  unkube iptables
  unkube ip6tables
  local set
  for set in $(ipset list -n 2>/dev/null | grep '^KUBE-' || true); do ipset destroy "$set" 2>/dev/null || true; done
  nft delete table ip kube-proxy 2>/dev/null || true
  nft delete table ip6 kube-proxy 2>/dev/null || true
  # The kubelet's cgroups (cgroupfs driver), in every hierarchy, leaves first.
  find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d -name kubepods -print0 2>/dev/null |
    while IFS= read -r -d '' k; do find "$k" -depth -type d -exec rmdir {} + 2>/dev/null || true; done
  find /var/log/containers -maxdepth 1 -lname "$dir/*" -delete 2>/dev/null || true
  log "real node stopped"
}

status() {
  local c pid all=1
  for c in "${components[@]}"; do
    if pid=$(pid_of "$c"); then
      printf '%-24s running (pid %s)\n' "$c" "$pid"
    else
      printf '%-24s stopped\n' "$c"
      all=0
    fi
  done
  [ "$all" = 1 ]
}

# leftovers: what a stopped node must not leave behind. Prints one line per finding.
leftovers() {
  local found=0 line
  report() {
    printf 'leftover %s\n' "$*"
    found=1
  }
  while read -r line; do report "process: $line"; done < <(pgrep -af "containerd-shim|$bin/(kubelet|kube-proxy|kube-router|local-path-provisioner)" | grep -v pgrep || true)
  while read -r line; do report "mount: $line"; done < <(awk -v d="$dir" 'index($2, d) == 1 {print $2}' /proc/mounts)
  ip link show "$bridge" >/dev/null 2>&1 && report "link: $bridge"
  ip addr show dev lo | grep -q "inet $node_ip/" && report "address: $node_ip on lo"
  while read -r line; do report "link: $line"; done < <(ip -o link show type veth 2>/dev/null | awk -F': ' '/master '"$bridge"'/ {print $2}')
  while read -r line; do report "route: $line"; done < <(ip route show type blackhole 2>/dev/null | grep -E "^blackhole ($service_cidr|$pods_range)" || true)
  while read -r line; do report "nft table: $line"; done < <(nft list tables 2>/dev/null | grep -E 'kube-proxy' || true)
  while read -r line; do report "ipset: $line"; done < <(ipset list -n 2>/dev/null | grep '^KUBE-' || true)
  while read -r line; do report "iptables chain: $line"; done < <({ iptables-save; ip6tables-save; } 2>/dev/null | grep -E '^:(KUBE-|CNI-)' || true)
  while read -r line; do report "cgroup: $line"; done < <(find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d -name kubepods 2>/dev/null)
  [ "$found" = 0 ] && log "nothing left behind"
  [ "$found" = 0 ]
}

case "${1:-}" in
  address) address ;;
  address-down) address_down ;;
  up) up ;;
  down) down ;;
  status) status ;;
  leftovers) leftovers ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
