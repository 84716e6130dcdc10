"""The user-facing predictor: load a checkpoint once, segment any number of images with any labels.

    predictor = Predictor.from_checkpoint("group_vit_gcc_yfcc_30e")
    result = predictor.predict("photo.jpg", labels=["cat", "dog", "sky"], background_threshold=0.9)
    result.label_map  # [H, W] indices into result.labels, at the photo's own size and orientation

Images are resized to a short side of ``size`` (long side at most ``max_long_side``) and scored with
GroupViT's sliding window (``crop``/``stride``), exactly as the ``groupvit`` evaluation protocol does;
the scores are brought back to the original resolution a few rows at a time, so large photos never
need a full-resolution [labels, H, W] tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from mixreorg.data.templates import SIMPLE_TEMPLATES
from mixreorg.errors import MixreorgError
from mixreorg.evaluation.protocols import IMAGENET_MEAN, IMAGENET_STD
from mixreorg.evaluation.sliding import prepare, rescale_size, resize_argmax, slide
from mixreorg.evaluation.zero_shot import crop_scorer, embed_classes
from mixreorg.model.mixreorg import MixReorgModel

BACKGROUND = "background"


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


def load_for_inference(checkpoint: str | Path, cache_dir: str | Path | None = None) -> tuple[MixReorgModel, object]:
    """(model in eval mode, config) from a path in any supported format or a released name (downloaded once)."""
    from mixreorg.checkpoint import load_model
    from mixreorg.inference.checkpoints import resolve_checkpoint

    path = resolve_checkpoint(str(checkpoint), cache_dir=cache_dir)
    model, config = load_model(path)
    return model.eval(), config


def parse_labels(labels: Sequence[str] | str, reserve_background: bool = False) -> list[str]:
    """Clean a label list ('cat, dog' or ['cat', 'dog']); empty or repeated labels are refused, and so is
    'background' when ``reserve_background`` (a background threshold adds that label itself)."""
    items = labels.split(",") if isinstance(labels, str) else list(labels)
    names = [item.strip() for item in items]
    if not names or any(not name for name in names):
        raise MixreorgError("labels must be a comma-separated list without empty entries, e.g. 'cat,dog,sky'")
    seen: dict[str, str] = {}
    for name in names:
        key = name.casefold()
        if key in seen:
            raise MixreorgError(f"label '{name}' is given twice; list every label once")
        seen[key] = name
    if reserve_background and BACKGROUND in seen:
        raise MixreorgError("'background' is added by the background threshold; drop it from the labels")
    return names


def check_background_threshold(threshold: float | None) -> None:
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise MixreorgError(
            f"--background-threshold {threshold} is outside 0-1: it compares with class scores in 0-1 "
            "(GroupViT uses 0.35-0.95)"
        )


def _to_rgb8(image: Image.Image) -> np.ndarray:
    """[H, W, 3] uint8 RGB from any PIL mode (16-bit and float greyscale rescaled, alpha over white)."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            low, high = float(values.min()), float(values.max())
            values = (values - low) / (high - low or 1.0) * 255
        elif values.max() > 255:
            values = values / 257  # 16-bit range onto 8 bits
        grey = values.round().clip(0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.array(image.convert("RGB"), dtype=np.uint8)  # a writable copy (torch.from_numpy needs one)


def load_image(source: str | Path | Image.Image | np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 RGB, upright (EXIF orientation applied). Unreadable files raise MixreorgError."""
    if isinstance(source, np.ndarray):
        array = source
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (3, 4) or array.dtype != np.uint8:
            raise MixreorgError("an array image must be uint8 [H, W], [H, W, 3] (RGB) or [H, W, 4] (RGBA)")
        if array.shape[2] == 4:
            return _to_rgb8(Image.fromarray(array))
        return array if array.flags.c_contiguous and array.flags.writeable else np.array(array)
    if isinstance(source, Image.Image):
        return _to_rgb8(ImageOps.exif_transpose(source) or source)
    path = Path(source)
    try:
        with Image.open(path) as image:
            image.seek(0)  # first frame of animations and multi-page TIFFs
            upright = ImageOps.exif_transpose(image) or image
            return _to_rgb8(upright)
    except FileNotFoundError as exc:
        raise MixreorgError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise MixreorgError(f"{path} is a folder, not an image") from exc
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise MixreorgError(f"{path} is not a readable image ({type(exc).__name__}: {exc})") from exc


@dataclass
class Segmentation:
    label_map: np.ndarray  # [H, W] uint8 (uint16 beyond 255 labels): index into ``labels``
    labels: list[str]  # "background" first when a background threshold was used
    scores: np.ndarray  # [len(labels)] mean winning score of each label's pixels (0 where absent)
    has_background: bool = False
    image: np.ndarray | None = field(default=None, repr=False)  # the RGB input, for overlays

    @property
    def pixel_share(self) -> list[float]:
        counts = np.bincount(self.label_map.ravel(), minlength=len(self.labels))
        return [float(c) / self.label_map.size for c in counts]

    def mask(self, label: str) -> np.ndarray:
        """Boolean [H, W] mask of one label."""
        if label not in self.labels:
            raise KeyError(f"'{label}' is not one of {self.labels}")
        return self.label_map == self.labels.index(label)

    def masks(self) -> dict[str, np.ndarray]:
        return {name: self.label_map == index for index, name in enumerate(self.labels)}


class Predictor:
    """Holds a model and the text embeddings of the current labels; ``predict`` segments one image."""

    def __init__(
        self,
        model: MixReorgModel,
        device: str | torch.device = "auto",
        size: int = 448,
        crop: int = 448,
        stride: int = 224,
        max_long_side: int = 2048,
        batch_size: int = 4,
        templates: Sequence[str] = SIMPLE_TEMPLATES,
        top_k: int = 5,
        checkpoint: str = "",
    ) -> None:
        if size <= 0 or crop <= 0 or stride <= 0:
            raise MixreorgError("size, crop and stride must be positive")
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.model = model.to(self.device).eval()
        self.size, self.crop, self.stride, self.max_long_side = size, crop, stride, max(max_long_side, size)
        self.batch_size = batch_size
        self.templates = tuple(templates)
        self.top_k = top_k
        self.checkpoint = checkpoint
        self._labels: list[str] = []
        self._embeddings: torch.Tensor | None = None

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | Path, device: str = "auto", cache_dir: str | Path | None = None, **kwargs
    ) -> Predictor:
        """A folder or file in any supported format, or a name from data_manifests/checkpoints.yaml."""
        model, _ = load_for_inference(checkpoint, cache_dir)
        return cls(model, device=device, checkpoint=str(checkpoint), **kwargs)

    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    def set_labels(self, labels: Sequence[str] | str) -> None:
        """Embed the labels once; later ``predict`` calls with the same labels reuse the embeddings."""
        names = parse_labels(labels)
        if names != self._labels or self._embeddings is None:
            self._embeddings = embed_classes(self.model, names, self.templates)
            self._labels = names

    @torch.no_grad()
    def predict(
        self,
        image: str | Path | Image.Image | np.ndarray,
        labels: Sequence[str] | str | None = None,
        background_threshold: float | None = None,
    ) -> Segmentation:
        if labels is not None:
            self.set_labels(labels)
        if self._embeddings is None:
            raise MixreorgError("no labels given; pass labels=['cat', 'dog'] or call set_labels first")
        if background_threshold is not None:
            parse_labels(self._labels, reserve_background=True)
            check_background_threshold(background_threshold)
        rgb = load_image(image)
        height, width = rgb.shape[:2]
        working = rescale_size(height, width, self.size, self.max_long_side)
        pixels = prepare(torch.from_numpy(rgb).to(self.device), working, IMAGENET_MEAN, IMAGENET_STD)
        scorer = crop_scorer(
            self.model,
            self._embeddings,
            background="none" if background_threshold is None else "threshold",
            background_score=background_threshold,
            top_k=self.top_k,
        )
        (scores,) = slide([pixels], scorer, self.crop, self.stride, self.batch_size)
        names = ([BACKGROUND] if background_threshold is not None else []) + self._labels
        label_map = resize_argmax(scores, (height, width))
        return Segmentation(
            label_map=label_map.cpu().numpy().astype(np.uint8 if len(names) <= 256 else np.uint16),
            labels=names,
            scores=_label_confidence(scores),
            has_background=background_threshold is not None,
            image=rgb,
        )


def _label_confidence(scores: torch.Tensor) -> np.ndarray:
    """Mean winning score of each label over the working-resolution pixels it wins (0 where it wins none)."""
    best, winner = scores.max(dim=0)
    count = torch.bincount(winner.flatten(), minlength=scores.shape[0]).double()
    total = torch.bincount(winner.flatten(), weights=best.flatten().double(), minlength=scores.shape[0])
    return (total / count.clamp(min=1)).cpu().numpy()


def read_labels_file(path: str | Path) -> list[str]:
    """Labels from a text file: one per line (or comma-separated), blank lines and '#' comments skipped."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise MixreorgError(f"cannot read the labels file {path} ({exc.strerror or exc})") from exc
    labels = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            labels += [item.strip() for item in line.split(",")]
    if not labels:
        raise MixreorgError(f"the labels file {path} holds no labels; write one label per line")
    return labels


def is_image_name(path: Path) -> bool:
    """Whether PIL knows the file's extension (used to pick images out of a folder)."""
    Image.init()
    return path.suffix.lower() in Image.registered_extensions()


def expand_inputs(items: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Files to segment from paths, folders (their image files, sorted) and glob patterns, in order.

    Returns the files and one message per item that named nothing; duplicates are dropped.
    """
    import glob

    files: list[Path] = []
    problems: list[str] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and is_image_name(p))
            if not found:
                problems.append(f"{item}: the folder holds no image files")
            files += found
        elif path.exists():
            files.append(path)
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not matches:
                problems.append(f"{item}: the pattern matches no file")
            files += matches
        else:
            problems.append(f"{item}: no such file or folder")
    return list(dict.fromkeys(files)), problems
