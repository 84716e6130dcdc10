"""One image's segmentation, as ``Predictor.predict`` returns it: label map, scores, pictures, files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Segmentation:
    label_map: np.ndarray  # [H, W] uint8 (uint16 beyond 256 labels): index into ``labels``
    labels: list[str]  # "background" first when a background threshold was used
    scores: np.ndarray  # [K] mean winning score of each label's pixels (0 where absent)
    label_scores: np.ndarray  # [K] max over pixels of each label's probability: ranks labels, present or not
    has_background: bool = False
    image: np.ndarray | None = field(default=None, repr=False)  # the RGB input, for pictures
    probs: np.ndarray | None = field(default=None, repr=False)  # [K, H, W] float32 with return_probs=True
    source: str | None = None  # the absolute path the image was read from
    settings: dict = field(default_factory=dict, repr=False)  # protocol, precision, checkpoint: what ran

    @property
    def pixel_share(self) -> list[float]:
        counts = np.bincount(self.label_map.ravel(), minlength=len(self.labels))
        return [float(c) / self.label_map.size for c in counts]

    @property
    def present(self) -> list[str]:
        """Labels that own at least one pixel, largest first."""
        shares = self.pixel_share
        return [self.labels[i] for i in sorted(range(len(shares)), key=lambda i: -shares[i]) if shares[i] > 0]

    def ranking(self) -> list[tuple[str, float]]:
        """(label, score) for every label, best first: how likely each is in the image."""
        order = np.argsort(-self.label_scores, kind="stable")
        return [(self.labels[i], float(self.label_scores[i])) for i in order]

    def mask(self, label: str) -> np.ndarray:
        """Boolean [H, W] mask of one label."""
        if label not in self.labels:
            raise KeyError(f"'{label}' is not one of {self.labels}")
        return self.label_map == self.labels.index(label)

    def masks(self) -> dict[str, np.ndarray]:
        return {name: self.label_map == index for index, name in enumerate(self.labels)}

    def colors(self) -> np.ndarray:
        """[K, 3] uint8: each label's colour in masks and pictures (see ``mixreorg.inference.colors``)."""
        from mixreorg.inference.colors import label_colors

        return label_colors(self.labels, self.has_background)

    def overlay(self) -> Image.Image:
        """The picture: image | overlay with outlines and name tags, legend below (needs the input image)."""
        from mixreorg.inference.render import render_overlay

        if self.image is None:
            raise ValueError("this result holds no image to draw on")
        return render_overlay(self.image, self.label_map, self.labels, self.colors(), self.has_background)

    def record(self) -> dict:
        """The JSON record: settings, every label's score, and the present labels' segments (COCO RLE masks)."""
        from mixreorg.inference.outputs import segmentation_record

        return segmentation_record(self)

    def save(self, out_dir: str | Path, stem: str | None = None,
             formats: Sequence[str] = ("mask", "overlay", "json")) -> list[Path]:
        """Write ``STEM_mask.png``, ``STEM_overlay.png`` and ``STEM.json`` (or the chosen ``formats``) into
        ``out_dir``; the stem defaults to the source file's. Returns the paths written."""
        from mixreorg.inference.outputs import parse_formats, write_outputs

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        chosen = parse_formats(",".join(formats))
        return write_outputs(self, out, stem or (Path(self.source).stem if self.source else "image"), chosen)
