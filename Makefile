# Every documented way to work with the project. `make help` lists the targets.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
EXTRAS  ?= train,dev,live
# The demo runs only the runtime (ONNX scoring, no torch/CUDA: ~0.5 GB instead of ~6 GB).
DEMO_EXTRAS ?= live
HASH    := $(shell cat pyproject.toml | sha1sum | cut -c1-12)
comma   := ,
# One stamp per (pyproject, extras): a slim demo install does not count as the full one.
stamp    = $(VENV)/.installed-$(HASH)-$(subst $(comma),-,$(1))

.DEFAULT_GOAL := help
.PHONY: help install install-demo browser dashboard demo test test-fast lint format bench kafka kafka-stop postgres journal schemas-check models-train models-evaluate clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(VENV)/.installed-$(HASH)-%: pyproject.toml
	$(PY) -m pip install -q --disable-pip-version-check uv
	$(PY) -m uv venv -q --allow-existing --python 3.11 $(VENV)
	$(PY) -m uv pip install -q -p $(BIN)/python -e '.[$(subst -,$(comma),$*)]'
	@touch $@

install: $(call stamp,$(EXTRAS)) ## create .venv and install the project with all extras (training, tests)

install-demo: $(call stamp,$(DEMO_EXTRAS)) ## create .venv with the runtime only (no torch): what the demo runs

browser: ## install Debian's Chromium for the dashboard's browser tests (root; no-op when present)
	bash infra/browser/ensure-chromium.sh

dashboard: install-demo ## the web dashboard of the newest run folder (or of a live run: QT_KAFKA_BOOTSTRAP)
	$(BIN)/quantum-trader dashboard

demo: install-demo ## replay bundled real data through the whole topology on the embedded broker; writes runs/<id>/
	$(BIN)/quantum-trader demo

test: install ## the whole test suite (starts a real Apache Kafka unless QT_KAFKA_BOOTSTRAP is set)
	-bash infra/browser/ensure-chromium.sh  # the browser tests skip, saying why, without it
	$(BIN)/quantum-trader schemas check
	$(BIN)/pytest

test-fast: install ## unit and contract tests only (no broker)
	$(BIN)/pytest tests/unit tests/contract

lint: install ## ruff check + ruff format --check + mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy streams models

format: install ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(call stamp,$(EXTRAS)$(comma)bench) ## run tests/benchmarks/ (with the bench extra's anchors); results in tests/benchmarks/results/
	$(BIN)/python -m tests.benchmarks

kafka: install ## start a single-node Apache Kafka (KRaft) on 127.0.0.1:19092 and wait until ready
	bash infra/kafka/kafka.sh start

kafka-stop: ## stop the Kafka started by `make kafka`
	bash infra/kafka/kafka.sh stop

postgres: ## install (Debian package) and start a local PostgreSQL for the journal
	bash infra/postgres/ensure-postgres.sh

journal: install ## journal the business topics into PostgreSQL (QT_JOURNAL_DSN or the local default)
	$(BIN)/quantum-trader journal --dsn "$${QT_JOURNAL_DSN:-postgresql://quantum:quantum@127.0.0.1:5432/quantum_trader}"

schemas-check: install ## validate schemas, examples and BACKWARD compatibility
	$(BIN)/quantum-trader schemas check

models-train: install ## train the four models walk-forward on ../shared/data and register them
	$(BIN)/quantum-trader models train

models-evaluate: install ## write the evaluation report of the registered models
	$(BIN)/quantum-trader models evaluate

clean: ## remove caches (keeps .venv)
	rm -rf .pytest_cache .ruff_cache .mypy_cache build *.egg-info
