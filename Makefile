# Entry points of docs/commands.md. Each creates .venv and installs into it when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 3000

export BENTOML_HOME := $(CURDIR)/.bentoml
export BENTOML_DO_NOT_TRACK := true
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: run test check test-unit serve ui install bench bench-quick fuzz soak scale report backtest simulate

# One environment for the service, the pipeline, the tests and the benchmarks, installed from
# requirements.lock (every package pinned, the versions CI ran), then the project itself without
# resolving anything; the bento installs from the same lock (pipelines/package.py). After a change
# to pyproject.toml's dependencies, rewrite the lock with the command at its top (pins kept where
# they still fit; with --upgrade every one moves to its newest allowed version):
#   .venv/bin/uv pip compile pyproject.toml --extra test --extra bench --universal --python-version 3.11 -o requirements.lock
install: $(INSTALLED)

$(INSTALLED): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip check  # a requirement of pyproject.toml the lock lacks: rewrite the lock
	touch $@

run: $(INSTALLED)
	@start=$$(date +%s); PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro && \
	  echo "dvc repro: $$(( $$(date +%s) - start ))s" && $(BIN)/customs-risk metrics

# `make check`: lint, format, types (pyproject.toml [tool.mypy]) and the unit tests, in under a
# minute; `make test-unit`: the unit tests alone, on every core (pytest-xdist, a test file per
# worker). `make test`: `make check`, then the rest of the suite, one test at a time: the tests
# marked e2e (the pipeline and the service) and slow (tests/conftest.py SLOW).
check: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(MAKE) --no-print-directory test-unit

# Bytecode is written for the tests (each worker imports every test module: 4 s less a worker);
# DVC, MLflow's code_paths and the bento's globs all leave __pycache__ out.
test-unit: $(INSTALLED)
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -m "not e2e and not slow" -n auto --dist loadfile

test: check
	$(BIN)/pytest -m "e2e or slow"

# The audit store and the analysts' rules default to this checkout (serving/settings.py); production sets both.
serve: $(INSTALLED)
	@host="$(HOST)"; \
	if [ -z "$$RISK_API_KEYS" ] && [ "$$host" != "127.0.0.1" ] && [ "$$host" != "localhost" ] && [ "$$host" != "::1" ]; then \
	  echo "RISK_API_KEYS is not set: serving on 127.0.0.1 only, not $$host"; host=127.0.0.1; fi; \
	$(BIN)/bentoml serve customs-risk-service:latest --host $$host --port $(PORT)

ui: $(INSTALLED)
	$(BIN)/mlflow ui --backend-store-uri "$(MLFLOW_TRACKING_URI)" --host 127.0.0.1 --port 5000

# The targeting report (docs/report.md) of the declarations dated in the last 7 days (UTC), from this
# checkout's audit store (RISK_AUDIT_DB overrides), read-only; REPORT_DIR/index.html and kpis.json.
REPORT_DIR ?= data/report

report: $(INSTALLED)
	$(BIN)/customs-risk report --since "$$(date -u -d '7 days ago' +%F)" --until "$$(date -u +%F)" --output "$(REPORT_DIR)"

# Benchmarks (bench/run.py): `make bench` (under an hour), `make bench QUICK=1` or `make bench-quick`
# (under 5 minutes); ONLY=scoring (or pipeline, serving, batch, comma-separated) runs those sections
# alone: scoring (issue 14) needs only what `make run` left, a few minutes. OpenMP threads sleep
# instead of spinning while they wait (models/__init__.py), so a busy neighbour on a shared machine
# does not make a 2-thread LightGBM call 40x slower.
bench: $(INSTALLED)
	$(BIN)/python -m bench.run $(if $(QUICK),--quick) $(if $(ONLY),--only $(ONLY))

bench-quick: $(INSTALLED)
	$(BIN)/python -m bench.run --quick

# Soak (bench/soak.py): the packaged service (`make run` builds it) on loopback at a steady rate
# for SOAK_SECONDS; fails on any failed request or memory growth beyond noise.
SOAK_SECONDS ?= 300

soak: $(INSTALLED)
	$(BIN)/python -m bench.soak --seconds $(SOAK_SECONDS)

# API fuzzing (bench/fuzz.py): schemathesis, every check, against the packaged service on
# loopback; FUZZ_EXAMPLES per operation, a new seed each run (FUZZ_SEED to replay one).
FUZZ_EXAMPLES ?= 500

fuzz: $(INSTALLED)
	$(BIN)/python -m bench.fuzz --examples $(FUZZ_EXAMPLES) $(if $(FUZZ_SEED),--seed $(FUZZ_SEED))

# Scale (bench/scale.py): the real validate, featurize, tune and train stages on ROWS synthetic
# declarations in a scratch workspace (under SCALE_DIR if set; KEEP=1 keeps it), SCALE_ROUNDS
# boosting rounds; one JSON line per stage (rows, seconds, peak RSS), then the validation metrics.
# With DASK_SCHEDULER_ADDRESS set, the stages use that cluster.
ROWS ?= 1000000
SCALE_ROUNDS ?= 50

scale: $(INSTALLED)
	$(BIN)/python -m bench.scale --rows $(ROWS) --rounds $(SCALE_ROUNDS) \
	  $(if $(filter 1,$(KEEP)),--keep) $(if $(SCALE_DIR),--dir "$(SCALE_DIR)")

# Backtest (bench/backtest.py): the whole pipeline in a scratch workspace on the history before MONTH
# (default: the last month of data/raw/; validation the 3 months before it), then MONTH scored by
# `customs-risk score` and by the packaged service, which must agree; lane shares against the
# settings and issue 13's policy figures, MONTH beside the validation window. KEEP=1 keeps the workspace.
backtest: $(INSTALLED)
	@$(BIN)/python -m bench.backtest $(if $(MONTH),--month $(MONTH)) $(if $(filter 1,$(KEEP)),--keep)

# The loop replayed (docs/loop.md): `customs-risk simulate` with params.yaml `simulate` on the
# embedded history, every strategy side by side; SIMULATE_DIR/periods.csv, summary.json,
# simulation.png and an MLflow run (experiment simulation). About 12 minutes on 2 cores.
SIMULATE_DIR ?= reports/simulation

simulate: $(INSTALLED)
	$(BIN)/customs-risk simulate --output "$(SIMULATE_DIR)"
