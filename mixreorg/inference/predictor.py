"""The user-facing predictor: load a model once, segment any number of images with any labels.

    from mixreorg import Predictor

    predictor = Predictor.from_checkpoint("group_vit_gcc_yfcc_30e")
    # or a training-free method on a pretrained CLIP:
    # predictor = Predictor.from_model("openclip:ViT-B-16:openai", method="naclip", protocol="sclip")
    predictor.set_labels(["cat", "dog", "sky"])        # embedded once, reused by every predict
    result = predictor.predict("photo.jpg")            # or a PIL image, array, tensor, or a list of them
    result.label_map, result.present, result.ranking()
    result.save("out/")                                # mask PNG, picture, JSON; result.overlay() is the picture

Images are resized and scored with the sliding window of the named evaluation protocol as it applies to this
model (``mixreorg.evaluation.protocols.resolve_protocol`` with ``dataset=IMAGES``) and read out as the protocol
reads them (``mixreorg.evaluation.readout``), so ``predict`` computes what ``mixreorg eval`` computes; ``size``,
``crop``, ``stride``, ``templates`` and ``pamr`` override it. Under groupvit and unified, scores are brought back to
the original resolution a few rows at a time, so large photos never need a full-resolution [labels, H, W] tensor
(unless ``return_probs=True`` asks for exactly that); sclip's readout works at the original size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mixreorg.errors import MixreorgError
from mixreorg.evaluation.protocols import IMAGES, Protocol, resolve_protocol
from mixreorg.evaluation.readout import make_readout
from mixreorg.evaluation.segmentation import slide_settings
from mixreorg.evaluation.sliding import score_images
from mixreorg.inference.backend import DenseBackend, as_backend, check_precision
from mixreorg.inference.inputs import (
    BACKGROUND,
    ImageLike,
    LabelsLike,
    check_background_threshold,
    is_batch,
    label_groups,
    load_image,
)
from mixreorg.inference.result import Segmentation


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks the GPU when there is one; 'cuda' without a GPU is a user error, not a crash."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MixreorgError("--device cuda was asked for but no GPU is visible; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise MixreorgError(f"unknown device '{name}'; use auto, cpu or cuda") from exc


def load_for_inference(checkpoint: str | Path, cache_dir: str | Path | None = None) -> tuple[torch.nn.Module, object]:
    """(model in eval mode, config) from a path in any supported format, a released name or a Hub model id."""
    from mixreorg.checkpoint import load_model
    from mixreorg.inference.checkpoints import resolve_checkpoint

    path = resolve_checkpoint(str(checkpoint), cache_dir=cache_dir)
    model, config = load_model(path)
    return model.eval(), config


class Predictor:
    """Holds a model (behind a ``DenseBackend``) and the embeddings of the current labels."""

    def __init__(
        self,
        model: torch.nn.Module | DenseBackend,
        device: str | torch.device = "auto",
        protocol: str = "groupvit",
        size: int | None = None,
        crop: int | None = None,
        stride: int | None = None,
        templates: Sequence[str] | None = None,
        precision: str = "fp32",
        batch_size: int = 4,
        checkpoint: str = "",
        pamr: bool = False,
    ) -> None:
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.backend = as_backend(model)
        self.backend.to(self.device)
        self.precision = precision
        check_precision(precision, self.device)
        if batch_size < 1:
            raise MixreorgError("batch_size must be at least 1")
        self.batch_size = batch_size
        self.checkpoint = checkpoint
        self._overrides = dict(short_side=size, crop=crop, stride=stride, templates=templates, pamr=pamr)
        self.protocol_name = protocol
        self.templates = self.protocol().templates  # validates the protocol and every override now
        self._groups: list[tuple[str, ...]] = []
        self._embeddings: torch.Tensor | None = None

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | Path, device: str = "auto", cache_dir: str | Path | None = None, **kwargs
    ) -> Predictor:
        """A folder or file in any supported format, a name from data_manifests/checkpoints.yaml, or a Hugging
        Face Hub model (owner/name). ``kwargs`` go to the constructor (protocol, size, crop, precision, ...)."""
        model, _ = load_for_inference(checkpoint, cache_dir)
        return cls(model, device=device, checkpoint=str(checkpoint), **kwargs)

    @classmethod
    def from_model(cls, model: str, method: str = "plain", device: str = "auto", **kwargs) -> Predictor:
        """A training-free ``method`` (plain, maskclip, sclip, clearclip, naclip) on an open_clip model named
        ``openclip:MODEL:TAG`` (weights through open_clip and the Hugging Face cache). ``kwargs`` go to the
        constructor (protocol, size, crop, pamr, precision, ...); the default protocol is sclip, the methods' own."""
        from mixreorg.training_free.backend import TrainingFreeBackend

        kwargs.setdefault("protocol", "sclip")
        target = resolve_device(device)
        return cls(TrainingFreeBackend.from_spec(model, method, target), device=target, **kwargs)

    @property
    def model(self) -> torch.nn.Module:
        return self.backend.model

    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    def protocol(self, background_threshold: float | None = None) -> Protocol:
        """The settings ``predict`` runs with (those of ``mixreorg eval``'s protocol for this model)."""
        return resolve_protocol(self.protocol_name, IMAGES, background_threshold is not None, self.backend.image_size,
                                background_score=background_threshold, mean=self.backend.mean, std=self.backend.std,
                                **self._overrides)

    def set_labels(self, labels: LabelsLike) -> None:
        """Embed the labels once; later ``predict`` calls with the same labels reuse the embeddings. A label may be
        a tuple of synonyms, ('person', 'person in shirt'): their embeddings are averaged, the first names it."""
        groups = label_groups(labels)
        if groups != self._groups or self._embeddings is None:
            self._embeddings = self.backend.encode_labels(groups, self.templates, self.protocol().synonyms)
            self._groups = groups

    @property
    def _labels(self) -> list[str]:
        return [group[0] for group in self._groups]

    def settings(self, protocol: Protocol) -> dict:
        """What a result records about how it was made."""
        synonyms = {group[0]: list(group[1:]) for group in self._groups if len(group) > 1}
        method = getattr(self.backend, "method", None)
        source = {"model": self.backend.name, "method": method.name} if method else {"checkpoint": self.checkpoint}
        return {**source, "precision": self.precision, "protocol": protocol.as_dict(),
                **({"synonyms": synonyms} if synonyms else {})}

    @torch.no_grad()
    def predict(
        self,
        images: ImageLike | Sequence[ImageLike],
        labels: LabelsLike | None = None,
        background_threshold: float | None = None,
        return_probs: bool = False,
    ) -> Segmentation | list[Segmentation]:
        """Segment one image (a path, PIL image, [H, W, 3] array uint8 or float 0-1, [3, H, W] tensor) or a list
        (or [B, ...] batch) of them into ``labels`` (default: the last ones set). Returns one ``Segmentation``
        per image; ``return_probs`` adds each label's probability map at the image's size."""
        if labels is not None:
            self.set_labels(labels)
        if self._embeddings is None:
            raise MixreorgError("no labels given; pass labels=['cat', 'dog'] or call set_labels first")
        if background_threshold is not None:
            label_groups(self._groups, reserve_background=True)
            check_background_threshold(background_threshold)
        batch = is_batch(images)
        inputs = list(images) if batch else [images]
        rgbs = [load_image(image) for image in inputs]
        if not rgbs:
            return []
        protocol = self.protocol(background_threshold)
        scorer = self.backend.crop_scorer(self._embeddings, protocol, self.precision)
        readout = make_readout(protocol, self._groups, added_background=True)
        settings = slide_settings(protocol, self.batch_size)
        names = ([BACKGROUND] if background_threshold is not None else []) + self._labels
        results = []
        for start in range(0, len(rgbs), self.batch_size):  # a chunk's windows share forward passes
            chunk = rgbs[start : start + self.batch_size]
            on_device = [torch.from_numpy(rgb).to(self.device) for rgb in chunk]
            scores, workings = score_images(on_device, scorer, settings, return_inputs=True)
            for rgb, score, working in zip(chunk, scores, workings, strict=True):
                results.append(self._result(rgb, score, working, readout, names, background_threshold is not None,
                                            return_probs))
                results[-1].settings = self.settings(protocol)
        for result, source in zip(results, inputs, strict=True):
            if isinstance(source, (str, Path)):
                result.source = str(Path(source).expanduser().resolve())
        return results if batch else results[0]

    @torch.no_grad()
    def predict_prompts(self, image: ImageLike, points=(), boxes=(), labels: LabelsLike | None = None) -> Segmentation:
        """Promptable masks (Unpair-Seg checkpoints): one mask per point (x, y) and per box (x1, y1, x2, y2), in the
        image's pixels. Label k is the k-th prompt (points first), named by its best label when labels are given
        or set; label 0 is background. ``result.probs`` holds every prompt's mask probabilities."""
        from mixreorg.inference.visual_prompts import prompt_segmentation

        if labels is not None:
            self.set_labels(labels)
        rgb = load_image(image)
        result = prompt_segmentation(self.backend, rgb, list(points), list(boxes), self._labels, self._embeddings)
        result.settings = {**self.settings(self.protocol()), **result.settings}
        if isinstance(image, (str, Path)):
            result.source = str(Path(image).expanduser().resolve())
        return result

    @staticmethod
    def _result(rgb: np.ndarray, scores: torch.Tensor, working: torch.Tensor, readout, names: list[str],
                has_background: bool, return_probs: bool) -> Segmentation:
        """``scores``: the window-averaged [K, h, w] scores of the [3, h, w] ``working`` input."""
        size = tuple(rgb.shape[:2])
        probs = None
        if return_probs:
            probs = readout.label_scores(scores, working, size)
            label_map = probs.max(dim=0).indices  # your own pictures have no area threshold: the argmax decides
        else:
            label_map = readout.label_map(scores, working, size)
        per_label = readout.pointwise(scores)  # [labels, h, w] at the working size, for the rankings
        return Segmentation(
            label_map=label_map.cpu().numpy().astype(np.uint8 if len(names) <= 256 else np.uint16),
            labels=names,
            scores=_label_confidence(per_label),
            label_scores=per_label.flatten(1).max(dim=1).values.cpu().numpy(),
            has_background=has_background,
            image=rgb,
            probs=None if probs is None else probs.cpu().numpy(),
        )


def _label_confidence(scores: torch.Tensor) -> np.ndarray:
    """Mean winning score of each label over the working-resolution pixels it wins (0 where it wins none)."""
    best, winner = scores.max(dim=0)
    count = torch.bincount(winner.flatten(), minlength=scores.shape[0]).double()
    total = torch.bincount(winner.flatten(), weights=best.flatten().double(), minlength=scores.shape[0])
    return (total / count.clamp(min=1)).cpu().numpy()
