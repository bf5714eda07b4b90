# The two commands of the README's quick start. Each sets itself up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8765
# Test processes make test runs the suite in (pytest-xdist; 0: one process).
# Two halve its time on a 2-core machine: a test's hubs, servers and browser
# mostly wait on each other.
TEST_WORKERS ?= 2

.PHONY: demo hub test lint bench setup machine widgets lock docs

# The virtual environment, with the versions the tests run on (constraints.txt).
$(BIN)/rtkit: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
		{ echo "rtkit needs Python 3.11 or newer: make PYTHON=python3.11 ..." >&2; exit 1; }
	@command -v npm >/dev/null || \
		{ echo "rtkit's widgets are built with Node.js 18+ and npm: install Node.js 20" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

tests/js/node_modules: tests/js/package.json tests/js/package-lock.json
	npm ci --prefix tests/js --no-audit --no-fund --silent
	touch $@

benchmarks/node_modules: benchmarks/package.json benchmarks/package-lock.json
	npm ci --prefix benchmarks --no-audit --no-fund --silent
	touch $@

# The widgets' front-end: npm ci && esbuild into rtkit/widgets/static/widgets.js
# (a build output; pip install runs the same step through hatch_build.py).
# make test also type-checks its JSDoc with tsc (npm run check).
WIDGETS_JS := rtkit/widgets/static/widgets.js
$(WIDGETS_JS): rtkit/widgets/js/package.json rtkit/widgets/js/package-lock.json $(wildcard rtkit/widgets/js/src/*.js)
	npm ci --prefix rtkit/widgets/js --no-audit --no-fund --silent
	npm run --prefix rtkit/widgets/js --silent build

widgets: $(WIDGETS_JS)

## What the tests need from the machine (Chromium, nginx, Redis, Node.js):
## installs what is missing as root, else names the command to run.
machine:
	scripts/setup-test-machine

setup: $(BIN)/rtkit tests/js/node_modules $(WIDGETS_JS)

## JupyterLab with rtkit, the tutorial notebooks and a live feed; prints the URL.
demo: $(BIN)/rtkit $(WIDGETS_JS)
	$(BIN)/rtkit demo

## Run a hub on 127.0.0.1:$(PORT) with the embedded (memory) store.
hub: $(BIN)/rtkit
	$(BIN)/rtkit hub --allow-anonymous --port $(PORT)

## The documentation site (mkdocs.yml, docs/, the API reference from the
## docstrings) into site/; .venv/bin/mkdocs serve previews it.
docs: $(BIN)/rtkit
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	@echo "the site is in site/ (open site/index.html)"

## Run the whole test suite (lint, types, the docs build, unit, contract and
## integration tests, the same without the transport's fast paths, notebooks).
## The second run leaves out the browser tests, the slow ones (kill -9,
## restarts: what they test is the store's and the client's, not how the hub
## writes to its sockets) and what does not depend on the transport's mode
## (TRANSPORT_AGNOSTIC in tests/conftest.py).
## The notebooks find their hub through rtkit's pytest plugin (-p). The two
## pytest runs spread whole test files over TEST_WORKERS processes.
test: machine setup
	$(BIN)/ruff check rtkit jupyter_extension tests benchmarks scripts
	$(BIN)/ruff format --check rtkit jupyter_extension tests benchmarks scripts
	$(BIN)/mypy
	npm run --prefix rtkit/widgets/js --silent check
	$(BIN)/python scripts/lock.py check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/docs-check
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile
	@echo "Again with the fast paths into library internals off (rtkit/hub/transport):"
	RTKIT_FAST_PATHS=0 $(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile \
		-m "not browser and not slow and not transport_agnostic"
	$(BIN)/pytest -p rtkit.pytest_plugin --nbval notebooks --nbval-sanitize-with notebooks/sanitize.cfg

## Re-resolve today's newest allowed versions into constraints.txt, then
## reinstall them; run make test before committing the new constraints.txt.
lock: $(BIN)/rtkit
	$(BIN)/python scripts/lock.py write
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(BIN)/rtkit

bench: $(BIN)/rtkit benchmarks/node_modules
	$(BIN)/python benchmarks/run.py
