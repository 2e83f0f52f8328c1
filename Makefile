# Two commands for a newcomer: `make serve` runs the service, `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: serve test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

serve: $(VENV)/.installed
	$(VENV)/bin/mercurio serve

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check mercurio tests bench
	$(VENV)/bin/mypy

# Two workers, each test file on one of them (its module fixtures shared, its servers its own):
# the suite mostly waits on server processes, so two halves take about half the time.
TEST_JOBS ?= 2

test: lint
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile

bench: $(VENV)/.installed
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache .mypy_cache
