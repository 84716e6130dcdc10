"""benchmarks/bench_unpairseg.py on its smoke setting: every row trained, scored and reported, latency measured."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_unpairseg.py"


def test_the_unpairseg_benchmark_runs_end_to_end_on_its_smoke_setting(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_unpairseg", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    record = bench.main(["--smoke", "--out", str(tmp_path / "results"), "--work", str(tmp_path / "work")])
    assert json.loads((tmp_path / "results" / "unpairseg_cpu.json").read_text())["seeds"] == record["seeds"]
    (seed,) = record["seeds"]
    assert list(seed) == list(bench.ROWS)
    for row in seed.values():
        assert 0 <= row["mIoU"] <= 100 and 0 <= row["object_iou"] <= 100 and row["train_seconds"] > 0
    assert seed["unpairseg"]["train_seconds"] > seed["unpairseg_stage1"]["train_seconds"] > \
        seed["groupvit"]["train_seconds"]
    assert seed["groupvit"]["masks_per_image"] >= 1  # GroupViT's segments cover every image
    models = record["latency"]["models"]
    assert set(models) == {"groupvit", "unpairseg (groupvit backbone)"} and models["groupvit"]["vs_groupvit"] == 1.0
    assert (tmp_path / "results" / "unpairseg_cpu_masks.png").stat().st_size > 0
    report = (tmp_path / "results" / "unpairseg_cpu.md").read_text()
    assert "| unpairseg |" in report and "Latency per 64 px image on 1 thread " in report
