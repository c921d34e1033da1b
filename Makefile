# taskyard: two commands set everything up on a fresh clone.
#   make run   the whole stack locally (API, relay, workers, beat, Flower, fakes)
#   make test  ruff + vulture + mypy + pytest against the real PostgreSQL and Redis
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: help run test lint typecheck pytest chaos bench demo os-tools clean

help:
	@echo "make run    start the whole stack (Ctrl-C stops it)"
	@echo "make test   ruff + vulture + mypy + pytest (real PostgreSQL and Redis)"
	@echo "make chaos  only the reliability (chaos) suite"
	@echo "make bench  the benchmark report under bench/results/"
	@echo "make demo   a guided tour of every pattern (needs make run in another terminal)"

$(PY):
	@py=$$(scripts/find-python.sh) && echo "creating $(VENV) with $$py" && "$$py" -m venv $(VENV)
	@$(PIP) install --upgrade pip

# One stamp per requirements set: reinstall only when a pinned file changes.
$(VENV)/.test-installed: requirements/base.txt requirements/test.txt requirements/constraints.txt | $(PY)
	$(PIP) install -r requirements/test.txt
	@touch $@

$(VENV)/.local-installed: $(VENV)/.test-installed requirements/local.txt
	$(PIP) install -r requirements/local.txt
	@touch $@

$(VENV)/.bench-installed: $(VENV)/.test-installed requirements/bench.txt
	$(PIP) install -r requirements/bench.txt
	@touch $@

# The trace viewer (Spotlight, from npm; docs/tracing.md). Without npm, `make run` runs without it.
SPOTLIGHT := scripts/spotlight/node_modules/.installed
$(SPOTLIGHT): scripts/spotlight/package.json scripts/spotlight/package-lock.json
	@if command -v npm >/dev/null; then npm ci --prefix scripts/spotlight --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm not found: make run starts without the trace viewer (apt-get install nodejs npm)"; fi

run: $(VENV)/.local-installed $(SPOTLIGHT)
	$(PY) scripts/run.py

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/vulture

typecheck: $(VENV)/.test-installed
	$(VENV)/bin/mypy .

# Two xdist workers, each with its own database and Redis DB (tests/isolation.py); the chaos
# scenarios stay together on one of them (xdist_group "chaos"). PYTEST_ARGS= runs serially.
PYTEST_ARGS ?= -n 2 --dist loadgroup
pytest: $(VENV)/.test-installed
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

chaos: $(VENV)/.test-installed
	$(VENV)/bin/pytest -m chaos $(CHAOS_ARGS)  # one at a time, alone: its figures are published

# The load tool is wrk (Debian package); installed here when missing and possible.
bench: $(VENV)/.bench-installed
	@command -v wrk >/dev/null || apt-get install -y -qq --no-install-recommends wrk >/dev/null || \
		{ echo "make bench needs wrk: apt-get install wrk"; exit 1; }
	$(PY) -m bench.run $(BENCH_ARGS)

# OS packages some tests use: chromium (the admin browser test), prometheus (promtool checks the
# alert rules), rabbitmq-server (the RabbitMQ chaos scenarios; this machine kind runs it already),
# wrk (bench). Where one is missing its tests skip, saying why; in CI (CI=true) they fail. Each
# package is installed on its own, so one that cannot be had doesn't take the others with it.
OS_PACKAGES := chromium prometheus rabbitmq-server wrk
os-tools:
	@export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -qq >/dev/null 2>&1 || echo "os-tools: apt-get update FAILED; trying the package lists there are"; \
	failed=""; \
	for pkg in $(OS_PACKAGES); do \
		log=$$(mktemp); \
		if apt-get install -y -qq --no-install-recommends $$pkg >$$log 2>&1; then \
			echo "os-tools: $$pkg installed"; \
		else \
			echo "os-tools: FAILED to install $$pkg:"; tail -n 5 $$log | sed 's/^/    /'; failed="$$failed $$pkg"; \
		fi; \
		rm -f $$log; \
	done; \
	if [ -n "$$failed" ]; then echo "os-tools: NOT installed:$$failed (their tests skip, and fail in CI)"; exit 1; fi

# With the stack from `make run` up (another terminal): every pattern, as a client sees it.
demo: $(VENV)/.local-installed
	$(PY) scripts/demo.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache var/ scripts/spotlight/node_modules
