# The two commands a new developer needs: `make run` and `make test`. Both create the
# virtualenv on first use, from the pinned requirement files.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PYTHONPATH := $(CURDIR)/shared:$(CURDIR)

# Every function folder is type-checked on its own: each has an `app.py`, which mypy
# would otherwise report as a duplicate module.
FUNCTION_DIRS := $(wildcard functions/*)

.PHONY: help venv local-venv run invoke test test-perf test-py313 lint typecheck pytest migrate openapi clean audit fuzz load load-failover bench bench-smoke validate build test-layer check-build check-clients check-arm64 check-sam-local lambda-image

help:  ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# Two steps: what serving needs (requirements-local.txt: the layer, the local server), so
# that a first `make run` installs only that; then the test and lint tools for `make test`.
# pip shows its own progress; each step says first what it installs.
$(BIN)/.local-installed: requirements-local.txt shared/requirements.txt
	@echo "Installing what the local server needs (requirements-local.txt) into $(VENV)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --progress-bar on -r requirements-local.txt
	@touch $@

$(BIN)/.installed: requirements-dev.txt $(BIN)/.local-installed
	@echo "Installing the test and lint tools (requirements-dev.txt) into $(VENV)"
	@$(BIN)/python -m pip install --progress-bar on -r requirements-dev.txt
	@touch $@

local-venv: $(BIN)/.local-installed  ## Create or update the virtualenv with what make run needs, no more

venv: $(BIN)/.installed  ## Create or update the virtualenv with everything make test needs

PORT ?= 3000

# The test suite again on Python 3.13, the Lambda runtime's version, in its own virtualenv
# (CI runs it beside `make test` on 3.11). shared/Makefile knows where 3.13 lives.
PY313_VENV ?= .venv-py313
PYTHON313 ?= $(shell env -u PYTHONPATH $(MAKE) --no-print-directory -s -C shared print-python313)

$(PY313_VENV)/.installed: requirements-dev.txt requirements-local.txt shared/requirements.txt
	@test -n "$(PYTHON313)" || { echo "no Python 3.13 found: pyenv install 3.13" >&2; exit 1; }
	test -x $(PY313_VENV)/bin/python || $(PYTHON313) -m venv $(PY313_VENV)
	$(PY313_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PY313_VENV)/bin/python -m pip install --quiet -r requirements-dev.txt
	touch $@

# On Lambda every function reaches PostgreSQL through RDS Proxy: the API's database tests
# run on SQLite and through PgBouncer here, and `make test` adds the direct connection
# (make run's). TEST_BACKENDS_PY313= runs all three.
TEST_BACKENDS_PY313 ?= sqlite,pgbouncer

test-py313: $(PY313_VENV)/.installed  ## pytest on Python 3.13, the Lambda runtime's version (SQLite and PgBouncer)
	TEST_BACKENDS=$(TEST_BACKENDS_PY313) $(PY313_VENV)/bin/pytest -n $(PYTEST_WORKERS) -m "$(PYTEST_MARKERS)" $(PYTEST_ARGS)

# ARGS go to the server: make run ARGS='--log-level warning' (python -m localapi --help).
run: local-venv migrate  ## Serve the whole API at http://127.0.0.1:3000 (PORT changes it, ARGS adds options)
	@$(BIN)/python -m localapi --port $(PORT) --reload $(ARGS)

# The sample events' <ACCESS_TOKEN> becomes TOKEN, or else a local user's token (signed up
# in the local database on first use); stdout carries the function's result alone.
invoke: local-venv  ## Call one function with an event: make invoke FUNCTION=HealthFunction EVENT=events/x.json [TOKEN=...]
	@test -n "$(FUNCTION)" || { echo "Name the function: make invoke FUNCTION=HealthFunction EVENT=events/schedule-health.json (EVENT=- reads stdin; without EVENT the event is {})" >&2; exit 2; }
	@# Its "migrated" line is not the result: only its errors are shown.
	@$(BIN)/python tools/migrate.py >/dev/null
	@$(BIN)/python -m localapi invoke $(FUNCTION) $(EVENT) $(if $(TOKEN),--token '$(TOKEN)')

migrate: local-venv  ## Upgrade the configured database (local SQLite file by default) to head, in one line
	@$(BIN)/python tools/migrate.py $(filter --debug,$(ARGS))

openapi: venv  ## Regenerate the OpenAPI document and migration head HealthFunction ships, and docs/API.md's route table
	$(BIN)/python tools/generate.py

test: lint typecheck pytest  ## ruff, mypy and pytest: what CI runs
	@# A shell test, not make's if function, whose arguments the messages' commas would split.
	@if [ -n "$(TEST_DATABASE_URL)" ]; then \
		echo "make test: SQLite and PostgreSQL ($(TEST_DATABASE_URL)), coverage floor $(COVERAGE_FLOOR) %"; \
	else \
		echo "make test: SQLite only (coverage floor $(COVERAGE_FLOOR) %); add PostgreSQL with TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test make test"; \
	fi

lint: venv  ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv  ## mypy --strict: the layer, localapi, migrations, tests, tools, each function
	$(BIN)/mypy shared/taskapi localapi migrations tests tools
	@for dir in $(FUNCTION_DIRS); do echo "mypy $$dir"; $(BIN)/mypy $$dir || exit 1; done

# pytest workers: one per core by default; PYTEST_WORKERS=0 runs in this process (pdb, -s).
PYTEST_WORKERS ?= auto

# Coverage of the layer, the functions and the migrations ([tool.coverage] in pyproject.toml),
# printed after the tests; below the floor the run fails. The floor is the measured figure
# rounded down: raise it as coverage rises. Without TEST_DATABASE_URL the PostgreSQL-only
# code (db.py's PostgreSQL set-up and failover, migrations/env.py's lock, a PostgreSQL-only
# migration) cannot run, so a SQLite-only run has its own, lower floor; CI runs both
# databases and keeps the higher one. COVERAGE= turns it off (a subset of the tests, or
# pdb); `make test-py313` runs without it.
COVERAGE_FLOOR ?= $(if $(TEST_DATABASE_URL),98,96)
COVERAGE ?= --cov --cov-report=term --cov-fail-under=$(COVERAGE_FLOOR)

# Tests that assert a time or run a load carry the `perf` marker: on a busy machine they
# fail for reasons that are no bug, so `make test` leaves them out and `make test-perf`
# (a CI step of its own) runs them. PYTEST_MARKERS= runs every test.
PYTEST_MARKERS ?= not perf

pytest: venv  ## pytest alone, with coverage (PYTEST_ARGS passes options, PYTEST_WORKERS=0 runs in one process, COVERAGE= skips coverage)
	$(BIN)/pytest -n $(PYTEST_WORKERS) -m "$(PYTEST_MARKERS)" $(COVERAGE) $(PYTEST_ARGS)

# One test at a time, so that each times itself and not its neighbours.
test-perf: venv  ## The timing and load tests (marker `perf`), which `make test` leaves out
	$(BIN)/pytest -n 0 -m perf $(PYTEST_ARGS)

fuzz: venv  ## schemathesis, every check, single requests and stateful sequences, longer than make test's run (FUZZ_EXAMPLES per operation)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-150} $(BIN)/pytest tests/test_fuzz_openapi.py $(PYTEST_ARGS)

load: venv  ## 10,000 requests from 32 clients through the local server on a fresh PostgreSQL database
	$(BIN)/python tools/load.py --requests $${REQUESTS:-10000} --clients $${CLIENTS:-32}

load-failover: venv  ## 16 clients for 20 s while every connection to the database is ended every 2 s
	$(BIN)/python tools/load.py --failover --clients $${CLIENTS:-16} \
		--duration $${DURATION:-20} --kill-every $${KILL_EVERY:-2}

# Figures are ratios against baselines measured in the same run: load elsewhere on the
# machine hits a subject and its baseline alike.
bench: venv  ## Cold starts, warm latency, login, local server, sizes: a table and bench/results.json
	$(BIN)/python -m bench

bench-smoke: venv  ## The benchmark code on tiny counts, without building (CI: it runs, timings unchecked)
	$(BIN)/python -m bench --smoke

# pip-audit over the layer's requirements (tools/audit.py says how its report is read). An
# audit that reached no vulnerability service checked nothing: it fails (status 3) unless
# AUDIT_ALLOW_UNCHECKED=1 says that is expected on this network.
audit: venv  ## Known vulnerabilities in the layer (findings fail unless security/pip-audit-ignore.txt lists them)
	$(BIN)/python tools/audit.py

clean:  ## Remove the virtualenvs, build output and caches
	rm -rf $(VENV) $(SAM_VENV) $(CLIENTS_VENV) .aws-sam build .pytest_cache .mypy_cache .ruff_cache
	rm -rf clients/node_modules clients/generated clients/build

# --- What client developers do with the OpenAPI document (clients/) --------------------
# The npm tools come from clients/package-lock.json; the Python generator has its own
# virtualenv (its dependencies must not move the application's pins). Generated code is
# made here, never committed. Screenshots of the browser test go to SCREENSHOT_DIR (default:
# the system's temporary folder), never into the repository.
CLIENTS_VENV ?= .venv-clients
export REDOCLY_NO_WARNINGS := const t = JSON.parse(require("fs").readFileSync(0, "utf8")).totals; \
	if (t.errors + t.warnings) { console.error(`redocly: $${t.warnings} warnings`); process.exit(1); }
NPX := cd clients && npx --no-install
OPENAPI := ../functions/health/openapi.json

clients/node_modules/.installed: clients/package-lock.json
	cd clients && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

$(CLIENTS_VENV)/.installed: clients/requirements.txt
	test -x $(CLIENTS_VENV)/bin/python || $(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CLIENTS_VENV)/bin/python -m pip install --quiet -r clients/requirements.txt
	touch $@

check-clients: venv clients/node_modules/.installed $(CLIENTS_VENV)/.installed  ## Linters, both generated clients' flows and a browser on /docs, against the local server
	$(NPX) spectral lint --fail-severity=warn $(OPENAPI)
	$(NPX) redocly lint --config redocly.yaml $(OPENAPI)
	@# Redocly fails on errors only; its warnings must be zero too.
	$(NPX) redocly lint --config redocly.yaml --format=json $(OPENAPI) 2>/dev/null \
		| node -e "$$REDOCLY_NO_WARNINGS"
	rm -rf clients/generated
	$(NPX) openapi-typescript $(OPENAPI) --output generated/api.d.ts
	$(NPX) tsc --noEmit --strict --project tsconfig.json
	$(NPX) tsc --project tsconfig.json
	env -u PYTHONPATH PATH="$(CURDIR)/$(CLIENTS_VENV)/bin:$$PATH" $(CLIENTS_VENV)/bin/openapi-python-client \
		generate --path functions/health/openapi.json --meta none \
		--output-path clients/generated/task_api_client
	cd clients && env -u PYTHONPATH MYPYPATH=generated ../$(CLIENTS_VENV)/bin/mypy --strict flow.py
	$(BIN)/python tools/check_clients.py 'node clients/build/flow.js' \
		'env PYTHONPATH=clients/generated $(CLIENTS_VENV)/bin/python clients/flow.py' \
		'node clients/build/browser.js'
	@# The same pages under a named stage's prefix (/dev/docs), once the local server can
	@# serve one (`python -m localapi --stage`).
	@if { $(BIN)/python -m localapi --help; $(BIN)/python -m localapi serve --help; } 2>/dev/null \
		| grep -q -- --stage; then \
		echo "$(BIN)/python tools/check_clients.py --stage dev 'node clients/build/browser.js'"; \
		$(BIN)/python tools/check_clients.py --stage dev 'node clients/build/browser.js'; \
	else echo "check-clients: python -m localapi has no --stage option: the staged run is skipped"; fi

# --- SAM: validate and build without Docker (template.yaml, shared/Makefile) -----------
# The SAM CLI lives in its own virtualenv: it pins boto3, pydantic and click versions that
# must not hold back the application's. The SAM commands run without the PYTHONPATH above.
SAM_VENV ?= .venv-sam
SAM := env -u PYTHONPATH SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam
# The layer built for this machine's architecture, which tests/test_build.py imports.
TEST_LAYER := build/layer-x86_64

$(SAM_VENV)/.installed: requirements-sam.txt
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet -r requirements-sam.txt
	touch $@

# `--lint` runs cfn-lint locally: a region is needed, an AWS account is not.
validate: $(SAM_VENV)/.installed  ## sam validate --lint (errors and warnings both fail)
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(SAM) validate --lint

# The architecture of every function and the layer: the template's Architecture parameter
# and the PLATFORM that shared/Makefile builds the layer's wheels for, always together.
# arm64 for AWS; ARCH=x86_64 (or ARCH=native) for `sam local` on an x86_64 machine.
ARCH ?= arm64
override ARCH := $(if $(filter native,$(ARCH)),$(if $(filter aarch64 arm64,$(shell uname -m)),arm64,x86_64),$(ARCH))
SAM_BUILD_ARGS := --parameter-overrides Architecture=$(ARCH)

# tests/test_build.py checks the artifacts' zipped sizes and imports them.
build: $(SAM_VENV)/.installed  ## sam build (no Docker) into .aws-sam/build: arm64, or ARCH=x86_64 / ARCH=native
	PLATFORM=$(ARCH) $(SAM) build $(SAM_BUILD_ARGS)

test-layer:  ## Build the layer for this machine (x86_64) into build/ for tests/test_build.py
	env -u PYTHONPATH $(MAKE) -C shared build-SharedLayer \
		ARTIFACTS_DIR=$(CURDIR)/$(TEST_LAYER) PLATFORM=x86_64

check-build: validate build test-layer  ## What CI runs before the tests

# Needs root (debootstrap), qemu-user-static and debootstrap; the arm64 root is cached in
# ARM64_ROOT (default /var/cache/taskapi-arm64/trixie) and made when missing.
check-arm64: venv build  ## The arm64 artifacts served under emulation; their glibc needs at most 2.34
	$(BIN)/python tools/check_arm64.py

# Needs a running Docker engine; root and debootstrap when the stand-in has to be built.
lambda-image: venv $(SAM_VENV)/.installed  ## The Lambda Python 3.13 base image for this machine: pulled, or a Debian stand-in under its name
	$(BIN)/python tools/lambda_image.py

# Needs root (dockerd, debootstrap), Debian's docker.io and debootstrap, and the PostgreSQL
# of TEST_DATABASE_URL. Starts dockerd when no engine runs (and stops it after); the base
# image's stand-in root is cached in LAMBDA_ROOT (default /var/cache/taskapi-lambda).
check-sam-local: venv $(SAM_VENV)/.installed  ## sam build + sam local invoke/start-api (EAGER) for this machine's architecture: the whole flow and a 50-create burst on a fresh PostgreSQL database
	$(BIN)/python tools/check_sam_local.py
