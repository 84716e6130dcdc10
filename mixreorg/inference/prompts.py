"""Class names -> text embeddings, averaged over prompt templates (GroupViT's zero-shot recipe)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mixreorg.data.templates import SIMPLE_TEMPLATES
from mixreorg.errors import MixreorgError
from mixreorg.model.mixreorg import MixReorgModel
from mixreorg.model.tokenizer import tokenize


@torch.no_grad()
def class_embeddings(
    model: MixReorgModel,
    class_names: list[str],
    templates: tuple[str, ...] | list[str] = SIMPLE_TEMPLATES,
    batch_size: int = 256,
) -> Tensor:
    """[C, D] L2-normalised class embeddings.

    Embeddings of each template are averaged *before* normalisation, as the official code does.
    """
    names = [name.strip() for name in class_names]
    if not names or any(not name for name in names):
        raise MixreorgError("class names must be non-empty; pass a comma-separated list like 'cat,dog,sky'")
    if not templates:
        raise MixreorgError("at least one prompt template is needed, e.g. 'a photo of a {}.'")
    texts = [template.format(name) for name in names for template in templates]
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenize(texts[start : start + batch_size], model.context_length).to(device)
        chunks.append(model.encode_text(tokens).float())
    embeddings = torch.cat(chunks).reshape(len(names), len(templates), -1).mean(dim=1)
    return F.normalize(embeddings, dim=-1)
