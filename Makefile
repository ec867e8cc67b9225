# Two commands on a fresh machine: `make demo` and `make test` (both run `make install`).
# Needs only Python 3.11+, Java 17, Maven, Go 1.26+ (helm's go.mod), apt and make;
# everything else is installed here.

SHELL := /bin/bash
.DEFAULT_GOAL := help

UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
VENV := .venv
STREAMREC := $(VENV)/bin/streamrec

# `make test` runs its own services on other ports (scripts/test.sh), so it never disturbs a
# running demo.

.PHONY: help install install-run install-uv install-python install-redis install-prometheus install-vegeta install-helm install-kafka install-spark install-compose-spec install-ui install-browser demo stop api-check test test-unit lint bench loadtest

help:
	@echo "make demo   install, start Kafka + Redis, replay MovieLens-100K, run worker and API on :8000"
	@echo "make test   install, start the test services, run the whole suite, stop the services"
	@echo "make stop   stop the demo's worker, API and services"
	@echo "make api-check  replay MovieLens-100K to T, train --until T, serve, score /recommend after T"
	@echo "make lint   ruff, mypy and the import rules (lint-imports)"
	@echo "make loadtest  open-loop load (vegeta) on the running API (make demo) and a bare FastAPI app"

install: install-run install-helm

# Everything but helm, which only the chart's checks use: `make demo` does not wait for its
# build, and `make test` builds it beside the unit tests (scripts/test.sh).
install-run: install-uv install-python install-redis install-prometheus install-vegeta install-kafka install-spark install-compose-spec install-ui install-browser

# The Compose specification's validator (compose-go's own loader), for the check of
# docker-compose.yml in `make test`; built from the Go module proxy, pinned, once per version.
COMPOSE_GO_VERSION := v2.16.2
COMPOSE_SPEC := $(VENV)/bin/compose-spec

install-uv:
	@command -v uv >/dev/null 2>&1 || test -x $(HOME)/.local/bin/uv || \
		python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv

install-python: install-uv
	$(UV) sync --frozen

install-redis:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing Debian's redis-server"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; \
		$$SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true; }

# The cockpit's chart library (uPlot, pinned) from the npm registry into api/ui/vendor/.
install-ui:
	bash scripts/install_ui.sh

# Debian's Chromium and its driver for the browser tests (tests/e2e/test_cockpit.py).
install-browser:
	@{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || { \
		echo "installing Debian's chromium and chromium-driver"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

# Debian's prometheus (server and promtool); `streamrec services up` runs it from the state
# directory, so the system service the package enables is turned off.
install-prometheus:
	@command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || { \
		echo "installing Debian's prometheus"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
		$$SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true; }

# vegeta, the fixed-arrival-rate (open-loop) load generator of `make loadtest`
# (bench/open_loop.py); built with Go from the module proxy, pinned.
VEGETA_VERSION := v12.12.0
install-vegeta:
	@command -v vegeta >/dev/null 2>&1 || test -x $$(go env GOPATH)/bin/vegeta || \
		go install github.com/tsenart/vegeta/v12@$(VEGETA_VERSION)

# helm, for the chart's checks in `make test` (`helm lint`, `helm template`:
# tests/deploy/test_chart.py); built with Go 1.26+ from the module proxy, pinned, once per
# version, into the venv like compose-spec. Neither Debian nor PyPI nor npm ships Helm's
# own binary, and an install step may not download one from elsewhere. The build takes
# about 400 CPU-seconds (3-4 minutes on 2 idle cores), most of it compiling the
# Kubernetes client libraries.
HELM_VERSION := v4.3.2
HELM := $(VENV)/bin/helm
install-helm: install-python
	@test "$$(cat $(HELM).version 2>/dev/null)" = "$(HELM_VERSION)" || { \
		command -v go >/dev/null || { echo "Go 1.26+ is required to build helm (https://go.dev/dl)"; exit 1; }; \
		tools=$$(mktemp -d) && GOBIN=$$tools go install \
			-ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$(HELM_VERSION)" \
			helm.sh/helm/v4/cmd/helm@$(HELM_VERSION) && \
		mv $$tools/helm $(HELM) && rmdir $$tools && echo $(HELM_VERSION) > $(HELM).version && \
		echo "helm $(HELM_VERSION): $(HELM)"; }

install-kafka: install-python
	@command -v java >/dev/null || { echo "Java 17 is required (apt-get install openjdk-17-jre-headless)"; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is required (apt-get install maven)"; exit 1; }
	$(VENV)/bin/python -c "from streamrec.settings import load_settings; from streamrec.infra.services import KafkaBroker; print('kafka jars:', KafkaBroker(load_settings()).ensure_jars())"

# Spark's Kafka connector (deploy/spark/pom.xml) into ~/.cache/streamrec/spark-jars; Maven
# runs only when the pom changed, so later runs work offline.
install-spark: install-python
	@command -v java >/dev/null || { echo "Java 17 is required (apt-get install openjdk-17-jre-headless)"; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is required (apt-get install maven)"; exit 1; }
	$(VENV)/bin/python -c "from streamrec.settings import load_settings; from streams.spark.jars import ensure_spark_jars; jars = ensure_spark_jars(load_settings()); print('spark jars:', jars[0].parent, len(jars))"

install-compose-spec: install-python
	@test "$$(cat $(COMPOSE_SPEC).version 2>/dev/null)" = "$(COMPOSE_GO_VERSION)" || { \
		command -v go >/dev/null || { echo "Go 1.24+ is required to build compose-spec (https://go.dev/dl or Debian 13's golang-go)"; exit 1; }; \
		tools=$$(mktemp -d) && GOBIN=$$tools go install github.com/compose-spec/compose-go/v2/cmd@$(COMPOSE_GO_VERSION) && \
		mv $$tools/cmd $(COMPOSE_SPEC) && rmdir $$tools && echo $(COMPOSE_GO_VERSION) > $(COMPOSE_SPEC).version && \
		echo "compose-spec $(COMPOSE_GO_VERSION): $(COMPOSE_SPEC)"; }

demo: install-run
	bash scripts/demo.sh

stop:
	bash scripts/demo.sh stop

# Issue 3's check of the running API: replay MovieLens-100K up to T, train --until T,
# serve, score /recommend on users' later events (own services and ports; ~10 minutes).
api-check: install-run
	bash scripts/api_check.sh

test: install-run
	bash scripts/test.sh

test-unit: install-python
	$(VENV)/bin/pytest tests/unit -q

lint: install-python
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy streamrec streams api serving replay models training analysis
	$(VENV)/bin/lint-imports

bench: install-run
	@cat bench/README.md

# Against the API of the settings (`make demo`'s, or STREAMREC_API_PORT): GET /recommend at
# 50/200/400/800 requests/s and a bare FastAPI app at the same rates, in one run.
# More: `make loadtest LOADTEST_ARGS="--targets recommend events --seconds 30"`.
LOADTEST_ARGS ?=
loadtest: install-python install-vegeta
	$(VENV)/bin/python bench/load_test.py $(LOADTEST_ARGS)
