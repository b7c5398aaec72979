# iot-operator: every entry point a user or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo

.PHONY: help deps packages control-plane build lint lint-tools unit-test test load-test bench run images dockerfile cluster-up cluster-down dev kind-up kind-down crd clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

deps: packages control-plane ## install everything the tests need; idempotent

packages: ## Debian packages: InfluxDB, libcoap's coap-client, curl, ... (all make run needs); idempotent
	scripts/install-packages.sh

control-plane: ## build the local Kubernetes control plane from Go modules (first time ~11 min, then cached)
	@command -v go >/dev/null || { echo "Go is required to build the control plane (go 1.26+)" >&2; exit 1; }
	tests/cluster/build.sh

build: ## build every crate (release)
	$(CARGO) build --workspace --release

LINT_BIN := $(shell scripts/lint-tools.sh --print)

lint-tools: ## actionlint (Go module proxy, ~15 s) and cargo-deny (cargo install, ~20 min the first time on 2 cores); idempotent
	scripts/lint-tools.sh

lint: lint-tools ## rustfmt, clippy (warnings are errors), cargo-deny (licenses, bans, sources: deny.toml), actionlint
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(LINT_BIN)/cargo-deny check --hide-inclusion-graph licenses bans sources
	$(LINT_BIN)/actionlint

unit-test: ## every crate's unit tests (no cluster, no InfluxDB, no images): what the release workflow runs
	$(CARGO) test --workspace --lib --bins

test: deps ## install what is missing, start InfluxDB and the control plane, run every test, tear down
	scripts/test.sh

load-test: packages control-plane ## the reference scaling experiment on the real node (~30 min, not in make test); writes docs/autoscaling.md
	scripts/load-test.sh

bench: packages control-plane ## CoAP ingest, AQI processing, backup/restore and operator-at-scale benchmarks (figures go to docs/benchmarks.md)
	scripts/bench.sh

run: packages ## InfluxDB, coap-server, sensor-sim and aqi-ingestor as local processes until Ctrl-C
	scripts/run-local.sh

images: ## OCI image archives in target/images/ (no Docker, no registry); LOAD=1 imports them into the local node
	images/build.sh $(if $(LOAD),--load)

dockerfile: ## regenerate docker/Dockerfile from images/images.conf
	images/dockerfile.sh > docker/Dockerfile

cluster-up: packages control-plane ## start the local Kubernetes control plane (prints the KUBECONFIG line)
	tests/cluster/up.sh

cluster-down: ## stop the local control plane started by cluster-up
	tests/cluster/down.sh

dev: packages control-plane ## control plane + CRD + operator + examples/iotmonitor.yaml, then show what it built
	scripts/dev.sh

# kind quick start (needs Docker, kind, helm and kubectl; not available on the project's build
# machines, which have no Docker engine). The images come from the same build as the local node's
# (images/build.sh, with umoci and skopeo from Debian), loaded with `kind load image-archive`.
KIND ?= kind
KIND_CLUSTER ?= iot-operator
KIND_CONTEXT := kind-$(KIND_CLUSTER)
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
KIND_IMAGES := iot-operator coap-server sensor-sim aqi-ingestor iot-backup metrics-server

kind-up: ## kind cluster + images + metrics-server + operator (Helm) + examples/iotmonitor.yaml; prints the Grafana URL
	@for t in docker $(KIND) helm kubectl; do command -v $$t >/dev/null || { echo "kind-up needs $$t on PATH" >&2; exit 1; }; done
	@$(KIND) get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)' || $(KIND) create cluster --name $(KIND_CLUSTER) --config kind-config.yaml
	images/build.sh $(KIND_IMAGES)
	@for img in $(KIND_IMAGES); do $(KIND) load image-archive target/images/$$img.tar --name $(KIND_CLUSTER) || exit 1; done
	kubectl --context $(KIND_CONTEXT) apply -f deploy/metrics-server.yaml
	helm upgrade --install iot-operator charts/iot-operator --kube-context $(KIND_CONTEXT) \
	  --namespace iot-system --create-namespace --set image.tag=$(IMAGE_TAG) --wait
	kubectl --context $(KIND_CONTEXT) apply -f examples/iotmonitor.yaml
	kubectl --context $(KIND_CONTEXT) wait iotmonitor/lab --for=condition=Ready --timeout=10m
	@kubectl --context $(KIND_CONTEXT) get iotmonitor lab
	@echo
	@echo "Grafana: http://localhost:3000 (anonymous viewer, as examples/iotmonitor.yaml asks; admin password:"
	@echo "  kubectl --context $(KIND_CONTEXT) get secret lab-credentials -o jsonpath='{.data.grafana-admin-password}' | base64 -d)"
	@echo "CoAP:    coaps://localhost:5684 (UDP, DTLS; device desk's key:"
	@echo "  kubectl --context $(KIND_CONTEXT) get secret lab-devices -o jsonpath='{.data.desk}' | base64 -d)"

kind-down: ## delete the kind cluster made by kind-up
	$(KIND) delete cluster --name $(KIND_CLUSTER)

crd: ## regenerate crds/iotmonitor.yaml (and the Helm chart's copy) from the Rust types
	$(CARGO) run -q -p iot-operator -- crd > crds/iotmonitor.yaml
	cp crds/iotmonitor.yaml charts/iot-operator/crds/iotmonitor.yaml

clean: ## remove build output (the binary cache in ~/.cache/iot-operator stays)
	$(CARGO) clean
