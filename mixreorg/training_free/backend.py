"""``TrainingFreeBackend``: an open_clip ViT and a training-free method behind the shared inference interface
(``mixreorg.inference.backend.DenseBackend``), so ``eval``, ``segment`` and ``Predictor`` run it exactly as they run
a GroupViT or MixReorg checkpoint: same images, windows, protocols and readouts.

Text: CLIP's zero-shot recipe, as the SCLIP lineage computes it: each prompt's embedding is normalised, the
templates' are averaged, the mean is normalised again. Windows: the method's dense patch features, normalised,
against the label (or name) embeddings; the patch grid's cosines are resized bilinearly to the window. Under the
sclip protocol those cosines are the window's scores (the readout does the softmax). Under groupvit and unified, a
window's label scores are CLIP's probabilities, softmax(model logit scale x cosine) over the labels, then the
protocol's background rule (the threshold rule capped by the window's best score, as GroupViT caps by its best
segment).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mixreorg.errors import MixreorgError
from mixreorg.evaluation.protocols import Protocol, check_templates
from mixreorg.evaluation.sliding import CropFn
from mixreorg.inference.backend import check_precision, cosine_crop_scorer, group_embeddings
from mixreorg.training_free.dense import dense_features
from mixreorg.training_free.methods import Method, get_method
from mixreorg.training_free.openclip import ModelSpec, create_openclip, parse_model_spec, tokenizer_for, vision_tower


def template_embeddings(encode: Callable[[list[str]], Tensor], names: Sequence[str], templates: Sequence[str],
                        batch_size: int = 512) -> Tensor:
    """[Q, D] normalised embeddings: per name, the normalised mean of its prompts' normalised ``encode`` outputs
    (CLIP's zero-shot recipe, as the SCLIP lineage computes it)."""
    templates = check_templates(templates)
    prompts = [template.format(name) for name in names for template in templates]
    chunks = [F.normalize(encode(prompts[start : start + batch_size]).float(), dim=-1)
              for start in range(0, len(prompts), batch_size)]
    embeddings = F.normalize(torch.cat(chunks).reshape(len(names), len(templates), -1).mean(dim=1), dim=-1)
    if not torch.isfinite(embeddings).all():
        raise MixreorgError("the text tower gives non-finite embeddings; its weights are broken")
    return embeddings


def _default_tokenizer(model: torch.nn.Module):
    import open_clip

    return open_clip.get_tokenizer("", context_length=int(getattr(model, "context_length", 77)))


class TrainingFreeBackend:
    """An open_clip model (image and text towers) with ``method`` applied to its image tower's last block."""

    def __init__(self, model: torch.nn.Module, method: str | Method = "plain", tokenizer=None,
                 name: str = "openclip") -> None:
        self.name = name
        self.visual = vision_tower(model, name)
        self.model = model.eval()
        self.method = method if isinstance(method, Method) else get_method(method)
        # open_clip's own tokenizer for the model; without one, CLIP's BPE at the text tower's context length
        self.tokenizer = tokenizer or _default_tokenizer(model)
        self.image_size = int(self.visual.image_size[0])
        config = getattr(self.visual, "preprocess_cfg", None) or {}
        mean = config.get("mean", (0.48145466, 0.4578275, 0.40821073))  # CLIP's, open_clip's default
        std = config.get("std", (0.26862954, 0.26130258, 0.27577711))
        self.mean = tuple(255.0 * float(v) for v in mean)
        self.std = tuple(255.0 * float(v) for v in std)

    @classmethod
    def from_spec(cls, spec: str | ModelSpec, method: str = "plain",
                  device: str | torch.device = "cpu") -> TrainingFreeBackend:
        """``openclip:MODEL:TAG`` (weights through open_clip and the Hugging Face cache) with ``method``."""
        chosen = get_method(method)  # an unknown method fails before any download
        parsed = spec if isinstance(spec, ModelSpec) else parse_model_spec(spec)
        model = create_openclip(parsed, device)
        return cls(model, chosen, tokenizer_for(parsed), name=str(parsed))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device) -> TrainingFreeBackend:
        self.model.to(device)
        return self

    @torch.no_grad()
    def encode_names(self, names: Sequence[str], templates: Sequence[str], batch_size: int = 512) -> Tensor:
        """[Q, D] normalised embeddings: per name, the normalised mean of its normalised prompt embeddings."""
        return template_embeddings(lambda texts: self.model.encode_text(self.tokenizer(texts).to(self.device)),
                                   names, templates, batch_size)

    def encode_labels(self, labels: Sequence[Sequence[str]], templates: Sequence[str],
                      synonyms: str = "mean") -> Tensor:
        per_name = self.encode_names([name for group in labels for name in group], templates)
        return per_name if synonyms == "max" else group_embeddings(per_name, labels)

    @torch.no_grad()
    def cosines(self, crops: Tensor, embeddings: Tensor) -> Tensor:
        """[N, 3, h, w] windows -> [N, Q, h, w] cosine similarity of each pixel's patch with each embedding."""
        tokens, grid = dense_features(self.visual, crops, self.method)
        with torch.autocast(crops.device.type, enabled=False):
            patches = F.normalize(tokens[:, 1:].float(), dim=-1)
            maps = (patches @ embeddings.float().t()).transpose(1, 2).reshape(crops.shape[0], -1, *grid)
            return F.interpolate(maps, size=crops.shape[-2:], mode="bilinear", align_corners=False)

    def crop_scorer(self, embeddings: Tensor, protocol: Protocol, precision: str = "fp32") -> CropFn:
        check_precision(precision, self.device)
        scale = float(self.model.logit_scale.exp()) if hasattr(self.model, "logit_scale") else 100.0
        return cosine_crop_scorer(lambda crops: self.cosines(crops, embeddings), scale, protocol, precision)
