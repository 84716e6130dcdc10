"""Per-crop zero-shot scores under a protocol: dense class logits plus its background rule.

Shared by the benchmark runner and the user-facing predictor, so both score crops identically.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mixreorg.errors import MixreorgError
from mixreorg.evaluation.pamr import refine_windows
from mixreorg.evaluation.sliding import CropFn
from mixreorg.inference.dense import dense_logits, with_background
from mixreorg.inference.prompts import class_embeddings
from mixreorg.model.mixreorg import MixReorgModel
from mixreorg.model.tokenizer import get_tokenizer


def apply_background(logits: Tensor, background: str, background_score: float | None, cap: Tensor) -> Tensor:
    """A protocol's window-level background rule on [N, C, h, w] label scores in 0-1: "threshold" (GroupViT: a
    background channel where no label reaches min(score, the best of ``cap``)), "constant" (TCL: a channel holding
    the score), or "none". The rule's channel comes first."""
    if background == "threshold":
        return with_background(logits, float(background_score), cap)
    if background == "constant":
        fill = logits.new_full((logits.shape[0], 1, *logits.shape[2:]), float(background_score))
        return torch.cat([fill, logits], dim=1)
    return logits


def crop_scorer(
    model: MixReorgModel,
    embeddings: Tensor,
    background: str = "none",
    background_score: float | None = None,
    dense_mode: str = "groupvit",
    top_k: int = 5,
    pamr_steps: int = 0,
    pamr_dilations: tuple[int, ...] = (),
) -> CropFn:
    """[N, 3, h, w] -> [N, C (+1 background first), h, w] scores for the [C, D] class ``embeddings``; with
    ``pamr_steps`` the class scores are refined per window (TCL's placement) before the background rule."""
    if background not in ("none", "threshold", "constant"):
        raise ValueError(f"background must be none, threshold or constant, got {background!r}")
    if background != "none" and background_score is None:
        raise ValueError("a background rule needs a background_score")

    @torch.no_grad()
    def score(crops: Tensor) -> Tensor:
        out = dense_logits(model, crops, embeddings, mode=dense_mode, top_k=top_k)
        logits = refine_windows(crops, out.logits, pamr_steps, pamr_dilations) if pamr_steps else out.logits
        return apply_background(logits, background, background_score, out.segment_logits)

    return score


def check_prompts_fit(model: MixReorgModel, names: list[str], templates: tuple[str, ...] | list[str]) -> None:
    """Refuse class names whose prompts the text encoder would silently truncate."""
    limit = model.context_length
    tokenizer = get_tokenizer(limit)
    for name in names:
        for template in templates:
            length = len(tokenizer.encode(template.format(name))) + 2  # start and end tokens
            if length > limit:
                raise MixreorgError(
                    f"the prompt '{template.format(name)}' needs {length} tokens but this checkpoint's text "
                    f"encoder takes {limit}; shorten the class name '{name}'"
                )


def embed_classes(model: MixReorgModel, names: list[str], templates: tuple[str, ...] | list[str]) -> Tensor:
    """Validated [C, D] class embeddings (template-averaged, normalised) for ``names``."""
    check_prompts_fit(model, names, templates)
    embeddings = class_embeddings(model, names, templates, batch_size=1024)  # ImageNet: 7,000 prompts
    bad = (~torch.isfinite(embeddings).all(dim=1)).nonzero().flatten().tolist()
    if bad:
        raise MixreorgError(
            f"this checkpoint's text encoder gives non-finite embeddings for '{names[bad[0]]}' "
            f"({len(bad)} classes in all); the text weights are broken or missing, use a complete checkpoint"
        )
    return embeddings
