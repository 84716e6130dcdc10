"""How stage 2 starts from stage 1: its config takes the stage-1 checkpoint's architecture, its model the weights.

``resolve_stage_config`` runs where a run's config is resolved (``mixreorg.training.launch``), so the config.yaml a
stage-2 run writes already names the backbone and decoder sizes it trains on. It reads only YAML.
"""

from __future__ import annotations

from pathlib import Path

from mixreorg.config.schema import Config
from mixreorg.errors import MixreorgError

STAGE_ONE_HINT = ("set unpairseg.align.masks_checkpoint to the stage-1 run folder or its model folder (train stage 1 "
                  "with a *_masks preset first)")


def stage_one_folder(path: str) -> Path:
    """The checkpoint folder a ``masks_checkpoint`` names (a model folder, or a run folder: its final model, else its
    latest checkpoint)."""
    from mixreorg.checkpoint import find_latest
    from mixreorg.checkpoint.ours import is_ours

    if not path:
        raise MixreorgError(f"a stage-2 (align) run needs a stage-1 checkpoint; {STAGE_ONE_HINT}")
    folder = Path(path).expanduser()
    if not folder.exists():
        raise MixreorgError(f"unpairseg.align.masks_checkpoint {folder} does not exist; {STAGE_ONE_HINT}")
    if is_ours(folder):
        return folder
    for candidate in (folder / "model", find_latest(folder)):
        if candidate is not None and is_ours(candidate):
            return candidate
    raise MixreorgError(f"{folder} holds no mixreorg checkpoint; {STAGE_ONE_HINT}")


def stage_one_config(path: str) -> Config:
    from mixreorg.checkpoint.ours import read_config

    folder = stage_one_folder(path)
    config = read_config(folder)
    if config.method != "unpairseg":
        raise MixreorgError(f"{folder} is a {config.method} checkpoint, not an Unpair-Seg one; {STAGE_ONE_HINT}")
    return config


def resolve_stage_config(cfg: Config) -> None:
    """For stage 2: the architecture (backbone, decoders, backbone model section) of the stage-1 checkpoint."""
    if cfg.method != "unpairseg" or cfg.unpairseg.stage != "align":
        return
    stage_one = stage_one_config(cfg.unpairseg.align.masks_checkpoint)
    cfg.unpairseg.model = stage_one.unpairseg.model
    cfg.model = stage_one.model


def load_stage_one(path: str):
    """The stage-1 model (weights loaded) a stage-2 run starts from."""
    from mixreorg.checkpoint.ours import load_pretrained

    stage_one_config(path)  # the clear errors first
    model, _ = load_pretrained(stage_one_folder(path))
    return model
