#!/usr/bin/env bash
# Writes a kubeconfig that authenticates as a ServiceAccount (token from the TokenRequest API), pointing at
# the API server of the current $KUBECONFIG:  e2e/operator-kubeconfig.sh NAMESPACE SERVICEACCOUNT OUT
set -euo pipefail
ns=$1 sa=$2 out=$3
token=$(kubectl -n "$ns" create token "$sa" --duration=4h)
server=$(kubectl config view --minify --raw -o jsonpath='{.clusters[0].cluster.server}')
ca=$(kubectl config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
mkdir -p "$(dirname "$out")"
umask 077
cat >"$out" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters: [{name: cluster, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: $sa, user: {token: "$token"}}]
contexts: [{name: $sa, context: {cluster: cluster, user: $sa, namespace: $ns}}]
current-context: $sa
KUBECONFIG
