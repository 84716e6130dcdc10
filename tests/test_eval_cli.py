"""`mixreorg eval` end to end on tiny fixtures of every benchmark layout, bad input, and torchrun over 2 processes."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch

from mixreorg.checkpoint import load_model, save_pretrained
from mixreorg.config import load_config
from mixreorg.data.benchmarks import get_benchmark
from mixreorg.evaluation.protocols import resolve_protocol
from mixreorg.evaluation.segmentation import protocol_scorer, slide_settings
from mixreorg.evaluation.sliding import segment_images
from mixreorg.model import build_model

sys.path.insert(0, os.path.dirname(__file__))
import benchmark_fixtures as fixtures  # noqa: E402
from cli_runner import run_cli

SEGMENTATION = ["voc", "voc20", "context", "context59", "coco-object", "coco-stuff", "ade20k", "cityscapes",
                "synthetic"]
# Patch 16 keeps the 448-pixel windows of the real protocols cheap on a CPU (784 tokens per window).
FAST = ["model.vision.patch_size=16"]





def save_model(folder, overrides=()):
    torch.manual_seed(0)
    config = load_config("tiny", [*FAST, *overrides])
    save_pretrained(build_model(config), config, folder)
    return folder


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for make in (fixtures.make_voc, fixtures.make_context, fixtures.make_coco, fixtures.make_ade20k,
                 fixtures.make_cityscapes, fixtures.make_imagenet):
        make(root)
    fixtures.make_synthetic(root / "synthetic")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("ckpt") / "tiny")




def reference_miou(labels, predictions, num_classes):
    ious = []
    for c in range(num_classes):
        inter = sum(((p == c) & (t == c) & (t != 255)).sum() for p, t in zip(predictions, labels, strict=True))
        union = sum((((p == c) | (t == c)) & (t != 255)).sum() for p, t in zip(predictions, labels, strict=True))
        if union:
            ious.append(inter / union)
    return 100 * float(np.mean(ious))


def test_eval_all_runs_every_layout_and_records_settings(data_root, checkpoint, tmp_path, monkeypatch, capsys):
    out = tmp_path / "results.json"
    code, stdout, stderr = run_cli(
        ["eval", "--dataset", "all", "-c", str(checkpoint), "--data-root", str(data_root), "--device", "cpu",
         "--out", str(out), "--workers", "0", "--limit", "1"], monkeypatch, capsys)
    assert code == 0, stderr
    report = json.loads(out.read_text())
    assert [r["dataset"] for r in report["results"]] == SEGMENTATION + ["imagenet"]
    assert report["protocol"] == "groupvit" and report["limit"] == 1 and report["skipped"] == {}
    for result in report["results"]:
        assert result["num_images"] == 1
        if result["task"] == "segmentation":
            settings = result["settings"]
            assert {"short_side", "crop", "stride", "templates", "background", "background_score"} <= set(settings)
            assert list(result["metrics"]["per_class_iou"]) == result["classes"]
            assert 0 <= result["metrics"]["miou"] <= 100
        else:
            assert set(result["metrics"]) == {"top1", "top5"}
    by_name = {r["dataset"]: r for r in report["results"]}
    assert by_name["voc"]["settings"]["background_score"] == 0.95  # from the VOC manifest
    assert by_name["context"]["settings"]["background_score"] == 0.35
    assert by_name["ade20k"]["settings"]["background"] == "none"
    markdown = out.with_suffix(".md").read_text()
    assert "| coco-stuff | groupvit |" in markdown and "## ade20k" in markdown
    assert "coco-object" in stdout and "images/s" in stdout

    # The reported mIoU of a set is the one computed independently from its label maps.
    model, _ = load_model(checkpoint)
    benchmark = get_benchmark("voc", data_root)
    protocol = resolve_protocol("groupvit", "voc", True, 64, published_threshold=0.95)
    image, label, _ = benchmark[0]
    (prediction,) = segment_images([torch.from_numpy(image)], protocol_scorer(model, benchmark.classes, protocol, True),
                                   slide_settings(protocol, 8))
    expected = reference_miou([label], [prediction.numpy()], len(benchmark.classes))
    assert by_name["voc"]["metrics"]["miou"] == pytest.approx(expected)


def test_unified_protocol_uses_a_constant_background(data_root, checkpoint, tmp_path, monkeypatch, capsys):
    out = tmp_path / "unified.json"
    code, _, stderr = run_cli(
        ["eval", "-d", "voc", "-c", str(checkpoint), "--data-root", str(data_root), "--protocol", "unified",
         "--device", "cpu", "--out", str(out), "--workers", "0", "--limit", "1", "--flip", "--precision", "bf16"],
        monkeypatch, capsys)
    assert code == 0, stderr
    report = json.loads(out.read_text())
    settings = report["results"][0]["settings"]
    assert (settings["background"], settings["background_score"], settings["flip"]) == ("constant", 0.5, True)
    assert len(settings["templates"]) == 9
    assert report["precision"] == settings["precision"] == "bf16"


def test_bad_input_gives_one_clear_line(data_root, checkpoint, tmp_path, monkeypatch, capsys):
    base = ["eval", "-c", str(checkpoint), "--device", "cpu", "--out", str(tmp_path / "r.json"), "--workers", "0"]
    code, _, stderr = run_cli(base + ["-d", "voc", "--data-root", str(tmp_path / "nowhere")], monkeypatch, capsys)
    assert code == 2 and "does not exist" in stderr and stderr.count("\n") == 1

    broken = tmp_path / "broken"
    fixtures.make_voc(broken)
    (broken / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").unlink()
    code, _, stderr = run_cli(base + ["-d", "voc", "--data-root", str(broken)], monkeypatch, capsys)
    assert code == 2 and "val.txt" in stderr and stderr.count("\n") == 1
    assert "eval's --data-root" in stderr and "point --root" not in stderr  # eval's flag, not data fetch's

    short_text = save_model(tmp_path / "short", ["model.text.context_length=6"])
    args = ["eval", "-d", "synthetic", "-c", str(short_text), "--data-root", str(data_root / "synthetic"),
            "--device", "cpu", "--out", str(tmp_path / "r.json"), "--workers", "0"]
    code, _, stderr = run_cli(args, monkeypatch, capsys)
    assert code == 2 and "tokens" in stderr and "text encoder takes 6" in stderr and stderr.count("\n") == 1
    assert not (tmp_path / "r.json").exists()

    code, _, stderr = run_cli(base + ["-d", "pascal", "--data-root", str(data_root)], monkeypatch, capsys)
    assert code == 2 and "unknown dataset" in stderr
    code, _, stderr = run_cli(base + ["-d", "voc", "--data-root", str(data_root), "--precision", "fp16"], monkeypatch,
                              capsys)
    assert code == 2 and "fp16 needs a GPU" in stderr and stderr.count("\n") == 1


def test_two_processes_with_torchrun_match_one(checkpoint, tmp_path, monkeypatch, capsys):
    """--gpus 2 on the CPU (gloo): each process takes half the images, the summed matrices give the same numbers.
    The data root holds only the synthetic set, so `all` also reports what it skipped and why."""
    fixtures.make_synthetic(tmp_path / "data" / "synthetic")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code, stdout, stderr = run_cli(
        ["eval", "-d", "all", "-c", str(checkpoint), "--data-root", str(tmp_path / "data"), "--device", "cpu",
         "--workers", "1", "--gpus", "2", "--out", str(tmp_path / "two.json")], monkeypatch, capsys)
    assert code == 0, stderr
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["world_size"] == 2 and [r["dataset"] for r in two["results"]] == ["synthetic"]
    assert set(two["skipped"]) == set(SEGMENTATION[:-1] + ["imagenet"])
    assert "skipped voc: expected" in stderr

    from mixreorg.evaluation.segmentation import evaluate_segmentation

    model, _ = load_model(checkpoint)
    benchmark = get_benchmark("synthetic", tmp_path / "data" / "synthetic")
    protocol = resolve_protocol("groupvit", "synthetic", False, 64)
    one = evaluate_segmentation(model, benchmark, protocol, torch.device("cpu"), workers=0, progress=False)
    assert two["results"][0]["num_images"] == one.num_images == 2
    assert two["results"][0]["metrics"] == one.metrics  # summed confusion matrices: the same numbers
    # The synthetic set names its object classes: their mIoU and the backgrounds' are reported apart.
    per_class = one.metrics["per_class_iou"]
    objects = [per_class[name] for name in ("red circle", "blue square") if per_class[name] is not None]
    assert one.metrics["objects_miou"] == pytest.approx(sum(objects) / len(objects))
    assert one.metrics["backgrounds_miou"] == pytest.approx(per_class["sand"])
    assert "objects mIoU" in stdout
