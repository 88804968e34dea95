# Loupe: everything a fresh machine with only python3 and make needs.
#   make run    create .venv on first use, install Loupe, open it on the bundled sample
#   make test   same venv plus the dev extra; lint (ruff, import contracts, mypy on the
#               engine), then the whole suite, headless
#   make bench  the benchmarks (figures go to docs/benchmarks.md by hand)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: run test bench lint typecheck-tree screenshots clean install install-dev

run: $(STAMP_RUN)
	$(VENV)/bin/loupe-desktop --sample

test: lint
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

bench: $(STAMP_DEV)
	@for b in tests/bench/bench_*.py; do \
		echo "== $$b"; QT_QPA_PLATFORM=offscreen $(PY) $$b || exit 1; \
	done

# ruff; the import contracts in pyproject.toml; mypy on the engine.
lint: $(STAMP_DEV) typecheck-tree
	$(PY) -m ruff check engine desktop tests scripts
	$(VENV)/bin/lint-imports
	$(PY) -m mypy

# mypy cannot follow the editable install's finder (loupe.engine -> engine/), so it reads
# the engine through a link named as the package is installed.
typecheck-tree:
	@mkdir -p build/typecheck/loupe
	@ln -sfn ../../../engine build/typecheck/loupe/engine

screenshots: $(STAMP_DEV)
	QT_QPA_PLATFORM=offscreen $(PY) scripts/screenshots.py

install: $(STAMP_RUN)
install-dev: $(STAMP_DEV)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP_RUN): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -e .
	touch $@

$(STAMP_DEV): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -e '.[dev]'
	touch $@ $(STAMP_RUN)

clean:
	rm -rf $(VENV) build dist *.egg-info
