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
        report analyze analyze_trace all test test-cov test-fast lint format typecheck benchmark up down logs clean

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

# Knobs of train_smoke, as make variables or environment variables (each maps to a config key):
#   BATCH_SIZE MINI_BATCH_SIZE GRAD_ACCUM_STEPS KL_COEF LEARNING_RATE STEPS SEED; OUT (run folders, default runs),
#   VERBOSE=1 (a line per step), LOG_LEVEL=DEBUG (Python logging; also in OUT/<run>/train.log), ARGS (more flags).
RLHFKIT ?= $(BIN)/rlhfkit
OUT ?= runs
TRAIN_SETS = $(if $(BATCH_SIZE),--set ppo.batch_size=$(BATCH_SIZE)) \
             $(if $(MINI_BATCH_SIZE),--set ppo.mini_batch_size=$(MINI_BATCH_SIZE)) \
             $(if $(GRAD_ACCUM_STEPS),--set ppo.grad_accum_steps=$(GRAD_ACCUM_STEPS)) \
             $(if $(KL_COEF),--set ppo.kl_coef=$(KL_COEF)) \
             $(if $(LEARNING_RATE),--set ppo.learning_rate=$(LEARNING_RATE)) \
             $(if $(STEPS),--set train.num_epochs=1 --set train.steps_per_epoch=$(STEPS)) \
             $(if $(SEED),--set seed=$(SEED)) \
             $(if $(filter 1 true yes,$(VERBOSE)),--verbose) \
             $(if $(LOG_LEVEL),--log-level $(LOG_LEVEL))

train_smoke: install
	$(RLHFKIT) train --config configs/smoke.yaml --out $(OUT) $(strip $(TRAIN_SETS)) $(ARGS)

# PROFILE_GPU=false: CPU activity only in the trace, even on a GPU run.
profile: install
	$(RLHFKIT) profile --config $(CONFIG) --out profiles --profile-gpu $(if $(filter 0 false no off,$(PROFILE_GPU)),false,true) $(ARGS)

# One self-contained HTML report: RUN=runs/<id> (default: the newest run folder) or a run id on $$RLHFKIT_SERVER.
report: install
	@run="$(RUN)"; [ -n "$$run" ] || run=$$(ls -td $(OUT)/*/ 2>/dev/null | head -1); \
	  if [ -z "$$run" ]; then echo "make report: no run folder in $(OUT)/ (make train_smoke first, or RUN=...)"; exit 2; fi; \
	  $(RLHFKIT) report $$run $(ARGS)

# Offline analysis: RUN as above; TRACE_DIR a profile folder (default profiles/, its newest run).
analyze: install
	@run="$(RUN)"; [ -n "$$run" ] || run=$$(ls -td $(OUT)/*/ 2>/dev/null | head -1); $(RLHFKIT) analyze $$run

analyze_trace: install
	$(RLHFKIT) analyze-trace $(or $(TRACE_DIR),profiles)

mem_report: install
	$(BIN)/rlhfkit mem-report --config $(CONFIG) --out profiles

# suggest_config searches the default config unless CONFIG= is given on the command line or in the environment
SUGGEST_CONFIG := $(if $(filter command line environment,$(origin CONFIG)),$(CONFIG),configs/default.yaml)
suggest_config: install
	$(RLHFKIT) suggest-config --config $(SUGGEST_CONFIG) --budget-gb $${BUDGET_GB:-2} --out profiles

all: train_smoke profile mem_report suggest_config report

## ---- quality --------------------------------------------------------------------------------
# Lint (ruff, mypy), frontend checks (tsc --strict, Vitest), then pytest: unit, engine, integration (real PostgreSQL,
# Redis, Celery worker processes) and e2e (real headless Chromium). pytest's summary is the last line.
test: install ui browser
	$(BIN)/ruff check rlhfkit backend worker tests benchmarks examples scripts
	$(BIN)/mypy rlhfkit backend worker
	@if [ -f frontend/package.json ] && command -v npm >/dev/null; then cd frontend && npm run --silent typecheck && npm run --silent test; fi
	$(BIN)/python -m pytest -p no:cacheprovider --durations=15 -o console_output_style=classic tests

# The same suite under coverage (rlhfkit, backend, worker); TESTS narrows it (e.g. TESTS=tests/unit).
# The per-file table, then the total on the last line.
TESTS ?= tests
test-cov: install
	$(BIN)/python -m pytest -p no:cacheprovider -q --cov=rlhfkit --cov=backend --cov=worker \
	  --cov-report=term:skip-covered $(TESTS)
	@echo "TOTAL coverage: $$($(BIN)/python -m coverage report --format=total)%"

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
	rm -rf runs profiles reports .coverage .pytest_cache .mypy_cache .ruff_cache frontend/dist backend/static
