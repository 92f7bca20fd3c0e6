#!/usr/bin/env bash
# Checks the chart's alert rules as they are rendered, with promtool: `helm template` with
# prometheusRule.enabled=true, the PrometheusRule's spec as a plain rule file, `promtool check rules` on it, then
# the unit tests in e2e/alerts/*.test.yaml (input series, and the alerts that must and must not fire).
#
#   e2e/alerts.sh          # needs helm and promtool from e2e/build-components.sh; no cluster
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
bin=$("$here/cluster.sh" bin)
for tool in helm promtool; do
  [ -x "$bin/$tool" ] || {
    echo "[alerts] $bin/$tool is missing: run e2e/build-components.sh" >&2
    exit 1
  }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Release `berth`, as the tests' job label (berth-metrics) expects.
"$bin/helm" template berth "$repo/charts/berth" --namespace berth-system \
  --set prometheusRule.enabled=true --show-only templates/prometheusrule.yaml >"$work/rendered.yaml"
# The spec is the rule file: its block, one indentation level less. The template writes it in block style,
# and promtool refuses whatever else this would let through.
awk '/^spec:$/ { inside = 1; next } inside && /^[^ ]/ { inside = 0 } inside { sub(/^  /, ""); print }' \
  "$work/rendered.yaml" >"$work/berth-rules.yaml"
[ -s "$work/berth-rules.yaml" ] || {
  echo "[alerts] no spec in the rendered PrometheusRule:" >&2
  cat "$work/rendered.yaml" >&2
  exit 1
}
cp "$here"/alerts/*.test.yaml "$work/"

"$bin/promtool" check rules --lint-fatal "$work/berth-rules.yaml"
# Every alert the rules define must be tested, firing at least once.
missing=0
while read -r alert; do
  grep -q "alertname: $alert\$" "$here"/alerts/*.test.yaml || {
    echo "[alerts] alert $alert has no test in e2e/alerts/" >&2
    missing=1
  }
done < <(sed -n 's/^ *- alert: //p' "$work/berth-rules.yaml" | sort -u)
[ "$missing" = 0 ]
(cd "$work" && "$bin/promtool" test rules ./*.test.yaml)
