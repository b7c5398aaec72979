# iot-operator: every entry point a user or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo

.PHONY: help deps build lint test bench run cluster-up cluster-down dev kind-up kind-down crd clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

deps: ## install what the tests need (Debian packages, control-plane binaries); idempotent
	scripts/install-deps.sh

build: ## build every crate (release)
	$(CARGO) build --workspace --release

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: deps ## install what is missing, start InfluxDB and the control plane, run every test, tear down
	scripts/test.sh

bench: deps ## end-to-end CoAP ingest and AQI processing benchmarks (figures go to docs/benchmarks.md)
	scripts/bench.sh

run: deps ## InfluxDB, coap-server, sensor-sim and aqi-ingestor as local processes until Ctrl-C
	scripts/run-local.sh

cluster-up: deps ## start the local Kubernetes control plane (prints the KUBECONFIG line)
	tests/cluster/up.sh

cluster-down: ## stop the local control plane started by cluster-up
	tests/cluster/down.sh

dev: deps ## control plane + CRD + operator + examples/iotmonitor.yaml, then show what it built
	scripts/dev.sh

crd: ## regenerate crds/iotmonitor.yaml from the Rust types
	$(CARGO) run -q -p iot-operator -- crd > crds/iotmonitor.yaml

clean: ## remove build output (the binary cache in ~/.cache/iot-operator stays)
	$(CARGO) clean
