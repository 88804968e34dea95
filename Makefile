# Loupe: everything a fresh machine with only python3 and make needs.
#   make run    create .venv on first use, install Loupe, open it on the bundled sample
#   make test   same venv plus the dev extra; lint + the whole suite, headless
#   make bench  the benchmarks (figures go to docs/benchmarks.md by hand)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: run test bench lint screenshots clean install install-dev

run: $(STAMP_RUN)
	$(VENV)/bin/loupe-desktop --sample

test: $(STAMP_DEV)
	$(PY) -m ruff check engine desktop tests scripts
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

bench: $(STAMP_DEV)
	@for b in tests/bench/bench_*.py; do \
		echo "== $$b"; QT_QPA_PLATFORM=offscreen $(PY) $$b || exit 1; \
	done

lint: $(STAMP_DEV)
	$(PY) -m ruff check engine desktop tests scripts

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
