# `make run` and `make test` are all a fresh machine needs (Python 3.11+).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: run test test-sqlite lint chromium openssl serve bench bench-growth soak e2e clean cluster

# Debian's packages that the tests (PgBouncer, Chromium, openssl), `make cluster` and `make soak` run.
APT_INSTALL = if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt $(VENV)/.runtime
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

## run: install, migrate the configured database (SQLite todoapp.db by default), serve with reload
## (no drain on reload: DRAIN_SECONDS=0 unless set)
run: $(VENV)/.runtime
	$(BIN)/alembic upgrade head
	DRAIN_SECONDS=$${DRAIN_SECONDS:-0} $(BIN)/uvicorn todoapp.main:app --reload --host $(HOST) --port $(PORT)

## lint: ruff (lint and format check) and mypy
lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## test: install, lint, then the whole suite on SQLite and PostgreSQL (with the browser
## tests of the web front end in Debian's Chromium). PostgreSQL is never skipped: the
## server at TEST_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres),
## else a throwaway one the suite starts itself (initdb in a temporary folder, a free
## port, stopped at the end; needs Debian's `postgresql` package, or TEST_PG_BINDIR
## naming a folder with initdb and pg_ctl); with neither, it stops at once saying so.
test: lint chromium openssl
	@command -v pgbouncer >/dev/null || { $(APT_INSTALL) pgbouncer; }
	$(BIN)/pytest -n 2 --dist loadgroup

## test-sqlite: lint, then the SQLite half alone (--sqlite-only): every test that needs
## PostgreSQL is deselected (the header says so), none runs and fails or skips for lack of it
test-sqlite: lint chromium openssl
	$(BIN)/pytest -n 2 --dist loadgroup --sqlite-only

## chromium: Debian's Chromium for the browser tests and `make e2e`, installed when missing
chromium:
	@test -x /usr/bin/chromium || { $(APT_INSTALL) chromium; }

## openssl: makes the certificate of the tests' TLS mail server; installed when missing
openssl:
	@command -v openssl >/dev/null || { $(APT_INSTALL) openssl; }

## serve: production serving, $(WORKERS) workers with uvloop and httptools; never in
## development: ENVIRONMENT is production unless set to another non-development name,
## so the server refuses to start without a strong SECRET_KEY.
## With METRICS_ENABLED=true the workers count in files of a fresh directory (metrics.py).
serve: export ENVIRONMENT := $(if $(filter-out development,$(ENVIRONMENT)),$(ENVIRONMENT),production)
serve: $(VENV)/.runtime
	$(BIN)/python -m todoapp check-config
	$(BIN)/alembic upgrade head
	if [ "$${METRICS_ENABLED:-false}" = true ] && [ -z "$${PROMETHEUS_MULTIPROC_DIR:-}" ]; then \
		export PROMETHEUS_MULTIPROC_DIR="$$(mktemp -d -t todoapp-metrics.XXXXXX)"; fi; \
	exec $(BIN)/uvicorn todoapp.main:app --host $(HOST) --port $(PORT) --workers $(WORKERS) \
		--loop uvloop --http httptools --no-access-log --timeout-graceful-shutdown 20

## cluster: the production shape on this machine (deploy/): HAProxy on 127.0.0.1:8080 in
## front of two app hosts (2 workers each, ports 8001 and 8002), PgBouncer in transaction
## mode (6433) before PostgreSQL (5432), and Redis (6379); Ctrl-C stops what it started.
cluster: $(VENV)/.dev
	@command -v haproxy >/dev/null && command -v pgbouncer >/dev/null && \
		command -v redis-server >/dev/null || { $(APT_INSTALL) haproxy pgbouncer redis-server; }
	$(BIN)/python -m deploy.cluster

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache

## e2e: /docs, /redoc and /scalar of a live server in headless Chromium (Debian's), every
## other host blocked; screenshots in build/e2e/. Not part of `make test`.
e2e: $(VENV)/.dev chromium
	$(BIN)/python e2e/run_e2e.py

## bench: load-test one production worker on PostgreSQL with wrk: every route and a frontend
## session mix, each against its framework-only ceiling, with issue #17's targets (about 15
## minutes; not part of test). A 2-second smoke test of every step: python bench/run.py --quick
bench: $(VENV)/.dev
	$(BIN)/python bench/run.py

## bench-growth: 10,000 users and 1.1 M todos on a fresh PostgreSQL database (built in
## under 60 s), then each list's page time against a 1-todo owner's, with issue #13's
## targets (a few minutes; not part of test). Table in build/bench/growth.md.
bench-growth: $(VENV)/.dev
	$(BIN)/python -m bench.growth

## soak: make cluster's shape (HAProxy, two app hosts of 2 workers, PgBouncer) on a private
## PostgreSQL cluster (15/soak on port 5433) and Redis (6380), 50 clients for 60 s through
## HAProxy while PostgreSQL restarts, Redis restarts and both hosts are restarted one
## after the other; every acknowledged write is checked (about 2 minutes; not part of
## test). Report in build/soak/report.md; exits non-zero on any violation.
soak: $(VENV)/.dev
	@command -v pg_createcluster >/dev/null && command -v redis-server >/dev/null && \
		command -v haproxy >/dev/null && command -v pgbouncer >/dev/null || { \
		$(APT_INSTALL) postgresql redis-server haproxy pgbouncer; }
	$(BIN)/python -m soak.run
