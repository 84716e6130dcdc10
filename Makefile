# Every target installs what it needs into .venv first, so a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export PYTHONUNBUFFERED := 1

.PHONY: install test lint demo bench bench-learning clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(PY) -m ruff check mixreorg cli tests benchmarks

test: install lint
	$(PY) -m pytest -q -p no:cacheprovider tests

demo: install
	$(PY) -m mixreorg.demo --out demo

bench: install
	$(PY) benchmarks/run_all.py

bench-learning: install
	$(PY) benchmarks/bench_learning.py

clean:
	rm -rf $(VENV) demo runs benchmarks/work
