# Plain commands, wrapped. Everything runs from ./.venv, created by `make install`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# npm ci writes it: tests/browser's JavaScript (a tus client the browser test serves)
NODE_STAMP := tests/browser/node_modules/.package-lock.json

.PHONY: install demo test bench lint format clean

install: $(STAMP) $(NODE_STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

# Exactly the versions of tests/browser/package-lock.json. Without npm the browser test that
# needs them skips, and says why.
$(NODE_STAMP): tests/browser/package.json tests/browser/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/browser --no-audit --no-fund; \
	else \
		echo "npm not found: tests/browser/test_tus_cors.py will skip (apt-get install npm)"; \
	fi

demo: install  # make demo DEMO_ARGS=--keep-running leaves the web server, worker and beat up
	$(PY) scripts/demo.py $(DEMO_ARGS)

# Two test processes (pytest-xdist): the suite waits on servers and workers much of the
# time. TEST_PROCESSES=0 runs it in this one process.
TEST_PROCESSES ?= 2
test: install
	$(PY) -m pytest -n $(TEST_PROCESSES)

bench: install
	$(PY) scripts/bench.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache generated_data bench_data tests/browser/node_modules
