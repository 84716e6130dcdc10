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

# The main job on the built-in synthetic corpus, through the same commands a user types.
DEMO ?= demo
BIN := $(VENV)/bin
demo: install
	@test -f $(DEMO)/data/synth.json || $(BIN)/mixreorg data synth --out $(DEMO)/data
	rm -rf $(DEMO)/run $(DEMO)/segment
	$(BIN)/mixreorg train --config tiny --data $(DEMO)/data/train/manifest.json --out $(DEMO)/run
	$(BIN)/mixreorg eval --dataset synthetic --data-root $(DEMO)/data --checkpoint $(DEMO)/run/model \
		--out $(DEMO)/eval.json
	$(BIN)/mixreorg segment $(DEMO)/data/eval/images/000000.png $(DEMO)/data/eval/images/000001.png \
		--labels-file $(DEMO)/data/eval/classes.txt --checkpoint $(DEMO)/run/model --out $(DEMO)/segment
	@echo "demo done: mIoU table in $(DEMO)/eval.md, overlays in $(DEMO)/segment/, loss curves in $(DEMO)/run/loss_curves.png"

bench: install
	$(PY) benchmarks/run_all.py

bench-learning: install
	$(PY) benchmarks/bench_learning.py
	$(PY) benchmarks/bench_shape_probe.py

clean:
	rm -rf $(VENV) demo runs benchmarks/work
