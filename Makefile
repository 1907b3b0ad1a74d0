# The verbs people type. Every target does its own set-up: the virtualenv from pyproject.toml and
# the control-plane binaries (built from Go modules into ~/.cache/mlmodel-operator on first use).
SHELL := bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CLUSTER := $(PYTHON) hack/localcluster.py

.DEFAULT_GOAL := help
.PHONY: help venv binaries test-tools system-packages manifests cluster-up cluster-down env lint fmt crds test bench bench-scale demo demo-down

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed ## create .venv with the package and its test tools

binaries: ## build the pinned control-plane binaries and helm (cached; slow only the first time)
	bash hack/build-binaries.sh

test-tools: ## build the servers the tests fetch models from (MinIO, fake-gcs-server; cached)
	bash hack/build-binaries.sh --test-tools

cluster-up: binaries ## start the local control plane (reuses a healthy one)
	$(CLUSTER) up

cluster-down: ## stop the local control plane; no process or port is left behind
	$(CLUSTER) down

env: ## print shell exports for kubectl/helm: eval "$(make -s env)"
	@$(CLUSTER) env

lint: venv ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: venv ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

crds: venv ## regenerate crds/ and the README field table from api.py
	$(BIN)/python -m mlmodel_operator.crdgen

system-packages: ## Debian packages the tests use (openssl, prometheus); installs them as root
	@bash hack/system-packages.sh

test: venv binaries test-tools system-packages lint ## the whole suite: unit, integration and e2e against the local control plane
	$(BIN)/pytest

manifests: binaries ## render manifests/install.yaml from the chart (pinned helm)
	bash hack/render-manifests.sh

bench: venv ## benchmarks: sidecar added latency and abuse run, drift check vs scipy (prints ratios)
	$(BIN)/python bench/drift_check.py
	$(BIN)/python bench/sidecar_latency.py
	$(BIN)/python bench/sidecar_abuse.py

SCALE_N ?= 100 300
bench-scale: venv cluster-up ## the operator at scale vs a bare-client floor, N models (SCALE_N="100 300")
	$(BIN)/python bench/scale.py $(SCALE_N)

demo: venv binaries ## control plane, CRD and operator; the founding manifest applied and shown Ready
	@bash hack/demo.sh

demo-down: ## undo what the demo did: its operator and namespace, and the cluster if it started it
	@bash hack/demo.sh down
