# RLHF Systems Kit — every target installs what it needs (stamp files make re-runs fast).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYHASH := $(shell cat pyproject.toml | md5sum | cut -c1-10)
STAMP := $(VENV)/.installed-$(PYHASH)
UI_STAMP := frontend/node_modules/.installed-$(shell cat frontend/package-lock.json 2>/dev/null | md5sum | cut -c1-10)
CONFIG ?= configs/smoke.yaml
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install ui browser run dashboard serve worker train_smoke profile mem_report suggest_config \
        all test test-fast lint format typecheck benchmark up down logs clean

## ---- set-up -------------------------------------------------------------------------------
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first: the pinned CPU wheel lies on local disk here; a bare torch requirement pulls a CUDA build
	$(BIN)/python -m pip install -q 'torch==2.13.0' || $(BIN)/python -m pip install -q 'torch>=2.3'
	$(BIN)/python -m pip install -q -e '.[server,gpu,adapters,dev]'
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

$(UI_STAMP): frontend/package.json
	cd frontend && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Builds the SPA into backend/static (served at /). Skipped cleanly when node is absent.
ui: $(STAMP)
	@if [ -f frontend/package.json ] && command -v npm >/dev/null; then \
	  $(MAKE) --no-print-directory $(UI_STAMP) && \
	  $(BIN)/python -m backend.openapi frontend/openapi.json && \
	  (cd frontend && npm run --silent generate && npm run --silent build); \
	else echo "frontend: npm not found or no frontend/ — serving the API only"; fi

# Debian's Chromium for the browser tests (a tool's own browser download does not work here).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

## ---- the main job ---------------------------------------------------------------------------
# Embedded mode: SQLite, runs executed in-process, UI at http://localhost:$(PORT)
run: install ui
	$(BIN)/rlhfkit serve --host $(HOST) --port $(PORT)

dashboard: run

serve: run

worker: install
	$(BIN)/rlhfkit worker

train_smoke: install
	$(BIN)/rlhfkit train --config configs/smoke.yaml

profile: install
	$(BIN)/rlhfkit profile --config $(CONFIG) --out profiles

mem_report: install
	$(BIN)/rlhfkit mem-report --config $(CONFIG) --out profiles

# suggest_config searches the default config unless CONFIG= is given on the command line or in the environment
SUGGEST_CONFIG := $(if $(filter command line environment,$(origin CONFIG)),$(CONFIG),configs/default.yaml)
suggest_config: install
	$(BIN)/rlhfkit suggest-config --config $(SUGGEST_CONFIG) --budget-gb $${BUDGET_GB:-2} --out profiles

all: train_smoke profile mem_report suggest_config

## ---- quality --------------------------------------------------------------------------------
# Lint (ruff, mypy), frontend checks (tsc --strict, Vitest), then pytest: unit, engine, integration (real PostgreSQL,
# Redis, Celery worker processes) and e2e (real headless Chromium). pytest's summary is the last line.
test: install ui browser
	$(BIN)/ruff check rlhfkit backend worker tests benchmarks examples scripts
	$(BIN)/mypy rlhfkit backend worker
	@if [ -f frontend/package.json ] && command -v npm >/dev/null; then cd frontend && npm run --silent typecheck && npm run --silent test; fi
	$(BIN)/python -m pytest -p no:cacheprovider --durations=15 -o console_output_style=classic tests

test-fast: install
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

lint: install
	$(BIN)/ruff check rlhfkit backend worker tests benchmarks examples scripts
	$(BIN)/mypy rlhfkit backend worker

typecheck: lint

format: install
	$(BIN)/ruff format rlhfkit backend worker tests benchmarks
	$(BIN)/ruff check --fix rlhfkit backend worker tests benchmarks

benchmark: install
	$(BIN)/python benchmarks/run_all.py

## ---- deploy (needs a Docker engine) ------------------------------------------------------------
up:
	docker compose up -d --build

down:
	docker compose down

logs:
	docker compose logs -f --tail=200

clean:
	rm -rf runs profiles .pytest_cache .mypy_cache .ruff_cache frontend/dist backend/static
