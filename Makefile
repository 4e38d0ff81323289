# GiftGuard: `make demo` runs the whole product on this machine; `make test` runs every test.
# Every install step lives here, so both work on a fresh clone.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
JARS   := deploy/kafka/lib

.DEFAULT_GOAL := help
.PHONY: help install jars prometheus dashboard demo test test-unit broker lint bench clean

help:
	@echo "make demo   - local Kafka broker, bridge, worker and simulated Square traffic, alerts live"
	@echo "make test   - all tests (installs what they need first)"
	@echo "make broker - the development Kafka broker in the foreground"
	@echo "make lint   - ruff"
	@echo "make bench  - the performance benchmark (writes bench/results.json)"

$(BIN)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# Apache Kafka's server jars, from Maven Central, resolved once into deploy/kafka/lib.
$(JARS)/.fetched: deploy/kafka/pom.xml
	@command -v mvn >/dev/null || { echo "need Maven (mvn) and Java 17+ for the development broker"; exit 1; }
	rm -rf $(JARS)
	mvn -q -B -f deploy/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory=lib -DincludeScope=runtime
	touch $@

install: $(BIN)/.installed
jars: $(JARS)/.fetched

# Prometheus and promtool (Debian's package), for the rules tests and the live Prometheus test.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
prometheus:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq prometheus >/dev/null; }

# Regenerate deploy/grafana/dashboards/giftguard.json from deploy/grafana/generate.py.
dashboard: install
	$(BIN)/python deploy/grafana/generate.py

demo: install jars
	$(BIN)/giftguard demo

test: install jars prometheus
	$(BIN)/python -m pytest

test-unit: install prometheus
	$(BIN)/python -m pytest -m "not integration"

broker: install jars
	$(BIN)/giftguard broker

lint: install
	$(BIN)/ruff check streams detectors sinks tests bench deploy

bench: install jars
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) $(JARS) var .pytest_cache
