# The two commands of the README's quick start. Each sets itself up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8765

.PHONY: demo hub test lint bench setup widgets

$(BIN)/rtkit: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

tests/js/node_modules: tests/js/package.json tests/js/package-lock.json
	npm ci --prefix tests/js --no-audit --no-fund --silent
	touch $@

benchmarks/node_modules: benchmarks/package.json benchmarks/package-lock.json
	npm ci --prefix benchmarks --no-audit --no-fund --silent
	touch $@

# The widgets' front-end: npm ci && esbuild into rtkit/widgets/static/ (a build
# output; pip install runs the same step through hatch_build.py).
WIDGETS_JS := rtkit/widgets/static/chart.js
$(WIDGETS_JS): rtkit/widgets/js/package.json rtkit/widgets/js/package-lock.json $(wildcard rtkit/widgets/js/src/*.js)
	npm ci --prefix rtkit/widgets/js --no-audit --no-fund --silent
	npm run --prefix rtkit/widgets/js --silent build

widgets: $(WIDGETS_JS)

setup: $(BIN)/rtkit tests/js/node_modules $(WIDGETS_JS)

## JupyterLab with rtkit, the tutorial notebooks and a live feed; prints the URL.
demo: $(BIN)/rtkit $(WIDGETS_JS)
	$(BIN)/rtkit demo

## Run a hub on 127.0.0.1:$(PORT) with the embedded (memory) store.
hub: $(BIN)/rtkit
	$(BIN)/rtkit hub --allow-anonymous --port $(PORT)

## Run the whole test suite (lint, types, unit and integration tests).
test: setup
	$(BIN)/ruff check rtkit jupyter_extension tests benchmarks
	$(BIN)/ruff format --check rtkit jupyter_extension tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest
	$(BIN)/pytest --nbval notebooks --nbval-sanitize-with notebooks/sanitize.cfg

bench: $(BIN)/rtkit benchmarks/node_modules
	$(BIN)/python benchmarks/run.py
