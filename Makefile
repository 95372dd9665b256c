# Greenlight — the commands a developer types.
#   make run    start a local control plane (when no cluster is configured) and the operator
#   make test   lint + every test tier (unit, integration, e2e, charts, observability)
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV      ?= uv
VENV    := .venv
PY      := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(HOME)/.cache/greenlight/bin:$(PATH)

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(VENV)/.synced: pyproject.toml uv.lock
	@command -v $(UV) >/dev/null || python3 -m pip install --quiet "uv==0.13.8"
	$(UV) sync --frozen --quiet
	@touch $@

.PHONY: deps
deps: $(VENV)/.synced ## install the pinned Python environment (uv.lock)

.PHONY: control-plane
control-plane: ## build (once, cached) kube-apiserver and etcd from the Go module proxy
	@bash hack/envtest/build.sh >/dev/null

.PHONY: helm
helm: ## build (once, cached) helm from the Go module proxy
	@bash hack/helm/install.sh >/dev/null

.PHONY: tools
tools: control-plane helm ## build/install every external tool the tests use
	@bash hack/prom/install.sh >/dev/null
	@cd hack/queries && npm ci --no-audit --no-fund --silent

.PHONY: run
run: deps control-plane helm ## run the operator as its own ServiceAccount (local control plane when no cluster is configured)
	$(PY) -m greenlight.devcluster run

.PHONY: lint
lint: deps ## ruff (lint + format check) and mypy --strict
	$(VENV)/bin/ruff check operator tests bench observability
	$(VENV)/bin/ruff format --check operator tests bench observability
	$(VENV)/bin/mypy

.PHONY: fmt
fmt: deps ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff format operator tests bench observability
	$(VENV)/bin/ruff check --fix operator tests bench observability

.PHONY: test-unit
test-unit: deps ## pure core, rendering, signatures, audit chain
	$(PY) -m pytest tests/unit -q

.PHONY: test-integration
test-integration: deps tools ## against a real kube-apiserver + etcd
	$(PY) -m pytest tests/integration -q

.PHONY: test-e2e
test-e2e: deps tools ## operator process, fake Slack, Prometheus/Alertmanager, charts, resilience, fuzz
	$(PY) -m pytest tests/e2e tests/charts tests/observability tests/resilience tests/fuzz -q

.PHONY: test
test: lint tools ## lint and every test tier
	$(PY) -m pytest tests -q -p no:cacheprovider --durations=15

.PHONY: bench
bench: deps tools ## benchmarks; results go to docs/benchmarks.md
	$(PY) -m bench

.PHONY: kind-up
kind-up: ## (needs Docker) create a kind cluster and install the chart
	bash hack/kind-up.sh

.PHONY: clean
clean: ## remove local state (.greenlight/) and the virtualenv
	rm -rf .greenlight $(VENV)
