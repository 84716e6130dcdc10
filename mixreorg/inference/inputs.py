"""What users hand to ``segment`` and ``Predictor``: images in any form, label lists, template files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from mixreorg.errors import MixreorgError

BACKGROUND = "background"
ImageLike = str | Path | Image.Image | np.ndarray | torch.Tensor


LabelsLike = str | Sequence[str | Sequence[str]]


def label_groups(labels: LabelsLike, reserve_background: bool = False) -> list[tuple[str, ...]]:
    """Labels as (name, synonym, ...) groups, from 'cat, dog' or ['cat', ('person', 'person in shirt')]: one group
    per label, shown under its first name. Empty or repeated labels are refused, and so is 'background' when
    ``reserve_background`` (a background threshold adds that label itself)."""
    items = labels.split(",") if isinstance(labels, str) else list(labels)
    groups = [tuple(name.strip() for name in ([item] if isinstance(item, str) else item)) for item in items]
    if not groups or any(not group or not all(group) for group in groups):
        raise MixreorgError("labels must be a comma-separated list without empty entries, e.g. 'cat,dog,sky'")
    seen: dict[str, str] = {}
    for name in (name for group in groups for name in group):
        key = name.casefold()
        if key in seen:
            raise MixreorgError(f"label '{name}' is given twice; list every label once")
        seen[key] = name
    if reserve_background and BACKGROUND in seen:
        raise MixreorgError("'background' is added by the background threshold; drop it from the labels")
    return groups


def parse_labels(labels: LabelsLike, reserve_background: bool = False) -> list[str]:
    """The labels' names (each group's first), validated as ``label_groups`` does."""
    return [group[0] for group in label_groups(labels, reserve_background)]


def check_background_threshold(threshold: float | None) -> None:
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise MixreorgError(
            f"--background-threshold {threshold} is outside 0-1: it compares with class scores in 0-1 "
            "(GroupViT uses 0.35-0.95)"
        )


def _read_text(path: str | Path, what: str) -> str:
    path = Path(path)
    try:
        return path.read_text()
    except OSError as exc:
        raise MixreorgError(f"cannot read the {what} file {path} ({exc.strerror or exc})") from exc


def read_labels_file(path: str | Path) -> list[tuple[str, ...]]:
    """Labels from a text file, one per line; a line may add synonyms after commas ('person, person in shirt'),
    whose embeddings are averaged into the first name's (the class files of training-free methods look so; under
    the sclip protocol each name is scored and the label takes its best). Blank lines and '#' comments are skipped;
    a line whose names are empty (',', 'cat,,dog') is refused with its number."""
    groups = []
    for number, raw in enumerate(_read_text(path, "labels").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        names = tuple(name.strip() for name in line.split(","))
        if not all(names):
            raise MixreorgError(f"{path} line {number} ('{raw.strip()}') has an empty name; write the label and its "
                                "synonyms separated by commas, e.g. 'person, person in shirt'")
        groups.append(names)
    if not groups:
        raise MixreorgError(f"the labels file {path} holds no labels; write one label per line")
    return groups


def read_templates_file(path: str | Path) -> tuple[str, ...]:
    """Prompt templates from a text file, one per line with {} where the label goes ('a photo of a {}.');
    blank lines and lines starting with '#' are skipped."""
    from mixreorg.evaluation.protocols import check_templates

    lines = [line.strip() for line in _read_text(path, "templates").splitlines()]
    templates = [line for line in lines if line and not line.startswith("#")]
    if not templates:
        raise MixreorgError(f"the templates file {path} holds no templates; write one per line, e.g. "
                            "'a photo of a {}.'")
    return check_templates(templates)


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


def _array_to_rgb8(array: np.ndarray) -> np.ndarray:
    """[H, W], [H, W, 3] or [H, W, 4] arrays, uint8 (0-255) or float (0-1), as [H, W, 3] uint8 RGB."""
    if array.ndim == 2:
        array = array[:, :, None].repeat(3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise MixreorgError(f"an array image must be [H, W], [H, W, 3] (RGB) or [H, W, 4] (RGBA), got shape "
                            f"{list(array.shape)} (tensors are [3, H, W])")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise MixreorgError("a float image must hold values in 0-1 (divide 0-255 pixels by 255)")
        array = (array * 255).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        raise MixreorgError(f"an array image must be uint8 (0-255) or float (0-1), not {array.dtype}")
    if array.shape[2] == 4:
        return _to_rgb8(Image.fromarray(np.ascontiguousarray(array), "RGBA"))
    return array if array.flags.c_contiguous and array.flags.writeable else np.array(array)


def _read_file(path: Path) -> np.ndarray:
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


def load_image(source: ImageLike) -> np.ndarray:
    """[H, W, 3] uint8 RGB, upright (EXIF orientation applied), from a path, a PIL image, a numpy array
    ([H, W(, 3|4)], uint8 or float 0-1) or a tensor ([3, H, W] or [H, W], uint8 or float 0-1, as torchvision).
    Anything unreadable raises MixreorgError."""
    if isinstance(source, torch.Tensor):
        array = source.detach().cpu()
        if array.ndim == 3 and array.shape[0] in (1, 3, 4):
            array = array.permute(1, 2, 0)
            array = array[..., 0] if array.shape[2] == 1 else array
        elif array.ndim != 2:
            raise MixreorgError(f"a tensor image must be [3, H, W] or [H, W], got shape {list(source.shape)}")
        return _array_to_rgb8((array.float() if array.is_floating_point() else array).numpy())
    if isinstance(source, np.ndarray):
        return _array_to_rgb8(source)
    if isinstance(source, Image.Image):
        return _to_rgb8(ImageOps.exif_transpose(source) or source)
    if isinstance(source, (str, Path)):
        return _read_file(Path(source))
    raise MixreorgError(f"cannot read an image from a {type(source).__name__}; pass a path, a PIL image, a numpy "
                        "array or a tensor")


def is_batch(images) -> bool:
    """Whether ``images`` holds several images: a list or tuple, or a 4-D array or tensor ([B, ...])."""
    if isinstance(images, (list, tuple)):
        return True
    return isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4


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
