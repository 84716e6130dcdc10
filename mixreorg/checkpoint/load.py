"""One entry point for every checkpoint format: ``load_model`` and ``convert_checkpoint``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from mixreorg.checkpoint.detect import FORMATS, detect_format
from mixreorg.checkpoint.hf import is_hf, read_hf, save_hf
from mixreorg.checkpoint.infer import infer_model_config
from mixreorg.checkpoint.official import read_official
from mixreorg.checkpoint.ours import is_ours, load_pretrained, save_pretrained
from mixreorg.checkpoint.state import load_weights
from mixreorg.config.loader import load_config
from mixreorg.config.schema import Config
from mixreorg.errors import MixreorgError

TARGETS = ("ours", "hf")
GROUPVIT_PRESET = "groupvit_vits16"
MIXREORG_PRESET = "mixreorg_vits16"


@dataclass
class LoadedCheckpoint:
    model: nn.Module
    config: Config
    source_format: str
    notes: list[str] = field(default_factory=list)


def _resolve_format(path: Path, fmt: str) -> tuple[str, Path]:
    if fmt not in ("auto", *FORMATS):
        raise MixreorgError(f"unknown checkpoint format '{fmt}'; expected one of auto, {', '.join(FORMATS)}")
    detected, where = detect_format(path)
    if fmt == "auto" or fmt == detected:
        return detected, where
    if fmt == "ours" and not is_ours(where):
        raise MixreorgError(f"{path} is not a mixreorg checkpoint folder (config.yaml + model.safetensors)")
    if fmt == "hf" and not is_hf(where):
        raise MixreorgError(f"{path} is not a transformers GroupViT folder (config.json + model.safetensors/.bin)")
    if fmt == "official" and where.is_dir():
        raise MixreorgError(f"{path} is a folder; the official GroupViT release is a single .pth file")
    return fmt, where


def _base_config(preset: str | None, has_contextual_layer: bool) -> Config:
    config = load_config(preset or (MIXREORG_PRESET if has_contextual_layer else GROUPVIT_PRESET))
    if config.method != "mixreorg":
        raise MixreorgError(f"--preset {preset} is a {config.method} preset; official and transformers checkpoints are "
                            "GroupViT models: pass a GroupViT/MixReorg preset (e.g. groupvit_vits16) or none")
    return config


def read_checkpoint(path: str | Path, fmt: str = "auto", preset: str | None = None) -> LoadedCheckpoint:
    """Load any supported checkpoint into our model (eval mode) with a full config.

    For sources without our config.yaml the model section is read off the weights (and config.json
    for transformers); everything else comes from ``preset`` (default: groupvit_vits16, or
    mixreorg_vits16 when the weights have a contextual layer).
    """
    from mixreorg.model import build_model

    fmt, where = _resolve_format(Path(path), fmt)
    notes: list[str] = []
    if fmt == "ours":
        if preset:
            notes.append(f"--preset {preset} ignored: {where} carries its own config.yaml")
        model, config = load_pretrained(where)
        return LoadedCheckpoint(model, config, fmt, notes)
    if fmt == "hf":
        base = _base_config(preset, False)
        state, model_cfg = read_hf(where, base.model)
    else:
        state, heads = read_official(where)
        base = _base_config(preset, any(key.startswith("image_encoder.contextual_blocks.") for key in state))
        model_cfg = infer_model_config(state, base.model, vision_heads=heads)
        if heads is None:
            notes.append(f"attention heads are not stored in {where.name}; assumed {model_cfg.vision.heads} (vision)")
    if model_cfg != base.model:
        model_cfg.name = f"converted_{fmt}"
    base.model = model_cfg
    model = build_model(base, initialize=False)
    load_weights(model, state, str(where))
    return LoadedCheckpoint(model.eval(), base, fmt, notes)


def load_model(path: str | Path, fmt: str = "auto", preset: str | None = None) -> tuple[nn.Module, Config]:
    """(model in eval mode, its config) from our folder, a run folder (its latest checkpoint), an official
    GroupViT .pth or a transformers GroupViT folder."""
    loaded = read_checkpoint(path, fmt, preset)
    return loaded.model, loaded.config


@dataclass
class ConversionReport:
    out: Path
    source_format: str
    target_format: str
    config: Config
    notes: list[str]


def convert_checkpoint(
    src: str | Path,
    out: str | Path,
    source_format: str = "auto",
    target_format: str = "ours",
    preset: str | None = None,
    overwrite: bool = False,
) -> ConversionReport:
    """Read ``src`` in any format and write it to ``out`` as ours or as a transformers folder."""
    if target_format not in TARGETS:
        raise MixreorgError(f"unknown target format '{target_format}'; expected one of {', '.join(TARGETS)}")
    out = Path(out)
    if out.resolve() == Path(src).resolve():
        raise MixreorgError(f"--out {out} is the source itself; write the conversion to a new folder")
    loaded = read_checkpoint(src, source_format, preset)
    notes = list(loaded.notes)
    if loaded.config.method != "mixreorg" and target_format != "ours":
        raise MixreorgError(f"{src} is an {loaded.config.method} checkpoint; transformers has no such model, so it "
                            "converts only to our format (--to ours), which every mixreorg command reads")
    if target_format == "ours":
        save_pretrained(loaded.model, loaded.config, out, overwrite=overwrite)
    else:
        notes += save_hf(loaded.model, out, overwrite=overwrite)
    return ConversionReport(out, loaded.source_format, target_format, loaded.config, notes)
