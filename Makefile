# Every target installs what it needs into .venv first, so a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export PYTHONUNBUFFERED := 1

.PHONY: install test lint demo bench bench-learning gpu-wheels clean

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

# The main job on the built-in synthetic corpus, through the same commands a user types: draw the appearance world,
# train tiny MixReorg on its captions, then Unpair-Seg's two stages on that frozen MixReorg (masks from the world's
# image-mask pairs, then their names from the captions), segment two held-out pictures with both, evaluate both on
# 500 (the animals' mIoU is reported apart). About 9 minutes on 2 cores after the install.
DEMO ?= demo
BIN := $(VENV)/bin
SEGMENT_DEMO := $(DEMO)/data/eval/images/000000.png $(DEMO)/data/eval/images/000003.png \
	--labels-file $(DEMO)/data/eval/classes.txt
demo: install
	@# Drawn once and reused; drawn again when missing, unfinished (synth.json comes last) or from an older demo.
	@$(PY) -c "import json, sys; sys.exit(json.load(open('$(DEMO)/data/synth.json'))['mask_size'] != 4000)" 2>/dev/null || \
		{ rm -rf $(DEMO)/data && $(BIN)/mixreorg data synth --out $(DEMO)/data --workers 2 --mask-size 4000; }
	rm -rf $(DEMO)/run $(DEMO)/masks $(DEMO)/align $(DEMO)/segment $(DEMO)/segment_mixreorg
	$(BIN)/mixreorg train --config tiny --data $(DEMO)/data/train/manifest.json --out $(DEMO)/run
	$(BIN)/mixreorg train --config unpairseg_tiny_masks --data $(DEMO)/data/masks/manifest.json --out $(DEMO)/masks \
		unpairseg.model.backbone=checkpoint:$(DEMO)/run/model train.max_steps=1000
	$(BIN)/mixreorg train --config unpairseg_tiny_align --data $(DEMO)/data/train/manifest.json --out $(DEMO)/align \
		unpairseg.align.masks_checkpoint=$(DEMO)/masks train.max_steps=300
	$(BIN)/mixreorg segment $(SEGMENT_DEMO) --checkpoint $(DEMO)/run/model --out $(DEMO)/segment_mixreorg
	$(BIN)/mixreorg segment $(SEGMENT_DEMO) --checkpoint $(DEMO)/align/model --out $(DEMO)/segment
	$(BIN)/mixreorg eval --dataset synthetic --data-root $(DEMO)/data --checkpoint $(DEMO)/run/model \
		--out $(DEMO)/eval_mixreorg.json
	$(BIN)/mixreorg eval --dataset synthetic --data-root $(DEMO)/data --checkpoint $(DEMO)/align/model \
		--out $(DEMO)/eval.json
	@echo "demo done: overlays in $(DEMO)/segment/ (MixReorg alone: $(DEMO)/segment_mixreorg/), per-class IoU in" \
		"$(DEMO)/eval.md and $(DEMO)/eval_mixreorg.md, loss curves in $(DEMO)/{run,masks,align}/loss_curves.png"
	@$(PY) -c "import json; m = [json.load(open(f'$(DEMO)/{n}.json'))['results'][0]['metrics'] for n in ('eval', 'eval_mixreorg')]; \
		print(f\"mIoU {m[0]['miou']:.1f} with Unpair-Seg's masks on MixReorg, {m[1]['miou']:.1f} with MixReorg alone; the animals' mIoU\"); \
		print(f\"{m[0]['objects_miou']:.1f} and {m[1]['objects_miou']:.1f}: below the 40 at which segments that follow the animals would name them,\")"
	@echo "which no model trained in this budget reaches yet: see benchmarks/README.md, 'Learning' and 'Unpair-Seg'"

bench: install
	$(PY) benchmarks/run_all.py

bench-learning: install
	$(PY) benchmarks/bench_learning.py --seeds 3 --seeds-of groupvit=5 mixreorg=5 --variants groupvit mixreorg \
		mixreorg_seg_attached mixreorg_no_contextual mixreorg_no_progressive mixreorg_no_restoration \
		mixreorg_no_segmentation mixreorg_progressive_detach mixreorg_progressive_average mixreorg_seg_hard \
		mixreorg_seg_temperature mixreorg_bn_projector mixreorg_bn_projector_running_norm groupvit_bn_projector \
		--jobs 2 --set train.torch_compile=true --name learning_appearance_cpu \
		--note "CPU, 2 cores, two trainings at once with one thread each; torch.compile on"
	$(PY) benchmarks/bench_unpairseg.py --seeds 3 --jobs 2
	$(PY) benchmarks/bench_shape_probe.py

# Wheels the GPU machine's image lacks (it reaches no package index), for benchmarks/gpu_learning.sh.
gpu-wheels:
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
		open_clip_torch==3.3.0 webdataset==0.2.111 braceexpand==0.1.7 ftfy==6.3.1 wcwidth==0.9.4 pycocotools==2.0.11

clean:
	rm -rf $(VENV) demo runs benchmarks/work
