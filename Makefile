# berth — `make` lists the targets. The two a new user needs: `make demo` and `make test`.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: help demo test lint fmt unit e2e e2e-real crds cluster cluster-down operator chart-check bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

demo: ## Start the local cluster, install berth, run it, apply the example Customer and show the result
	e2e/demo.sh

test: lint unit ## Everything CI runs: format, clippy, unit tests, CRD drift, e2e on kwok and on a real node
	@# The real node's operator image is made from the release build. It compiles at the lowest priority while
	@# the kwok suites run (they mostly wait on the cluster), instead of after them on an idle machine.
	nice -n 19 $(CARGO) build --release -p berth-operator --locked --quiet & build=$$!; \
	  rc=0; e2e/run.sh || rc=$$?; \
	  wait $$build || { echo "the release build failed"; exit 1; }; exit $$rc
	BERTH_REAL_NODE=1 e2e/run.sh

lint: ## cargo fmt --check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

unit: ## Unit tests, CRD drift test, real pgbouncer/PostgreSQL test, alert rules under promtool (no cluster needed)
	$(CARGO) test --workspace --locked --exclude berth-e2e
	e2e/build-components.sh >/dev/null # helm, which the chart tests render with, and promtool
	$(CARGO) test -p berth-e2e --locked --lib --test pool_real --test bootstrap_real --test chart
	e2e/alerts.sh

e2e: ## e2e tests: on $$KUBECONFIG if set, else on a local control plane started (and stopped) for the run
	e2e/run.sh

e2e-real: ## e2e tests on a real node (root): berth installed by Helm as pods, real containers for the tenants
	BERTH_REAL_NODE=1 e2e/run.sh

crds: ## Regenerate crds/ from the Rust types
	$(CARGO) run -q -p berth-api --bin crdgen
	cp crds/*.yaml charts/berth/crds/ 2>/dev/null || true

cluster: ## Start the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok); BERTH_REAL_NODE=1: a real node
	e2e/cluster.sh up

cluster-down: ## Stop the demo operator and the local control plane, and delete its state
	-[ -f .cluster/berth.pid ] && kill -TERM "$$(cat .cluster/berth.pid)" 2>/dev/null; true
	e2e/cluster.sh down

operator: ## Build the berth binary
	$(CARGO) build -p berth-operator --locked

bench: ## Scale benchmark: berth vs the API server's own floor and vs kro, plus a restart (N=200; N=1000 for the full run)
	e2e/bench.sh

clean: cluster-down ## Stop the cluster and remove build output
	$(CARGO) clean
