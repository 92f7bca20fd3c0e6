#!/usr/bin/env bash
# Installs berth's chart into the cluster of $KUBECONFIG as `make demo` and the e2e runs do:
#   e2e/install.sh          CRDs, ServiceAccount and RBAC; the operator pods land on kwok nodes and run nothing
#   e2e/install.sh real     the operator and tenant images this machine built (e2e/images.sh), never pulled
# Extra arguments go to helm.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/.."

mode=${1:-kwok}
[ $# -gt 0 ] && shift
args=(upgrade --install berth charts/berth -n berth-system --create-namespace --wait)
if [ "$mode" = real ]; then
  mapfile -t images < <("$here/images.sh" names)
  image_ref() { printf '%s\n' "${images[@]}" | grep "/$1:"; }
  berth=$(image_ref berth)
  postgres=$(image_ref postgres)
  # The tag stays `dev`; the archive's content key in a pod annotation rolls the pods when the binary changes.
  archive=$("$here/images.sh" build | grep '/berth-dev-')
  args+=(--timeout 5m --set image.repository="${berth%:*}" --set image.tag="${berth##*:}"
    --set image.pullPolicy=Never --set images.postgres="$postgres" --set images.pgbouncer="$postgres"
    --set-string 'podAnnotations.berth\.dev/image'="$(basename "$archive" .tar)")
else
  args+=(--timeout 3m)
fi
helm "${args[@]}" "$@"
