# calc-events: the commands the README gives. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help install gen check lint test test-unit test-integration test-chaos test-chaos-docker test-py313 bench bench-smoke e2e up down clean

help:
	@echo "make install          create $(VENV) and install calc-events with its dev tools"
	@echo "make check            lint (ruff), types (mypy), import contracts (import-linter), generated code up to date"
	@echo "make test             every test: unit, then integration and chaos against a real broker"
	@echo "make test-unit        unit tests only (no broker, seconds)"
	@echo "make test-integration integration tests without the chaos tier"
	@echo "make test-chaos       failure and security tests on private nodes (containers without rabbitmq-server)"
	@echo "make test-chaos-docker  every chaos test on RabbitMQ 4.0 containers"
	@echo "make e2e              build and run the docker compose stack and check it end to end"
	@echo "make bench            the benchmark (RABBITMQ_URL or the local broker): table, JSON, bench/README.md"
	@echo "make bench-smoke      a small benchmark run that checks every variant loses nothing"
	@echo "make gen              regenerate gen/ from proto/calc.proto"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	VENV=$(VENV) scripts/install-tools.sh

gen:
	PYTHON=$(BIN)/python scripts/gen_proto.sh

check:
	$(BIN)/ruff check .
	$(BIN)/mypy calculator messaging producer consumer dlq_inspector journal
	$(BIN)/lint-imports
	PYTHON=$(BIN)/python scripts/gen_proto.sh
	git diff --exit-code -- gen || (echo "gen/ is stale: run make gen and commit it" >&2; exit 1)
	node_modules/.bin/buf lint
	node_modules/.bin/buf breaking --against released
	$(BIN)/promtool check rules deploy/prometheus/rules.yml
	$(BIN)/promtool test rules deploy/prometheus/rules_test.yml
	$(BIN)/promtool check config deploy/prometheus/prometheus.yml
	$(BIN)/python deploy/prometheus/generate_prometheusrule.py --check

test:
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)
	$(BIN)/pytest tests/integration tests/chaos $(PYTEST_ARGS)

test-unit:
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration:
	$(BIN)/pytest tests/integration -m "not chaos" $(PYTEST_ARGS)

test-chaos:
	$(BIN)/pytest tests/chaos $(PYTEST_ARGS)

test-chaos-docker:
	CALC_CHAOS_BROKER=container CALC_RELIABILITY_REPORT=tests/chaos/reliability-docker.json \
		$(BIN)/pytest tests/chaos $(PYTEST_ARGS)

test-py313:
	PYTEST_ARGS="$(PYTEST_ARGS)" scripts/test-py313.sh

bench:
	$(BIN)/python -m bench --json bench/results/latest.json
	$(BIN)/python scripts/doc_tables.py --publish bench bench/results/latest.json

bench-smoke:
	$(BIN)/python -m bench --smoke

e2e:
	scripts/e2e.sh

up:
	docker compose up --build -d

down:
	docker compose down -v
