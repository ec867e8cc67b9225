# Two commands on a fresh machine: `make demo` and `make test` (both run `make install`).
# Needs only Python 3.11+, Java 17, Maven, apt and make; everything else is installed here.

SHELL := /bin/bash
.DEFAULT_GOAL := help

UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
VENV := .venv
STREAMREC := $(VENV)/bin/streamrec

# `make test` runs its own services on other ports, so it never disturbs a running demo.
TEST_ENV := STREAMREC_STATE_DIR=$(CURDIR)/var/test-state STREAMREC_DATA_DIR=$(CURDIR)/var/test-data \
	STREAMREC_KAFKA_PORT=19092 STREAMREC_KAFKA_CONTROLLER_PORT=19093 STREAMREC_REDIS_PORT=16379

.PHONY: help install install-uv install-python install-redis install-kafka install-spark install-ui install-browser demo stop api-check test test-unit lint bench

help:
	@echo "make demo   install, start Kafka + Redis, replay MovieLens-100K, run worker and API on :8000"
	@echo "make test   install, start the test services, run the whole suite, stop the services"
	@echo "make stop   stop the demo's worker, API and services"
	@echo "make api-check  replay MovieLens-100K to T, train --until T, serve, score /recommend after T"
	@echo "make lint   ruff, mypy and the import rules (lint-imports)"

install: install-uv install-python install-redis install-kafka install-spark install-ui install-browser

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

demo: install
	bash scripts/demo.sh

stop:
	bash scripts/demo.sh stop

# Issue 3's check of the running API: replay MovieLens-100K up to T, train --until T,
# serve, score /recommend on users' later events (own services and ports; ~10 minutes).
api-check: install
	bash scripts/api_check.sh

test: install
	$(TEST_ENV) bash scripts/test.sh

test-unit: install-python
	$(VENV)/bin/pytest tests/unit -q

lint: install-python
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy streamrec streams api replay models training analysis
	$(VENV)/bin/lint-imports

bench: install
	@cat bench/README.md
