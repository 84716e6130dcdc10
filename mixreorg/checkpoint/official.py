"""The official NVlabs GroupViT release (``.pth`` with a ``model`` state dict) -> our parameter names.

The names differ only by the image-encoder prefix (``img_encoder`` -> ``image_encoder``) and the
projector naming; NVlabs' projectors are Conv1d with kernel 1 ([out, in, 1]) where ours are Linear.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from mixreorg.checkpoint.ours import read_weights
from mixreorg.checkpoint.safe_pickle import plain_config, safe_torch_load
from mixreorg.checkpoint.state import tensor_state
from mixreorg.errors import MixreorgError

RENAMES = (("img_encoder.", "image_encoder."), ("img_projector.", "image_projector."))
CONV1D_PROJECTOR_WEIGHTS = ("linear_hidden.0.weight", "linear_out.weight")


def is_official_state(state: Mapping[str, Any]) -> bool:
    return any(isinstance(key, str) and key.startswith("img_encoder.") for key in state)


def official_to_ours(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    converted = {}
    for key, value in state.items():
        for old, new in RENAMES:
            if key.startswith(old):
                key = new + key[len(old) :]
        if key.startswith(("image_projector.", "text_projector.")) and key.endswith(CONV1D_PROJECTOR_WEIGHTS):
            if value.ndim == 3 and value.shape[-1] == 1:
                value = value.squeeze(-1)
        converted[key] = value
    return converted


def vision_heads_from_release_config(config: Any) -> int | None:
    """``model.img_encoder.num_heads`` from the pickled OmegaConf config, when it is readable and uniform."""
    try:
        heads = plain_config(config)["model"]["img_encoder"]["num_heads"]
    except (KeyError, TypeError, IndexError):
        return None
    if isinstance(heads, list) and heads and all(isinstance(h, int) for h in heads):
        if len(set(heads)) > 1:
            raise MixreorgError(f"the release uses different head counts per stage {heads}; ours needs one count")
        return heads[0]
    return heads if isinstance(heads, int) else None


def read_official(path: str | Path) -> tuple[dict[str, Tensor], int | None]:
    """(state dict in our names, vision heads from the release config or None) of an NVlabs ``.pth``.

    Also accepts a bare state dict (torch.save or safetensors, with or without ``module.`` prefixes) in
    NVlabs' names or ours.
    """
    path = Path(path)
    checkpoint = read_weights(path) if path.suffix == ".safetensors" else safe_torch_load(path)
    heads = None
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("model"), Mapping):
        heads = vision_heads_from_release_config(checkpoint.get("config"))
        checkpoint = checkpoint["model"]
    elif isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    state = tensor_state(checkpoint, str(path))
    if not is_official_state(state) and not any(key.startswith("image_encoder.") for key in state):
        raise MixreorgError(
            f"{path} holds no GroupViT weights (no img_encoder.* keys); expected the official GroupViT .pth "
            "with a 'model' state dict"
        )
    return official_to_ours(state), heads
