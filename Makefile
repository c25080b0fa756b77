# liveboard — the contract's commands (CONTRACT §1). Everything installs from the lock files.
#
# How the install stays reproducible: the pip that `python3 -m venv` ships differs by Python
# release (23.2.1 on 3.11.7) and some of those pips mis-resolve a locked package asked for with an
# extra by another locked package (picows needs python-socks[asyncio]: pip 23.2 fetched the
# newest python-socks for the extra and refused it in --require-hashes mode, so the lock broke
# the day python-socks 3.2.2 was released). So that pip does one thing only: it installs uv at
# one version whose wheels' hashes are in requirements-uv.lock (a single package, no dependencies,
# no extras, which every pip since 20.3 reads the same way). uv then installs every other lock
# with hashes required, and the same uv wrote them (`make lock`). liveboard itself is installed
# without build isolation, its build backend taken from requirements-build.lock, so no step asks
# the index for "the newest" anything (hatchling needs `editables` for the editable install). tools/lockcheck.py checks each lock is closed: every
# requirement of every locked package, extras included, is locked at one version (`make
# check-locks`, and tests/unit/test_locks.py in `make test`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet
UV := $(BIN)/uv
# uv reads no pip configuration; it takes its index from the environment (UV_INDEX_URL, …) only.
UV_PIP := $(UV) --quiet pip install --python $(BIN)/python --require-hashes
UV_VERSION ?= 0.13.9
HOST ?= 127.0.0.1
PORT ?= 8000
LOCKS := requirements.lock requirements-test.lock requirements-bench.lock requirements-build.lock requirements-uv.lock requirements-docs.lock

.PHONY: venv run wait test test-unit lint lock lock-uv check-locks clean bench bench-quick soak fuzz asyncapi

# The virtualenv and the pinned installer.
$(UV): requirements-uv.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --require-hashes --no-deps -r requirements-uv.lock
	@touch $@

# Shared set-up: the locked runtime dependencies and liveboard itself.
$(BIN)/.runtime: $(UV) requirements.lock requirements-build.lock pyproject.toml
	$(UV_PIP) -r requirements.lock -r requirements-build.lock
	$(UV) --quiet pip install --python $(BIN)/python --no-deps --no-build-isolation -e .
	@touch $@

# Test extras on top of the runtime set-up.
$(BIN)/.test: $(BIN)/.runtime requirements-test.lock
	$(UV_PIP) -r requirements-test.lock
	@touch $@

# Benchmark extras (load generator, the python-socketio peer, plots, profiler).
$(BIN)/.bench: $(BIN)/.runtime requirements-bench.lock
	$(UV_PIP) -r requirements-bench.lock
	@touch $@

# The API reference generator (pdoc and its dependencies, requirements-docs.lock): a lock of
# its own, made by `make lock-docs`, so the docs tool changes none of the project's locks.
$(BIN)/.docs: $(UV) requirements-docs.lock
	$(UV_PIP) -r requirements-docs.lock
	@touch $@

venv: $(BIN)/.runtime

# The npm side (clients/js): the pinned TypeScript that checks the generated declarations,
# installed by `npm ci` from the committed package-lock.json (the npm registry only).
NPM ?= npm
JS := clients/js
$(JS)/node_modules/.package-lock.json: $(JS)/package.json $(JS)/package-lock.json
	cd $(JS) && $(NPM) ci --no-audit --no-fund
	@touch $@

$(JS)/node_modules: $(JS)/node_modules/.package-lock.json

# clients/react (@liveboard/react): React, Vitest, @testing-library/react and happy-dom from its
# committed package-lock.json; @liveboard/client is ../js, linked.
REACT := clients/react
$(REACT)/node_modules/.package-lock.json: $(REACT)/package.json $(REACT)/package-lock.json
	cd $(REACT) && $(NPM) ci --no-audit --no-fund
	@touch $@

# The packages a user installs: `npm pack` of clients/js (@liveboard/client) and clients/react
# (@liveboard/react) into dist/ (each `prepack` builds its dist/ with the pinned esbuild and tsc). tests/integration/
# test_js_client_package.py installs that tarball into an empty project and uses it against a
# live server. After changing clients/js/src, `make static-js` rebuilds the bundle the server
# serves at /static/liveboard.js (committed: the Python package installs without Node; a test
# fails while it is stale).
.PHONY: dist dist-npm static-js
dist: dist-npm
dist-npm: $(JS)/node_modules/.package-lock.json $(REACT)/node_modules/.package-lock.json
	mkdir -p dist
	cd $(JS) && $(NPM) pack --pack-destination ../../dist
	cd $(REACT) && $(NPM) pack --pack-destination ../../dist

# The tarballs as files make can date: packed again when either package's source changes (the
# React example, below, installs them).
NPM_PACKED := dist/.npm-packed
$(NPM_PACKED): $(JS)/package.json $(REACT)/package.json $(JS)/README.md $(REACT)/README.md \
		$(wildcard $(JS)/src/*.ts $(JS)/scripts/*.mjs $(REACT)/src/*.ts $(REACT)/scripts/*.mjs) \
		$(JS)/node_modules/.package-lock.json $(REACT)/node_modules/.package-lock.json
	$(MAKE) dist-npm
	@touch $@

static-js: $(JS)/node_modules/.package-lock.json
	cd $(JS) && $(NPM) run build:static

# The API reference of both packages, generated from their types by TypeDoc (pinned in clients/js)
# into build/api/client and build/api/react; a warning (an undocumented exported type) fails it.
.PHONY: api-docs
api-docs: $(JS)/node_modules/.package-lock.json $(REACT)/node_modules/.package-lock.json
	cd $(JS) && $(NPM) run build && $(NPM) run docs
	cd $(REACT) && ../js/node_modules/.bin/typedoc --tsconfig tsconfig.build.json \
		--out ../../build/api/react --treatWarningsAsErrors --readme none src/index.ts

# The example integration (examples/external-app, a Node.js app with `pg`), whose test runs in
# `make test`: its dependencies from its committed package-lock.json, the same way.
EXAMPLE := examples/external-app
$(EXAMPLE)/node_modules/.package-lock.json: $(EXAMPLE)/package.json $(EXAMPLE)/package-lock.json
	cd $(EXAMPLE) && $(NPM) ci --no-audit --no-fund
	@touch $@

# The example React app (examples/react-board, Vite), whose browser test runs in `make test`:
# React and Vite from its committed package-lock.json, @liveboard/client and @liveboard/react from
# the tarballs in dist/ (`file:` dependencies: installed as from the registry, not linked).
BOARD := examples/react-board
$(BOARD)/node_modules/.package-lock.json: $(BOARD)/package.json $(BOARD)/package-lock.json $(NPM_PACKED)
	cd $(BOARD) && $(NPM) ci --no-audit --no-fund
	@touch $@

# Regenerate what liveboard.protocol generates: docs/asyncapi.json (the AsyncAPI document that
# GET /asyncapi.json serves) and clients/js/src/protocol.ts (TypeScript declarations). A test
# fails while either is stale.
asyncapi: $(BIN)/.runtime
	$(BIN)/python -m tools.protocol_docs

run: venv
	$(BIN)/liveboard serve --dev --host $(HOST) --port $(PORT)

# Waits until a server started with `make run &` answers /healthz (the first `make run` installs
# the dependencies first); gives up after WAIT_SECONDS.
WAIT_SECONDS ?= 300
wait:
	@$(PYTHON) -m tools.wait_for_server http://$(HOST):$(PORT)/healthz $(WAIT_SECONDS)

# `make test` runs the suite on PYTEST_WORKERS processes (pytest-xdist): most tests wait on
# servers, subprocesses, sockets and timeouts rather than the CPU, so 3 workers on 2 cores cut the
# wall time without starving them. Whole modules go to one worker (--dist loadscope): a module's
# tests run in file order, sharing its module-scoped server, database and browser as in a serial
# run. Each worker has its own session (its own PostgreSQL database, servers and redis-servers on
# free ports). Tests marked `alone` (bounds on how fast a server under attack still serves others,
# which other workers' CPU use would break on 2 cores) run after that, serially, with nothing
# beside them. `make test PYTEST_WORKERS=0` runs the whole suite serially in one process.
PYTEST_WORKERS ?= 3
ifeq ($(PYTEST_WORKERS),0)
PYTEST_RUN = $(BIN)/python -m pytest $(PYTEST_ARGS)
else
# The serial pass selects nothing when PYTEST_ARGS leaves out every `alone` test: exit 5 is fine.
PYTEST_RUN = $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadscope -m "not alone" \
		$(PYTEST_ARGS) \
	&& { $(BIN)/python -m pytest -m alone $(PYTEST_ARGS) || [ $$? -eq 5 ]; }
endif

test: $(BIN)/.test $(BIN)/.bench $(BIN)/.docs $(JS)/node_modules/.package-lock.json $(EXAMPLE)/node_modules/.package-lock.json \
		$(REACT)/node_modules/.package-lock.json $(BOARD)/node_modules/.package-lock.json
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools
	$(BIN)/mypy
	$(PYTEST_RUN)

test-unit: $(BIN)/.test $(BIN)/.bench $(BIN)/.docs $(JS)/node_modules/.package-lock.json
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: $(BIN)/.test $(BIN)/.bench $(BIN)/.docs
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools
	$(BIN)/mypy

# Each lock file closed under its packages' own requirements, extras included (offline: the
# packages' metadata comes from the installed virtualenv).
check-locks: $(BIN)/.test $(BIN)/.bench $(BIN)/.docs
	$(BIN)/python -m tools.lockcheck $(LOCKS)

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
	LIVEBOARD_SCHEMATHESIS_EXAMPLES=400 LIVEBOARD_CHURN_CONNECTIONS=20000 LIVEBOARD_ATHERIS_SECONDS=300 \
	$(BIN)/python -m pytest tests/fuzz tests/integration/test_hostile_clients.py \
	    tests/integration/test_authz_matrix.py -s $(PYTEST_ARGS)

# The long soak: 10 minutes of churn, mutations and a Redis restart on two instances.
soak: $(BIN)/.test
	$(BIN)/python -m tests.soak.runner --duration 600

# Retries through a proxy that loses 30 % of the answers, at the issue's size: 10,000 tasks
# created and moved by 20 clients (`make test` runs 500), on SQLite and PostgreSQL.
.PHONY: soak-retries
soak: soak-retries
soak-retries: $(BIN)/.test
	LIVEBOARD_RETRY_TASKS=10000 $(BIN)/python -m pytest tests/integration/test_rest_retries.py $(PYTEST_ARGS)

# Placement at the issue's counts: 10,000 insertions at one spot (SQLite and PostgreSQL) and
# 1,000 pairs of simultaneous drops through two instances; prints the rank sizes (-s).
.PHONY: soak-placement
soak: soak-placement
soak-placement: $(BIN)/.test $(JS)/node_modules/.package-lock.json
	LIVEBOARD_PLACEMENT_INSERTS=10000 LIVEBOARD_PLACEMENT_PAIRS=1000 $(BIN)/python -m pytest -s \
		tests/integration/test_placement.py -k "insertions or simultaneous" $(PYTEST_ARGS)

# The multi-instance tests' variants on other brokers that `make test` leaves out for their time
# (~3 min): on the Redis Cluster and the postgres broker, events in order on three instances,
# presence across them, presence healing after an instance's stall, pause and cut (a partition:
# proxies between it and the broker); on the postgres broker a dead instance's users leaving and
# `--workers 2`. `make test` runs the outage, kill and member-removal partition tests on both.
.PHONY: soak-brokers
soak: soak-brokers
soak-brokers: $(BIN)/.test
	LIVEBOARD_BROKERS_FULL=1 $(BIN)/python -m pytest tests/integration/test_cluster_events.py \
		tests/integration/test_cluster_presence.py tests/integration/test_presence_outages.py \
		tests/integration/test_cluster_postgres.py -m soak -s $(PYTEST_ARGS)

# Presence across every outage of docs/reliability.md (stalls of 5-45 s, partitions from Redis),
# all at once, ~1.5 min; part of `make fuzz` (`make test` runs a 15 s stall and a 15 s pause).
PRESENCE_OUTAGES ?= stall:5,stall:15,stall:25,stall:45,pause:15,cut:15
.PHONY: fuzz-presence
fuzz: fuzz-presence
fuzz-presence: $(BIN)/.test
	LIVEBOARD_PRESENCE_OUTAGES=$(PRESENCE_OUTAGES) \
	$(BIN)/python -m pytest tests/integration/test_presence_outages.py -s $(PYTEST_ARGS)

# Regenerate the lock files after editing pyproject.toml, with the pinned uv, then install them
# and check they are closed.
lock: $(UV)
	$(UV) lock
	$(UV) export --frozen --no-dev --no-emit-project --format requirements-txt -o requirements.lock
	$(UV) export --frozen --no-dev --extra test --no-emit-project --format requirements-txt -o requirements-test.lock
	$(UV) export --frozen --no-dev --extra bench --no-emit-project --format requirements-txt -o requirements-bench.lock
	$(UV) export --frozen --only-group build --no-emit-project --format requirements-txt -o requirements-build.lock
	$(MAKE) check-locks

# Regenerate requirements-docs.lock (pdoc at PDOC_VERSION, every file's hash) with the pinned uv.
PDOC_VERSION ?= 16.0.0
.PHONY: lock-docs
lock-docs: $(UV)
	echo "pdoc==$(PDOC_VERSION)" | $(UV) pip compile --generate-hashes --python-version 3.11 \
		--no-header --quiet - -o requirements-docs.lock

# Move the pinned installer to UV_VERSION: the hashes of every file that release publishes.
lock-uv: $(UV)
	echo "uv==$(UV_VERSION)" | $(UV) pip compile --generate-hashes --no-header --quiet - -o requirements-uv.lock

# Distributions: the Python client's wheels (liveboard-protocol, liveboard-client) into dist/,
# built from src/liveboard/{protocol,client} with the locked hatchling (tools/dist_python.py).
.PHONY: dist dist-python
dist: dist-python
dist-python: $(BIN)/.runtime
	$(BIN)/python -m tools.dist_python dist

# The Python SDK's API reference, generated from its types and docstrings by pdoc into
# build/api/python/ (open index.html). tests/unit/test_python_api_docs.py generates it too.
.PHONY: docs-python
docs-python: $(BIN)/.runtime $(BIN)/.docs
	$(BIN)/python -m tools.api_docs build/api/python

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache $(JS)/node_modules $(EXAMPLE)/node_modules \
		$(REACT)/node_modules $(BOARD)/node_modules

# Redis Cluster failovers mid-stream, many rounds (`make test` runs one CLUSTER FAILOVER and one
# killed master; the killed node rejoins as a replica between rounds), on a private 3 + 3 cluster.
CLUSTER_FAILOVER_ROUNDS ?= 10
.PHONY: soak-redis-cluster
soak: soak-redis-cluster
soak-redis-cluster: $(BIN)/.test
	LIVEBOARD_CLUSTER_FAILOVER_ROUNDS=$(CLUSTER_FAILOVER_ROUNDS) $(BIN)/python -m pytest -s \
		tests/integration/test_redis_cluster.py -k failovers $(PYTEST_ARGS)
