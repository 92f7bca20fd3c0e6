#!/usr/bin/env bash
# Builds a minimal OpenTelemetry Collector from source through the Go module proxy, once, into a cache
# outside the repo: the OTLP receiver (gRPC + HTTP) and the file exporter, nothing else. berth-telemetry's
# integration test (crates/telemetry/tests/otlp.rs) sends spans to it to prove they speak real OTLP.
#
#   e2e/build-otelcol.sh          # build it if missing, print the binary's path on stdout
#
# A tiny wrapper module (what the collector's `builder` would generate, without building the builder)
# keeps every collector module at one release. Needs only `go` and the module proxy.
set -euo pipefail

# Core v0.X goes with stable v1.Y; the contrib file exporter is published at the same v0.X.
OTELCOL_VERSION=${OTELCOL_VERSION:-v0.161.0}
OTELCOL_STABLE_VERSION=${OTELCOL_STABLE_VERSION:-v1.67.0}

cache=${BERTH_CACHE:-$HOME/.cache/berth}
out="$cache/otelcol-$OTELCOL_VERSION"
bin="$out/otelcol"
src="$cache/src/otelcol-$OTELCOL_VERSION"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
# Caches of its own, removed after the build (as in build-components.sh): the binary is what is kept.
export GOMODCACHE="$cache/go-mod-otelcol" GOCACHE="$cache/go-build-otelcol"

log() { printf '[build-otelcol] %s\n' "$*" >&2; }

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$out" "$src"
# One build at a time (two test runs may race); the second finds the binary when the first is done.
exec 9>"$out/.lock"
flock 9
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
start=$(date +%s)
log "otelcol $OTELCOL_VERSION ($OTELCOL_STABLE_VERSION) in $src"

core=go.opentelemetry.io/collector
contrib=github.com/open-telemetry/opentelemetry-collector-contrib
cat >"$src/go.mod" <<EOF
module berth.dev/localbuild/otelcol

go 1.25.0

require (
	$core/component $OTELCOL_STABLE_VERSION
	$core/confmap $OTELCOL_STABLE_VERSION
	$core/confmap/provider/envprovider $OTELCOL_STABLE_VERSION
	$core/confmap/provider/fileprovider $OTELCOL_STABLE_VERSION
	$core/exporter $OTELCOL_STABLE_VERSION
	$core/otelcol $OTELCOL_VERSION
	$core/receiver $OTELCOL_STABLE_VERSION
	$core/receiver/otlpreceiver $OTELCOL_VERSION
	$core/service $OTELCOL_VERSION
	$contrib/exporter/fileexporter $OTELCOL_VERSION
)
EOF
rm -f "$src/go.sum"

cat >"$src/main.go" <<EOF
// Program otelcol is a minimal OpenTelemetry Collector for berth's tests: OTLP in, files out.
package main

import (
	"os"

	"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/service/telemetry/otelconftelemetry"
)

func components() (otelcol.Factories, error) {
	var err error
	factories := otelcol.Factories{Telemetry: otelconftelemetry.NewFactory()}
	if factories.Receivers, err = otelcol.MakeFactoryMap[receiver.Factory](otlpreceiver.NewFactory()); err != nil {
		return otelcol.Factories{}, err
	}
	if factories.Exporters, err = otelcol.MakeFactoryMap[exporter.Factory](fileexporter.NewFactory()); err != nil {
		return otelcol.Factories{}, err
	}
	return factories, nil
}

func main() {
	set := otelcol.CollectorSettings{
		BuildInfo: component.BuildInfo{
			Command:     "otelcol",
			Description: "berth test collector (otlp receiver, file exporter)",
			Version:     "$OTELCOL_VERSION",
		},
		Factories: components,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				ProviderFactories: []confmap.ProviderFactory{envprovider.NewFactory(), fileprovider.NewFactory()},
				DefaultScheme:     "env",
			},
		},
	}
	if err := otelcol.NewCommand(set).Execute(); err != nil {
		os.Exit(1)
	}
}
EOF

cd "$src"
log "resolving modules (go mod tidy)"
go mod tidy
# MVS may lift a module above its pin when another one asks for more; the collector itself must not move.
got=$(go list -m -f '{{.Version}}' "$core/otelcol")
[ "$got" = "$OTELCOL_VERSION" ] || { log "otelcol resolved to $got, not $OTELCOL_VERSION"; exit 1; }
log "compiling (CGO_ENABLED=0; several minutes on 2 cores when the Go build cache is cold)"
go build -trimpath -ldflags "-s -w" -o "$bin.tmp" .
mv "$bin.tmp" "$bin"
log "built $bin in $(($(date +%s) - start))s"
go clean -modcache
rm -rf "$GOCACHE"
echo "$bin"
