"""benchmarks/gpu_learning.sh, the one call a GPU session makes, run on its CPU smoke setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Not the script's documented smoke name: a hand-run smoke test leaves that one in benchmarks/results.
NAME = "pytest_gpu_learning_smoke"


def test_the_gpu_learning_script_trains_both_methods_and_writes_its_table(tmp_path):
    out = tmp_path / "device_out"
    out.mkdir()
    env = {**os.environ, "PY": sys.executable, "DEVICE": "cpu", "SCALE": "tiny", "IMAGE_SIZE": "64",
           "MINUTES": "0.02", "TRAIN_SIZE": "96", "EVAL_SIZE": "4", "NAME": NAME,
           "BENCH_RESULTS": str(tmp_path / "results"), "BENCH_WORK": str(tmp_path / "work"), "OUT": str(out)}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_learning.sh")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    record = json.loads((tmp_path / "results" / f"{NAME}.json").read_text())
    assert set(record["results"]) >= {"groupvit", "mixreorg", "untrained"}
    for method in ("groupvit", "mixreorg"):
        (run,) = record["results"][method]["runs"]
        assert 0 <= run["mIoU"] <= 100 and run["grouping"]["segments_per_image"] >= 1
    steps = record["steps"]  # calibrated from the minutes given: one count, or one per method
    assert all(count >= 10 for count in (steps.values() if isinstance(steps, dict) else [steps]))
    # What the device tool brings back: the table, its JSON and both figures, copied to $OUT.
    expected = [f"{NAME}{end}" for end in (".json", ".md", "_curves.png", "_groups.png")]
    assert sorted(p.name for p in out.iterdir()) == expected
    assert "| mixreorg - groupvit |" in (out / f"{NAME}.md").read_text()
    assert not (ROOT / "benchmarks" / "results" / f"{NAME}.json").exists()
