# The README's commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
# The cluster toolchain (tilt, kubectl of the cluster's version, ...) comes first on PATH for every target.
export PATH := $(shell scripts/cluster/toolchain.sh bindir):$(PATH)
export TILT_DISABLE_ANALYTICS := 1

.PHONY: help deps lint typecheck unit parity live conformance conformance-prod test dev bench bench-recall bench-quota up down \
	clean lint-security load load-baseline load-oom doctor cluster cluster-down cluster-status cluster-toolchain cluster-test \
	cluster-tier dev-bundle

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

deps: ## install Debian packages and the project venv (.venv) if missing
	@scripts/install_deps.sh

lint: deps ## ruff (lint) over the whole tree
	$(VENV)/bin/ruff check .

typecheck: deps ## mypy --strict over bench/, brain/, conformance/, load/, localservers/, ops/ and targets/
	$(VENV)/bin/mypy

# Plain pytest leaves out the tests marked `live` and `cluster` (pyproject's addopts); `live` and `cluster-test` select
# them by their marker.
unit: deps ## pytest: unit, integration (real Redis/Postgres/Kafka/Rego) and static deployment checks
	@scripts/lint_security.sh --install-only
	$(VENV)/bin/pytest -q

parity: deps ## compose <-> k8s parity gate (static; exit 1 on drift, 2 on unreadable input)
	$(PY) -m conformance parity

live: up ## tests marked live (Docker, the running stack): smoke, load sampler + ~30 s profile, doctor, migration
	$(VENV)/bin/pytest -q -m live

conformance: up ## the conformance suite against the compose stack (reports in reports/)
	$(VENV)/bin/pytest conformance/ --env dev --report-json reports/conformance-dev.json \
		--junitxml reports/conformance-dev.xml

# The API checks go through the TLS ingress on 127.0.0.1:9999 (the local cluster's and kind's), as users reach it.
PROD_API ?= --base-url https://somabrain.internal:9999 --resolve somabrain.internal:9999:127.0.0.1

conformance-prod: deps ## the conformance suite against the cluster in the current kube context (needs a cluster)
	$(VENV)/bin/pytest conformance/ --env prod $(if $(KUBE_CONTEXT),--kube-context $(KUBE_CONTEXT)) $(PROD_API) \
		--report-json reports/conformance-prod.json --junitxml reports/conformance-prod.xml

dev-bundle: up ## export the dev stack's data to reports/dev-bundle (the cluster tier imports it into prod)
	rm -rf reports/dev-bundle
	$(VENV)/bin/somabrain migrate export --from dev --out reports/dev-bundle

test: lint typecheck unit parity live conformance dev-bundle cluster-tier ## everything CI runs: checks, tests, parity, the live stack, the cluster tier

dev: deps ## run the API (:9696) and SomaMemory (:9595) locally against private Redis and Postgres
	@scripts/dev_local.sh

bench: deps ## service-core benchmark: /health and /act vs bare Quart, mahal vs numpy (by hand, not in CI)
	$(PY) -m bench.core $(BENCH_ARGS)

# The last commit whose SomaMemory recalled by scanning a tenant's newest 50,000 rows: bench-recall's "before".
RECALL_BASELINE ?= 120ff52
bench-recall: deps ## recall at 1k/10k/100k memories: the index vs the scan of RECALL_BASELINE (by hand, ~5 min)
	$(PY) -m bench.recall --baseline $(RECALL_BASELINE) $(BENCH_RECALL_ARGS)

bench-quota: deps ## a tenant at its SomaMemory quota beside another tenant's recall, measured together (by hand)
	$(PY) -m bench.quota $(BENCH_QUOTA_ARGS)

up: deps ## start the compose stack (builds images locally when no registry answers) and wait until ready
	@scripts/stack.sh up

down: ## stop the stack (volumes kept) and the Docker engine if `make up` started it
	@scripts/stack.sh down

clean: ## like down, and remove the volumes
	@scripts/stack.sh clean

doctor: deps ## diagnose the dev stack (exit 0 healthy, 1 degraded, 2 broken, 3 unreachable)
	$(VENV)/bin/somabrain doctor --env dev

load: up ## steady load profile against the stack: verdict, plots and locust reports under reports/
	$(PY) -m load run --env dev --profile steady

load-baseline: up ## somabrain throughput as a ratio to a bare Quart hello-world, measured in the same run
	$(PY) -m load baseline

load-oom: up ## demo: a memory limit below the working set is caught (separate compose project, ~2 min)
	$(PY) -m load.oom_demo

lint-security: ## checkov over k8s/ and the Dockerfile (in its own venv, ~/.cache/somabrain/checkov-<version>)
	@scripts/lint_security.sh

cluster: deps ## a real local Kubernetes (context somabrain-local), ready: DNS, registry :5000, ingress :9999, canary
	@scripts/cluster/cluster.sh up

cluster-down: ## stop the local cluster and remove what it put on the machine (--purge: CLUSTER_DOWN_ARGS=--purge)
	@scripts/cluster/cluster.sh down $(CLUSTER_DOWN_ARGS)

cluster-test: deps ## on the running cluster: canary, tilt ci, prod conformance, diff with the dev report, ops, load
	SOMABRAIN_DEV_REPORT=$(CURDIR)/reports/conformance-dev.json SOMABRAIN_DEV_BUNDLE=$(CURDIR)/reports/dev-bundle \
		$(VENV)/bin/pytest -q -rA -m cluster --junitxml reports/cluster.xml

# The compose stack stops first (volumes kept: `make up` brings it back): its TLS front and the cluster's ingress
# both want 127.0.0.1:9999. The cluster goes down afterwards, pass or fail, and must leave nothing behind.
cluster-tier: deps ## make down, then a fresh cluster, cluster-test, cluster-down and the check that nothing is left
	@scripts/stack.sh down
	$(MAKE) cluster
	@status=0; $(MAKE) cluster-test || status=$$?; $(MAKE) cluster-down || status=$$((status ? status : 1)); \
		scripts/cluster/cluster.sh check-clean || status=$$((status ? status : 1)); exit $$status

cluster-status: ## what runs in the local cluster
	@scripts/cluster/cluster.sh status

cluster-toolchain: ## build (or check) the cluster's pinned toolchain only: Kubernetes, CoreDNS, Traefik, Tilt, ...
	@scripts/cluster/toolchain.sh build
