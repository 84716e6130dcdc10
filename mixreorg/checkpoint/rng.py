"""Capture and restore every random number generator a training run draws from.

States are stored as plain containers and tensors so ``torch.load(weights_only=True)`` reads them back
(numpy's key array becomes an int64 tensor).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }  # fmt: skip
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _as_tuples(value: Any) -> Any:
    # random.setstate needs the nested tuples back, whatever container the loader produced.
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(item) for item in value)
    return value


def restore_rng_state(state: dict[str, Any]) -> None:
    if "python" in state:
        random.setstate(_as_tuples(state["python"]))
    if "numpy" in state:
        saved = state["numpy"]
        keys = saved["keys"].numpy().astype(np.uint32)
        np.random.set_state((saved["kind"], keys, saved["pos"], saved["has_gauss"], saved["gauss"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    # CUDA states are restored only onto the same number of devices; elsewhere they cannot apply.
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
