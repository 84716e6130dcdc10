"""Tell which checkpoint format a path holds, from file names and (for bare weight files) key names."""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError, safe_open

from mixreorg.checkpoint.hf import HF_CONFIG, is_hf
from mixreorg.checkpoint.ours import CONFIG_NAME, WEIGHTS_NAME, is_ours
from mixreorg.checkpoint.training import find_latest
from mixreorg.errors import MixreorgError

FORMATS = ("ours", "official", "hf")
EXPECTED = (
    "expected a mixreorg folder (config.yaml + model.safetensors), a transformers GroupViT folder "
    "(config.json + model.safetensors or pytorch_model.bin), or an official GroupViT .pth file"
)


def _safetensors_keys(path: Path) -> list[str]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except (SafetensorError, OSError) as exc:
        raise MixreorgError(f"{path} is not a readable safetensors file ({exc})") from exc


def detect_format(path: str | Path) -> tuple[str, Path]:
    """(format, the path to read it from): 'ours' and 'hf' resolve to their folder, 'official' to its file.

    A run folder resolves to its latest complete training checkpoint (which is in our format).
    """
    path = Path(path)
    if not path.exists():
        raise MixreorgError(f"{path} does not exist; {EXPECTED}")
    if path.is_dir():
        if is_ours(path):
            return "ours", path
        if is_hf(path):
            return "hf", path
        latest = find_latest(path)
        if latest is not None:
            return "ours", latest
        if (path / WEIGHTS_NAME).is_file():
            raise MixreorgError(
                f"{path} has {WEIGHTS_NAME} but no {CONFIG_NAME} (mixreorg) or {HF_CONFIG} (transformers) beside it; "
                "the config is needed to rebuild the model"
            )
        raise MixreorgError(f"{path} is a folder with neither format inside; {EXPECTED}")
    if path.name in (CONFIG_NAME, WEIGHTS_NAME) and is_ours(path.parent):
        return "ours", path.parent
    if (path.name == HF_CONFIG or path.suffix in (".safetensors", ".bin")) and is_hf(path.parent):
        return "hf", path.parent
    if path.suffix == ".safetensors":
        keys = _safetensors_keys(path)
        if any(key.startswith(("vision_model.", "text_model.")) for key in keys):
            raise MixreorgError(f"{path} holds transformers weights; put its config.json beside it and pass the folder")
        return "official", path  # a bare state dict in NVlabs or our names: its config is read off the shapes
    return "official", path
