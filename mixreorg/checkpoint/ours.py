"""Our checkpoint format: a folder with ``model.safetensors`` and the fully resolved ``config.yaml``.

The folder alone rebuilds the model (``--checkpoint DIR`` needs nothing else). It is written into a
hidden temporary folder and renamed into place, so a crash never leaves a folder that looks complete.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mixreorg import __version__
from mixreorg.checkpoint.atomic_dir import atomic_directory
from mixreorg.checkpoint.state import load_weights, model_state, unwrap_model
from mixreorg.config.loader import load_config, save_config
from mixreorg.config.schema import Config
from mixreorg.errors import MixreorgError

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.yaml"


def is_ours(folder: Path) -> bool:
    return (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file()


def resolved_config(model: nn.Module, config: Config | None) -> Config:
    """The config to store with ``model``: ``config`` (or defaults) with the sections the model was built from
    (a model may name them itself with ``config_sections()``; GroupViT and MixReorg carry their model section)."""
    model = unwrap_model(model)
    sections = model.config_sections() if hasattr(model, "config_sections") else {"model": model.cfg}
    return dataclasses.replace(config or Config(), **sections)


def write_weights(state: dict[str, Tensor], path: Path) -> None:
    save_file(state, str(path), metadata={"format": "pt", "producer": f"mixreorg {__version__}"})


def write_pretrained(folder: Path, model: nn.Module, config: Config | None) -> None:
    """Write weights then config into an existing folder (callers make the folder atomic)."""
    write_weights(model_state(model), folder / WEIGHTS_NAME)
    save_config(resolved_config(model, config), folder / CONFIG_NAME)


def save_pretrained(model: nn.Module, config: Config | None, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Save ``model`` (DDP/compiled wrappers are unwrapped) with its config as a folder, atomically."""
    out_dir = Path(out_dir)
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        write_pretrained(tmp, model, config)
    return out_dir


def read_config(folder: str | Path) -> Config:
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise MixreorgError(
            f"{folder} has no {CONFIG_NAME}; a mixreorg checkpoint folder holds {WEIGHTS_NAME} and {CONFIG_NAME} "
            "(convert other formats with 'mixreorg convert')"
        )
    config = load_config(path)
    # The weights already hold any open_clip initialisation; building must not download it again.
    config.model.text.init_from_open_clip = ""
    config.model.text.init_pretrained_tag = ""
    return config


def read_weights(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise MixreorgError(f"{path} does not exist; a mixreorg checkpoint folder holds {WEIGHTS_NAME}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise MixreorgError(f"{path} is not a readable safetensors file ({exc}); re-save or re-convert it") from exc


def load_pretrained(folder: str | Path) -> tuple[nn.Module, Config]:
    """(model in eval mode, its config) from one of our checkpoint folders, of any method."""
    from mixreorg.checkpoint.methods import build_for_loading

    folder = Path(folder)
    config = read_config(folder)
    model = build_for_loading(config)
    load_weights(model, read_weights(folder / WEIGHTS_NAME), str(folder / WEIGHTS_NAME))
    return model.eval(), config
