# Shared by e2e/cluster.sh and e2e/node.sh: logging, components as background processes with PID files, and
# certificates from the local CA. The caller sets: state, bin, logs, pids, pki, timeout, api_host, api_port.
# shellcheck shell=bash disable=SC2154

log() { printf '[%s] %s\n' "${log_tag:-cluster}" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# ------------------------------------------------------------------------------------------------ processes

# alive PID: the process exists and is not a zombie (the components outlive `up`, so their parent is init,
# which may take a while to reap them).
alive() {
  local stat
  stat=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  case "$stat" in *Z*) return 1 ;; esac
}

# exe_of NAME: the component's executable: one the project built, or a Debian package's.
exe_of() {
  case "$1" in
    containerd) echo /usr/bin/containerd ;;
    *) echo "$bin/$1" ;;
  esac
}

# pid_of NAME: prints the PID of the running component NAME, or fails. A PID file alone is not trusted: the PID
# must be alive and still run our binary (PIDs are reused).
pid_of() {
  local name=$1 pid args exe
  exe=$(exe_of "$name")
  [ -f "$pids/$name.pid" ] || return 1
  pid=$(<"$pids/$name.pid")
  [ -n "$pid" ] && alive "$pid" || return 1
  args=$(ps -p "$pid" -o args= 2>/dev/null) || return 1
  case "$args" in
    "$exe" | "$exe "*) echo "$pid" ;;
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
  # Kept so that `restart_component` can start it again the same way (a fault-injection test stops it).
  printf '%s\0' "$port" "$@" >"$pids/$name.args"
  printf '\n===== %s starting %s\n' "$(date -u +%FT%TZ)" "$name" >>"$logs/$name.log"
  nohup "$(exe_of "$name")" "$@" >>"$logs/$name.log" 2>&1 &
  echo $! >"$pids/$name.pid"
  log "$name started (pid $!, log $logs/$name.log)"
}

# start_again NAME: start a stopped component with the arguments of its last start.
start_again() {
  local name=$1 args=()
  [ -f "$pids/$name.args" ] || die "$name was never started here"
  mapfile -d '' args <"$pids/$name.args"
  start "$name" "${args[@]}"
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
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,IP:$node_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,\
DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert admin "/O=system:masters/CN=berth-admin" "$client"
  cert kube-controller-manager "/CN=system:kube-controller-manager" "$client"
  cert kube-scheduler "/CN=system:kube-scheduler" "$client"
  cert kwok "/O=system:masters/CN=kwok-controller" "$client"
  # How the API server authenticates to a real node's kubelet (logs, exec, port-forward).
  cert kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
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

# write_kubeconfig FILE CERT: a kubeconfig for $api_host:$api_port with the client certificate CERT.
write_kubeconfig() {
  local file=$1 user=$2
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: berth-local
  cluster:
    server: https://$api_host:$api_port
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
