"""Training checkpoints: resumable state, written so that a crash never costs the previous checkpoint.

Layout under ``RUN_DIR/checkpoints/``::

    step_000001000/   model.safetensors + config.yaml (our pretrained format: loads anywhere as a model)
                      training_state.pt  (torch.save of plain containers and tensors: step, optimizer,
                                          scheduler, scaler, RNG states, the caller's ``extra``)
    latest            text file naming the newest complete step folder

A step folder is built under a hidden ``.step_*.partial`` name and renamed when complete; only then is
``latest`` replaced (atomically). A process killed mid-save leaves the partial folder, which the next
save removes, and ``latest`` still names the previous checkpoint. ``training_state.pt`` is read back with
``torch.load(weights_only=True)``, so everything saved must be tensors or plain containers; ``extra`` is
checked when saving. Call these from one process only (rank 0).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mixreorg.checkpoint.atomic_dir import PARTIAL_SUFFIX, WRITE_ERRORS, atomic_directory, write_failed
from mixreorg.checkpoint.ours import CONFIG_NAME, WEIGHTS_NAME, read_weights, write_pretrained
from mixreorg.checkpoint.rng import capture_rng_state, restore_rng_state
from mixreorg.checkpoint.state import load_weights, unwrap_model
from mixreorg.config.schema import Config
from mixreorg.errors import MixreorgError
from mixreorg.utils.io import atomic_write_text

CHECKPOINTS = "checkpoints"
LATEST = "latest"
STATE_NAME = "training_state.pt"
FORMAT_VERSION = 1
STEP_NAME = re.compile(r"step_(\d+)")
PLAIN_LEAVES = (type(None), bool, int, float, complex, str, bytes, torch.Tensor, torch.dtype, torch.device, torch.Size)


def checkpoint_root(run_dir: str | Path) -> Path:
    """``run_dir/checkpoints``; a path that already is a checkpoints folder is accepted as it is."""
    run_dir = Path(run_dir)
    if (run_dir / LATEST).is_file() or (run_dir.name == CHECKPOINTS and run_dir.is_dir()):
        return run_dir
    return run_dir / CHECKPOINTS


def _step_of(path: Path) -> int | None:
    found = STEP_NAME.fullmatch(path.name)
    return int(found.group(1)) if found else None


def is_complete(path: Path) -> bool:
    files = (WEIGHTS_NAME, CONFIG_NAME, STATE_NAME)
    return _step_of(path) is not None and all((path / name).is_file() for name in files)


def _complete_steps(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and is_complete(p)), key=lambda p: _step_of(p) or 0)


def check_plain(value: Any, where: str = "state") -> None:
    """Raise TypeError for anything ``torch.load(weights_only=True)`` could not read back."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where} has a key of type {type(key).__name__}; use str or int keys")
            check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_plain(item, f"{where}[{index}]")
    elif not isinstance(value, PLAIN_LEAVES):
        raise TypeError(f"{where} is a {type(value).__name__}; checkpoints hold only tensors and plain containers")


def _state_dict(obj: Any) -> Any:
    return None if obj is None else obj.state_dict()


def save_training_checkpoint(
    run_dir: str | Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
    extra: dict[str, Any] | None = None,
    keep_last: int = 3,
    config: Config | None = None,
) -> Path:
    """Write ``RUN_DIR/checkpoints/step_<step>/``, point ``latest`` at it, keep the newest ``keep_last``.

    ``extra`` holds the loop's own position (epoch, samples seen, data-loader state ...) as plain
    containers. ``config`` is the full run config written as config.yaml (its model section is taken
    from the model); without it only the model section is meaningful. Returns the step folder.
    """
    root = checkpoint_root(run_dir)
    state = {
        "format_version": FORMAT_VERSION,
        "step": int(step),
        "optimizer": _state_dict(optimizer),
        "scheduler": _state_dict(scheduler),
        "scaler": _state_dict(scaler),
        "rng": capture_rng_state(),
        "extra": dict(extra or {}),
    }
    check_plain(state)
    _remove_partials(root)
    name = f"step_{int(step):09d}"
    previous = find_latest(root)
    try:
        with atomic_directory(root / name, overwrite=True) as tmp:
            write_pretrained(tmp, model, config)
            with open(tmp / STATE_NAME, "wb") as handle:  # a file object: a failed write keeps its errno
                torch.save(state, handle)
        atomic_write_text(root / LATEST, name + "\n")
    except WRITE_ERRORS as exc:
        intact = f"the previous checkpoint step {_step_of(previous)} is intact" if previous else "none was saved before"
        raise write_failed(exc, f"step {step}", root, intact) from exc
    _prune(root, keep_last, current=root / name)
    return root / name


def _remove_partials(root: Path) -> None:
    """Remove what a process killed mid-save or mid-prune left: hidden partial and old folders, and step
    folders that are not complete (only an interrupted delete makes those; saves appear complete or not at all)."""
    if root.is_dir():
        for path in root.iterdir():
            hidden = path.name.startswith(".step_") and path.name.endswith((PARTIAL_SUFFIX, ".old"))
            if hidden or (path.is_dir() and _step_of(path) is not None and not is_complete(path)):
                shutil.rmtree(path, ignore_errors=True)


def _prune(root: Path, keep_last: int, current: Path) -> None:
    """Delete older step folders beyond ``keep_last`` (counting ``current``); later steps are never touched.

    Each folder is renamed to a hidden ``.old`` name first, so a kill during the delete leaves something the
    next save removes, never a half-deleted folder under a checkpoint's name."""
    if keep_last <= 0:
        return
    older = [p for p in _complete_steps(root) if (_step_of(p) or 0) < (_step_of(current) or 0)]
    for path in older[: max(0, len(older) - (keep_last - 1))]:
        trash = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.old")
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)


def find_latest(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder of a run (as ``latest`` names it), or None if there is none."""
    root = checkpoint_root(run_dir)
    pointer = root / LATEST
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if is_complete(candidate):
            return candidate
    # No pointer or a dangling one (killed between renames): the newest complete folder is still safe.
    complete = _complete_steps(root)
    return complete[-1] if complete else None


def _resolve(path: Path) -> Path:
    if (path / STATE_NAME).is_file():
        return path
    latest = find_latest(path)
    if latest is None:
        raise MixreorgError(f"no complete training checkpoint in {path}; expected a step folder or a run folder")
    return latest


def _load_into(obj: Any, state: Any, what: str, path: Path) -> None:
    if obj is None:
        return
    if state is None:
        raise MixreorgError(f"{path} holds no {what} state; resume with the same training settings it was saved with")
    try:
        obj.load_state_dict(state)
    except (ValueError, KeyError, RuntimeError) as exc:
        message = f"{what} state in {path} does not fit ({exc}); were the model or settings changed?"
        raise MixreorgError(message) from exc


def load_training_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore a step folder (or a run's latest) into the given objects; returns ``extra`` plus ``step``.

    Objects passed as None are skipped. RNG states are restored unless ``restore_rng`` is false.
    """
    folder = _resolve(Path(path))
    load_weights(unwrap_model(model), read_weights(folder / WEIGHTS_NAME), str(folder / WEIGHTS_NAME))
    try:
        state = torch.load(folder / STATE_NAME, map_location="cpu", weights_only=True)
    except Exception as exc:  # damaged file: many exception types
        message = f"{folder / STATE_NAME} is unreadable ({exc.__class__.__name__}); resume from another step"
        raise MixreorgError(message) from exc
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise MixreorgError(f"{folder / STATE_NAME} is not a mixreorg training state (format {FORMAT_VERSION})")
    _load_into(optimizer, state["optimizer"], "optimizer", folder)
    _load_into(scheduler, state["scheduler"], "scheduler", folder)
    _load_into(scaler, state["scaler"], "grad scaler", folder)
    if restore_rng:
        restore_rng_state(state["rng"])
    return {**state["extra"], "step": state["step"]}
