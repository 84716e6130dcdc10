"""Unpair-Seg end to end through the CLI on a tiny synthetic world: data synth (image-text and image-mask splits),
a GroupViT backbone, stage 1, stage 2, eval, segment by labels and by points and boxes, convert, and the Predictor."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from cli_runner import run_cli  # noqa: E402

SMALL = ["unpairseg.model.pixel_dim=32", "unpairseg.model.mask_dim=32", "unpairseg.model.heads=2",
         "unpairseg.model.mlp_dim=64", "unpairseg.model.decoder_layers=2", "unpairseg.model.adapter_dim=32",
         "unpairseg.prompts.grid=4", "unpairseg.inference.grid=4", "unpairseg.align.grid=4", "data.workers=0",
         "train.batch_size=4", "train.log_every=1"]


def _ok(args: list[str], monkeypatch, capsys) -> str:
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    return out


def _error(args: list[str], monkeypatch, capsys) -> str:
    code, _, err = run_cli(args, monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 0 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()

    class Quiet:  # run_cli needs a capsys; module fixtures have none, and the output is not checked here
        @staticmethod
        def readouterr():
            return type("Captured", (), {"out": "", "err": ""})()

    root = tmp_path_factory.mktemp("e2e")
    data, groupvit = root / "synth", root / "groupvit"
    for args in (
        ["data", "synth", "--out", str(data), "--train-size", "32", "--eval-size", "4", "--image-size", "64",
         "--shard-size", "8", "--mask-size", "32"],
        ["train", "--config", "tiny", "--data", str(data / "train" / "manifest.json"), "--out", str(groupvit),
         "train.max_steps=2", "train.batch_size=8", "data.workers=0"],
        ["train", "--config", "unpairseg_tiny_masks", "--data", str(data / "masks" / "manifest.json"), "--out",
         str(root / "masks"), *SMALL, f"unpairseg.model.backbone=checkpoint:{groupvit / 'model'}",
         "train.max_steps=3"],
        ["train", "--config", "unpairseg_tiny_align", "--data", str(data / "train" / "manifest.json"), "--out",
         str(root / "align"), *SMALL, f"unpairseg.align.masks_checkpoint={root / 'masks'}", "train.max_steps=2",
         "unpairseg.inference.score=0.0", "unpairseg.align.confidence=0.0"],
    ):
        code, _, err = run_cli(args, monkeypatch, Quiet)
        assert code == 0, (args, err)
    monkeypatch.undo()
    return {"data": data, "groupvit": groupvit / "model", "masks": root / "masks" / "model",
            "model": root / "align" / "model", "image": data / "eval" / "images" / "000000.png"}


def test_eval_and_segment_by_labels_take_an_unpairseg_checkpoint(runs, tmp_path, monkeypatch, capsys):
    report = tmp_path / "eval.json"
    _ok(["eval", "--dataset", "synthetic", "--data-root", str(runs["data"]), "--checkpoint", str(runs["model"]),
         "--out", str(report), "--workers", "0"], monkeypatch, capsys)
    result = json.loads(report.read_text())
    assert result["model"] == "unpairseg" and result["results"][0]["num_images"] == 4
    metrics = result["results"][0]["metrics"]
    assert 0 <= metrics["miou"] <= 100 and {"objects_miou", "backgrounds_miou"} <= set(metrics)
    out = _ok(["segment", str(runs["image"]), "--labels-file", str(runs["data"] / "eval" / "classes.txt"),
               "--checkpoint", str(runs["model"]), "--out", str(tmp_path / "seg")], monkeypatch, capsys)
    assert "000000_mask.png" in out
    record = json.loads((tmp_path / "seg" / "000000.json").read_text())
    assert record["checkpoint"] == str(runs["model"]) and record["segments"]


def test_segment_points_and_boxes_give_one_mask_per_prompt(runs, tmp_path, monkeypatch, capsys):
    out = _ok(["segment", str(runs["image"]), "--checkpoint", str(runs["masks"]), "--points", "10,12;40,40",
               "--boxes", "4,4,30,30", "--labels", "zebra,grass", "--out", str(tmp_path / "p")], monkeypatch, capsys)
    assert "000000_overlay.png" in out
    record = json.loads((tmp_path / "p" / "000000.json").read_text())
    names = [prompt["name"] for prompt in record["prompts"]]
    assert [n.split(":")[0] for n in names] == ["point 10,12", "point 40,40", "box 4,4,30,30"]
    assert all(n.split(": ")[1] in ("zebra", "grass") for n in names)
    assert record["labels"] == ["background", *names]
    mask = np.asarray(Image.open(tmp_path / "p" / "000000_mask.png"))
    assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 1, 2, 3}
    line = _error(["segment", str(runs["image"]), "--checkpoint", str(runs["masks"]), "--points", "70,10", "--out",
                   str(tmp_path / "q")], monkeypatch, capsys)
    assert line == "error: 1 of 1 inputs could not be segmented"
    code, _, err = run_cli(["segment", str(runs["image"]), "--checkpoint", str(runs["masks"]), "--points", "70,10",
                            "--out", str(tmp_path / "q")], monkeypatch, capsys)
    assert "point (70, 10) lies outside the 64x64 image" in err and not (tmp_path / "q").exists()
    assert "--points '1,2,3' is not 2 numbers" in _error(
        ["segment", str(runs["image"]), "--checkpoint", str(runs["masks"]), "--points", "1,2,3"], monkeypatch, capsys)
    assert "need a promptable checkpoint (Unpair-Seg)" in _error(
        ["segment", str(runs["image"]), "--checkpoint", str(runs["groupvit"]), "--points", "1,2", "--out",
         str(tmp_path / "g")], monkeypatch, capsys)


def test_convert_copies_unpairseg_checkpoints_and_refuses_transformers(runs, tmp_path, monkeypatch, capsys):
    out = _ok(["convert", str(runs["model"]), "--out", str(tmp_path / "copy")], monkeypatch, capsys)
    assert "unpairseg stage align" in out
    copied, original = (load_file(str(f / "model.safetensors")) for f in (tmp_path / "copy", runs["model"]))
    assert copied.keys() == original.keys() and all(torch.equal(copied[k], original[k]) for k in copied)
    line = _error(["convert", str(runs["model"]), "--out", str(tmp_path / "hf"), "--to", "hf"], monkeypatch, capsys)
    assert "is an unpairseg checkpoint; transformers has no such model" in line and not (tmp_path / "hf").exists()
    bare = tmp_path / "groupvit.safetensors"  # a bare state dict: its settings come from the preset
    bare.write_bytes((runs["groupvit"] / "model.safetensors").read_bytes())
    line = _error(["convert", str(bare), "--out", str(tmp_path / "x"), "--preset", "unpairseg_tiny_masks"],
                  monkeypatch, capsys)
    assert "is a unpairseg preset" in line


def test_the_predictor_segments_by_labels_and_by_prompts(runs):
    from mixreorg import Predictor
    from mixreorg.errors import MixreorgError

    predictor = Predictor.from_checkpoint(runs["model"], device="cpu")
    result = predictor.predict(runs["image"], labels=["zebra", "tiger", "grass", "sky"])
    assert result.label_map.shape == (64, 64) and result.labels == ["zebra", "tiger", "grass", "sky"]
    prompted = predictor.predict_prompts(runs["image"], points=[(20, 20)], boxes=[(0, 0, 64, 32)])
    assert prompted.labels[0] == "background" and prompted.labels[1].startswith("point 20,20: ")
    assert prompted.probs.shape == (3, 64, 64) and prompted.scores.shape == (3,)
    with pytest.raises(MixreorgError, match="no prompt given"):
        predictor.predict_prompts(runs["image"])
    groupvit = Predictor.from_checkpoint(runs["groupvit"], device="cpu")
    with pytest.raises(MixreorgError, match="need a promptable model"):
        groupvit.predict_prompts(runs["image"], points=[(1, 1)])
