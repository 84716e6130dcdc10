"""Unpair-Seg on the shared trainer: both stages resume exactly from a checkpoint (same losses, same final weights as
the uninterrupted run), stage 2 trains only the adapter, and doomed runs end in one line with nothing written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from cli_runner import run_cli  # noqa: E402

from mixreorg.checkpoint import load_model  # noqa: E402
from mixreorg.checkpoint.ours import save_pretrained  # noqa: E402
from mixreorg.config import load_config  # noqa: E402
from mixreorg.data.synthetic import generate_corpus  # noqa: E402
from mixreorg.model import build_model  # noqa: E402
from mixreorg.training.launch import train  # noqa: E402
from mixreorg.training.logging import read_metrics  # noqa: E402

# The tiny presets made smaller still: a step takes a few tens of milliseconds on one thread.
SMALL = ["unpairseg.model.pixel_dim=32", "unpairseg.model.mask_dim=32", "unpairseg.model.heads=2",
         "unpairseg.model.mlp_dim=64", "unpairseg.model.decoder_layers=2", "unpairseg.model.adapter_dim=32",
         "unpairseg.prompts.grid=4", "unpairseg.inference.grid=4", "unpairseg.align.grid=4"]
RUN = ["train.batch_size=4", "train.max_steps=4", "train.save_every=2", "train.keep_last=3", "train.log_every=1",
       "data.workers=1"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("unpairseg")
    generate_corpus(root / "synth", train_size=32, eval_size=0, image_size=64, shard_size=8, mask_size=32)
    torch.manual_seed(0)
    config = load_config("tiny")
    save_pretrained(build_model(config), config, root / "groupvit")
    return {"masks": str(root / "synth" / "masks" / "manifest.json"),
            "captions": str(root / "synth" / "train" / "manifest.json"),
            "backbone": f"unpairseg.model.backbone=checkpoint:{root / 'groupvit'}", "root": str(root)}


def _losses(run: Path) -> dict[int, dict[str, float]]:
    return {r["step"]: {k: v for k, v in r.items() if k.endswith("loss") or k.endswith("_image")}
            for r in read_metrics(run) if "loss" in r}


def _resumes_exactly(preset: str, data: str, overrides: list[str], root: Path) -> None:
    reference = root / "reference"
    train(preset, data, reference, overrides=overrides + RUN)
    resumed = root / "resumed"
    train(preset, data, resumed, overrides=overrides + RUN, resume=str(reference / "checkpoints" / "step_000000002"))
    expected, got = _losses(reference), _losses(resumed)
    assert sorted(expected) == [1, 2, 3, 4] and sorted(got) == [3, 4]
    assert got == {step: expected[step] for step in (3, 4)}
    (a, _), (b, _) = load_model(reference / "model"), load_model(resumed / "model")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_stage_one_resumes_exactly(world, tmp_path):
    _resumes_exactly("unpairseg_tiny_masks", world["masks"], SMALL + [world["backbone"]], tmp_path)


@pytest.fixture(scope="module")
def stage_one(world) -> Path:
    run = Path(world["root"]) / "masks"
    train("unpairseg_tiny_masks", world["masks"], run, overrides=SMALL + [world["backbone"]] + RUN)
    return run


def test_stage_two_resumes_exactly_and_trains_only_the_adapter(world, stage_one, tmp_path):
    # A random stage-1 model is sure of nothing: take every mask and every match, so the adapter gets pairs.
    overrides = SMALL + [f"unpairseg.align.masks_checkpoint={stage_one}", "unpairseg.inference.score=0.0",
                         "unpairseg.align.confidence=0.0"]
    _resumes_exactly("unpairseg_tiny_align", world["captions"], overrides, tmp_path)
    records = [r for r in read_metrics(tmp_path / "reference") if "loss" in r]
    assert all(r["pairs_per_image"] > 0 and r["align_loss"] > 0 for r in records)
    before, config = load_model(stage_one / "model")
    after, trained = load_model(tmp_path / "reference" / "model")
    assert config.unpairseg.stage == "masks" and trained.unpairseg.stage == "align"
    assert trained.unpairseg.model == config.unpairseg.model and trained.model == config.model
    changed = {name.split(".")[0] for name, value in after.state_dict().items()
               if not torch.equal(value, before.state_dict()[name])}
    assert changed == {"adapter"}


def _fails(args: list[str], message: str, monkeypatch, capsys, out: Path) -> None:
    code, _, err = run_cli(args, monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err and not out.exists()


def test_doomed_runs_end_in_one_line_with_nothing_written(world, stage_one, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    masks = ["train", "--config", "unpairseg_tiny_masks", "--data", world["masks"], "--out", str(out), *SMALL]
    align = ["train", "--config", "unpairseg_tiny_align", "--data", world["captions"], "--out", str(out), *SMALL]
    _fails(align, "a stage-2 (align) run needs a stage-1 checkpoint; set unpairseg.align.masks_checkpoint",
           monkeypatch, capsys, out)
    _fails([*align, f"unpairseg.align.masks_checkpoint={tmp_path / 'nowhere'}"], "does not exist", monkeypatch,
           capsys, out)
    _fails([*align, f"unpairseg.align.masks_checkpoint={world['backbone'].split(':', 1)[1]}"],
           "is a mixreorg checkpoint, not an Unpair-Seg one", monkeypatch, capsys, out)
    _fails(masks, "unpairseg.model.backbone is empty", monkeypatch, capsys, out)
    _fails([*masks, "unpairseg.model.backbone=vit_large"], "unknown backbone 'vit_large'", monkeypatch, capsys, out)
    _fails([*masks, f"unpairseg.model.backbone=checkpoint:{stage_one}"],
           "is a unpairseg checkpoint; the backbone must be a GroupViT or MixReorg checkpoint", monkeypatch, capsys,
           out)
    _fails([*masks, world["backbone"], "unpairseg.stage=segment"], "unpairseg.stage must be one of masks, align",
           monkeypatch, capsys, out)
    _fails([*masks, world["backbone"], "unpairseg.prompts.box_probability=2"],
           "unpairseg.prompts.box_probability must be in [0, 1]", monkeypatch, capsys, out)
    # image-caption shards are no image-mask data: every sample lacks its masks
    _fails(["train", "--config", "unpairseg_tiny_masks", "--data", world["captions"], "--out", str(out), *SMALL,
            world["backbone"], "train.max_steps=1", "data.workers=0"], "no image with usable masks of a whole batch",
           monkeypatch, capsys, out)


@pytest.mark.parametrize("stage", ["masks", "align", "align-without-pairs"])
def test_every_trained_parameter_gets_a_gradient_as_ddp_requires(world, stage_one, stage):
    """DDP (torchrun) fails on a parameter that takes no part in the loss; one step of each stage in one process
    shows which would."""
    from mixreorg.training.distributed import DistEnv
    from mixreorg.training.launch import resolve_run_config
    from mixreorg.training.trainer import Trainer

    if stage == "masks":
        cfg, data = resolve_run_config("unpairseg_tiny_masks", world["masks"], SMALL + [world["backbone"]] + RUN)
    else:
        nothing = ["unpairseg.inference.score=1.0"] if stage == "align-without-pairs" else [
            "unpairseg.inference.score=0.0", "unpairseg.align.confidence=0.0"]
        cfg, data = resolve_run_config("unpairseg_tiny_align", world["captions"],
                                       SMALL + [f"unpairseg.align.masks_checkpoint={stage_one}"] + RUN + nothing)
    trainer = Trainer(cfg, DistEnv(), torch.device("cpu"), warmup_steps=0, total_steps=4)
    batch = next(iter(trainer.method.build_loader(cfg, data, DistEnv(), 0)))
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer._micro_step(batch, 0, last=True)
    trained = [(name, p) for name, p in trainer.model.named_parameters() if p.requires_grad]
    assert trained and all(name.startswith("adapter.") == (stage != "masks") for name, _ in trained)
    assert [name for name, p in trained if p.grad is None] == []
