#!/usr/bin/env bash
# The learning comparison at the paper's width, in one call on a GPU machine (about 7 minutes on one H200):
# groupvit_vits16 and mixreorg_vits16 trained at 224 px on the appearance world for as many steps as MINUTES
# allow each, then the same naming and grouping table as the CPU runs, under benchmarks/results/ with the
# device's name. Nothing is downloaded: the packages the device image lacks travel as wheels.
#
#   here, once:       make gpu-wheels                     (fills .whl/, about 3 MB)
#   device tool:      run(command="bash benchmarks/gpu_learning.sh", carry=[".whl"], timeout_s=600)
#   a CPU smoke test: DEVICE=cpu SCALE=tiny IMAGE_SIZE=96 MINUTES=0.05 TRAIN_SIZE=200 EVAL_SIZE=4 \
#                     NAME=smoke bash benchmarks/gpu_learning.sh   (tests/test_gpu_learning_script.py runs one)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
MINUTES=${MINUTES:-2}
TRAIN_SIZE=${TRAIN_SIZE:-12000}
EVAL_SIZE=${EVAL_SIZE:-200}
SCALE=${SCALE:-vits16}
IMAGE_SIZE=${IMAGE_SIZE:-256}
NAME=${NAME:-learning_appearance_${DEVICE/cuda/gpu}_$SCALE}
RESULTS=${BENCH_RESULTS:-benchmarks/results}  # where the table goes; BENCH_WORK: the corpus and runs
WORK=${BENCH_WORK:-benchmarks/work}
if ! "$PY" -c "import mixreorg.cli.main, open_clip, webdataset, pycocotools" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site .
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
WORKERS=$("$PY" -c "import os; print(max(1, (os.cpu_count() or 2) - 2))")
"$PY" benchmarks/bench_learning.py --device "$DEVICE" --scale "$SCALE" --image-size "$IMAGE_SIZE" --minutes "$MINUTES" \
    --train-size "$TRAIN_SIZE" --eval-size "$EVAL_SIZE" --seeds 1 --variants groupvit mixreorg --jobs 1 \
    --set "data.workers=$WORKERS" data.augmentation=light data.crop_scale_min=0.5 --name "$NAME" \
    --out "$RESULTS" --work "$WORK"
if [ -n "${OUT:-}" ]; then cp "$RESULTS/$NAME"* "$OUT"/; fi
