"""Unpair-Seg behind the shared inference interface (``mixreorg.inference.backend.DenseBackend``): ``eval``,
``segment`` and ``Predictor`` run it with the same images, windows, protocols and readouts as any checkpoint; and
promptable masks for ``segment --points/--boxes`` and ``Predictor.predict_prompts``.

A window's score for a label, per pixel: its automatic masks (the point grid, score threshold, overlap suppression)
each classified by the cosine of its adapted region embedding with the label's text embedding, averaged over the
masks covering the pixel with their probabilities as weights; where the masks cover less than one whole mask's
worth (probabilities summing under 1), the rest of the weight goes to the pixel's own adapted dense embedding, so no
pixel is left unscored. From cosines on, the shared ``cosine_crop_scorer`` applies the protocol (CLIP's softmax at
the backbone's logit scale, background rule, PAMR), as for the training-free methods.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mixreorg.evaluation.protocols import Protocol
from mixreorg.evaluation.sliding import CropFn
from mixreorg.inference.backend import check_precision, cosine_crop_scorer, group_embeddings


def _upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


class UnpairSegBackend:
    def __init__(self, model) -> None:
        self.model = model.eval()
        self.name = "unpairseg"
        self.image_size = model.image_size
        self.mean, self.std = model.backbone.pixel_stats()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device) -> UnpairSegBackend:
        self.model.to(device)
        return self

    @torch.no_grad()
    def encode_labels(self, labels: Sequence[Sequence[str]], templates: Sequence[str],
                      synonyms: str = "mean") -> Tensor:
        per_name = self.model.backbone.embed_names([name for group in labels for name in group], templates)
        return per_name if synonyms == "max" else group_embeddings(per_name, labels)

    @torch.no_grad()
    def cosines(self, crops: Tensor, embeddings: Tensor) -> Tensor:
        """[N, 3, h, w] normalised windows -> [N, Q, h, w] cosine similarity of each pixel with each embedding."""
        model, settings = self.model, self.model.cfg.inference
        size = (crops.shape[-2], crops.shape[-1])
        feats = model.features(crops)
        proposals = model.automatic_masks(feats, settings.grid, settings.score, settings.overlap, settings.chunk)
        with torch.autocast(crops.device.type, enabled=False):
            adapted = model.dense(feats, adapted=True).float()
            embeddings = embeddings.float()
            dense = torch.einsum("bdhw,qd->bqhw", model.pixel_embeddings(adapted), embeddings)
            out = _upsample(dense, size)
            for index, masks in enumerate(proposals):
                if not len(masks.scores):
                    continue
                probs = _upsample(masks.logits[None].float(), size)[0].sigmoid()  # [K, h, w]
                regions = model.region_embeddings(adapted[index:index + 1], (masks.logits > 0).float()[None])[0]
                weighted = torch.einsum("khw,kq->qhw", probs, regions @ embeddings.t())
                cover = probs.sum(dim=0)
                out[index] = weighted / cover.clamp(min=1) + (1 - cover.clamp(max=1)) * out[index]
        return out

    def crop_scorer(self, embeddings: Tensor, protocol: Protocol, precision: str = "fp32") -> CropFn:
        check_precision(precision, self.device)
        scale = self.model.backbone.logit_scale()
        return cosine_crop_scorer(lambda crops: self.cosines(crops, embeddings), scale, protocol, precision)

    # ---------------------------------------------------------------------------------------------- prompts
    @torch.no_grad()
    def prompt_masks(self, rgb: np.ndarray, boxes: Tensor, kinds: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """An [H, W, 3] uint8 image and [K, 4] prompt boxes in its pixels, [K] kinds -> (mask probabilities
        [K, H, W], predicted IoU [K], adapted region embeddings [K, D]). The image is resized so its long side is
        the model's size and padded to a square (SAM's frame); masks come back at the image's size."""
        model, side = self.model, self.image_size
        height, width = rgb.shape[:2]
        scale = side / max(height, width)
        inner = (max(1, round(height * scale)), max(1, round(width * scale)))
        pixels = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1)[None].float()
        frame = torch.zeros(1, 3, side, side, device=self.device)
        frame[..., : inner[0], : inner[1]] = _upsample(pixels, inner)
        normalised = model.preprocess(frame)
        normalised[..., inner[0]:, :] = 0  # the padding is the mean colour, as SAM pads
        normalised[..., :, inner[1]:] = 0
        feats = model.features(normalised)
        logits, ious = model.predict_masks(feats, (boxes.float() * scale)[None].to(self.device),
                                           kinds[None].to(self.device))
        regions = model.region_embeddings(model.dense(feats, adapted=True).float(), (logits > 0).float())[0]
        full = _upsample(logits.float(), (side, side))[..., : inner[0], : inner[1]]
        probs = _upsample(full, (height, width))[0].sigmoid()
        return probs, ious[0].float().sigmoid(), regions
