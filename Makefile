# liveboard — the contract's commands (CONTRACT §1). Everything installs from the lock files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: venv run test test-unit lint lock clean bench bench-quick soak fuzz

# Shared set-up: the virtualenv, the locked runtime dependencies and liveboard itself.
$(BIN)/.runtime: requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --require-hashes -r requirements.lock
	$(PIP) install --no-deps -e .
	@touch $@

# Test extras on top of the runtime set-up.
$(BIN)/.test: $(BIN)/.runtime requirements-test.lock
	$(PIP) install --require-hashes -r requirements-test.lock
	@touch $@

# Benchmark extras (load generator, the python-socketio peer, plots, profiler).
$(BIN)/.bench: $(BIN)/.runtime requirements-bench.lock
	$(PIP) install --require-hashes -r requirements-bench.lock
	@touch $@

venv: $(BIN)/.runtime

run: venv
	$(BIN)/liveboard serve --dev --host $(HOST) --port $(PORT)

test: $(BIN)/.test $(BIN)/.bench
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(BIN)/.test $(BIN)/.bench
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: $(BIN)/.test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# The benchmark suite against python-socketio (≤ 10 min; needs redis-server and PostgreSQL):
# results in bench/results/, the table and plot in docs/benchmarks.md.
bench: $(BIN)/.bench
	$(BIN)/python -m bench.run --profile --update-docs

# A ≤ 1 minute smoke run of every scenario, so the suite cannot rot.
bench-quick: $(BIN)/.bench
	$(BIN)/python -m bench.run --quick

# The attack and hostile-client suites at full counts (docs/reliability.md), ~15 min on 2 cores.
fuzz: $(BIN)/.test
	LIVEBOARD_FUZZ_COUNT=60000 LIVEBOARD_PROPERTY_EXAMPLES=3000 \
	LIVEBOARD_SCHEMATHESIS_EXAMPLES=400 LIVEBOARD_CHURN_CONNECTIONS=20000 \
	$(BIN)/python -m pytest tests/fuzz tests/integration/test_hostile_clients.py \
	    tests/integration/test_authz_matrix.py -s $(PYTEST_ARGS)

# The long soak: 10 minutes of churn, mutations and a Redis restart on two instances.
soak: $(BIN)/.test
	$(BIN)/python -m tests.soak.runner --duration 600

# Regenerate the lock files after editing pyproject.toml (needs uv: pip install uv).
lock:
	uv lock
	uv export --frozen --no-dev --no-emit-project --format requirements-txt > requirements.lock
	uv export --frozen --no-dev --extra test --no-emit-project --format requirements-txt > requirements-test.lock
	uv export --frozen --no-dev --extra bench --no-emit-project --format requirements-txt > requirements-bench.lock

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
