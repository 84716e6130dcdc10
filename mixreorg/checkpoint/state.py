"""State-dict plumbing shared by every format: unwrapping, prefix stripping, loading with clear errors."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mixreorg.errors import MixreorgError

# Added by DistributedDataParallel and torch.compile; never part of a parameter's real name.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel and/or torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel) or type(model).__name__ == "DataParallel":
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def strip_wrapper_prefixes(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    stripped = {}
    for key, value in state.items():
        name = key
        while name.startswith(WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        stripped[name] = value
    return stripped


def model_state(model: nn.Module) -> dict[str, Tensor]:
    """CPU, contiguous, detached copies of the unwrapped model's state dict (what safetensors accepts)."""
    return {key: value.detach().cpu().contiguous() for key, value in unwrap_model(model).state_dict().items()}


def tensor_state(state: Mapping, source: str) -> dict[str, Tensor]:
    """Check that a loaded object is a flat name -> tensor mapping."""
    if not isinstance(state, Mapping):
        raise MixreorgError(f"{source} holds a {type(state).__name__}, expected a state dict of named tensors")
    bad = [key for key, value in state.items() if not isinstance(key, str) or not isinstance(value, Tensor)]
    if bad:
        raise MixreorgError(f"{source} entry {bad[0]!r} is not a named tensor; expected a state dict of named tensors")
    return strip_wrapper_prefixes(state)


def _more(items: list[str]) -> str:
    return ", ".join(items[:3]) + (f" (and {len(items) - 3} more)" if len(items) > 3 else "")


def load_weights(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Strictly load ``state`` into ``model``; any mismatch becomes one line naming what was expected."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong = [
        f"{key} {tuple(state[key].shape)} (expected {tuple(value.shape)})"
        for key, value in expected.items()
        if key in state and tuple(state[key].shape) != tuple(value.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {_more(missing)}")
    if unexpected:
        problems.append(f"unexpected {_more(unexpected)}")
    if wrong:
        problems.append(f"wrong shape for {_more(wrong)}")
    if problems:
        raise MixreorgError(f"weights in {source} do not fit the model config: {'; '.join(problems)}")
    with torch.no_grad():
        model.load_state_dict({key: value.to(expected[key].dtype) for key, value in state.items()}, strict=True)
