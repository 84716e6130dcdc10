"""Tiny fake benchmark datasets in the real on-disk layouts, built by tests (importable: tests/ is on sys.path).

Each ``make_*`` writes a few small images and labels under ``root`` in the layout ``get_benchmark`` reads and
returns a ``Fixture``: sample ids, the raw label arrays written, and the labels the loader must return per
benchmark (worked out here by hand from the published conventions, not with the code under test).

    from benchmark_fixtures import make_voc
    fx = make_voc(tmp_path)                     # tmp_path/VOCdevkit/VOC2012/...
    get_benchmark("voc", tmp_path)[0]

``prepared=False`` leaves the raw sources that ``mixreorg data fetch`` must convert (Context json, COCO-Stuff raw
maps, Cityscapes labelIds); ``pack_*`` helpers turn a tree into the official archive names.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

HEIGHT, WIDTH = 12, 16
VOC_PALETTE = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)]  # background, aeroplane, bicycle, bird


@dataclass
class Fixture:
    root: Path
    ids: list[str]
    raw: dict[str, np.ndarray] = field(default_factory=dict)  # id -> label values as written on disk
    expected: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # benchmark -> id -> loader output


def _image(path: Path, seed: int, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)


def _label(path: Path, values: np.ndarray, palette: list[tuple[int, int, int]] | None = None) -> None:
    """An 8-bit label PNG: grey values, or a palette image like VOC's (index = value, 255 in VOC's void colour)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    values = values.astype(np.uint8)
    if palette is None:
        Image.fromarray(values).save(path, format="PNG")
        return
    img = Image.frombytes("P", (values.shape[1], values.shape[0]), values.tobytes())
    colours = [c for rgb in palette for c in rgb] + [0] * (768 - 3 * len(palette))
    colours[255 * 3:] = [224, 224, 192]
    img.putpalette(colours)
    img.save(path, format="PNG")


def _pattern(values: list[int]) -> np.ndarray:
    """A label map with one vertical band per value."""
    bands = np.array_split(np.arange(WIDTH), len(values))
    out = np.zeros((HEIGHT, WIDTH), dtype=np.int32)  # Context's raw ids go up to 458
    for value, cols in zip(values, bands, strict=True):
        out[:, cols] = value
    return out


def _lookup(raw: np.ndarray, table: dict[int, int]) -> np.ndarray:
    out = raw.copy()
    for value, target in table.items():
        out[raw == value] = target
    return out


# ---------------------------------------------------------------------------------------------------------- VOC
def make_voc(root: Path, rgb_label_id: str | None = None) -> Fixture:
    """VOCdevkit/VOC2012 with 3 val images (palette PNG labels; ``rgb_label_id`` saves that one as RGB)."""
    folder = Path(root) / "VOCdevkit" / "VOC2012"
    ids = ["2007_000032", "2007_000039", "2007_000063"]
    fx = Fixture(Path(root), ids, expected={"voc": {}, "voc20": {}})
    for n, sample in enumerate(ids):
        raw = _pattern([0, 1 + n % 3, 255, 3])
        _image(folder / "JPEGImages" / f"{sample}.jpg", n)
        path = folder / "SegmentationClass" / f"{sample}.png"
        if sample == rgb_label_id:
            colours = dict(enumerate(VOC_PALETTE)) | {255: (224, 224, 192)}
            Image.fromarray(np.array([[colours[v] for v in row] for row in raw], dtype=np.uint8)).save(path)
        else:
            _label(path, raw, VOC_PALETTE)
        fx.raw[sample] = raw
        fx.expected["voc"][sample] = raw
        fx.expected["voc20"][sample] = _lookup(raw, {0: 255, 1: 0, 2: 1, 3: 2})
    split = folder / "ImageSets" / "Segmentation"
    split.mkdir(parents=True)
    (split / "val.txt").write_text("".join(f"{i}\n" for i in ids))
    (split / "train.txt").write_text("2007_999999\n")
    return fx


# ---------------------------------------------------------------------------------------------------------- Context
# Raw Context ids used here and their 60-class labels (position in mmseg's sorted _mapping): 0 background,
# 2 airplane, 9 bag, 458 wood; raw 1 is not one of the 59 classes and must become 255.
CONTEXT_RAW_TO_60 = {0: 0, 2: 1, 9: 2, 458: 59, 1: 255}


def make_context(root: Path, prepared: bool = True) -> Fixture:
    """VOCdevkit/VOC2010 with 2 val + 1 train image and trainval_merged.json (COCO RLE masks)."""
    from pycocotools import mask as mask_utils

    folder = Path(root) / "VOCdevkit" / "VOC2010"
    ids = ["2008_000002", "2008_000003", "2008_000007"]
    phases = ["val", "val", "train"]
    fx = Fixture(Path(root), ids, expected={"context": {}, "context59": {}})
    images, annotations = [], []
    for n, (sample, phase) in enumerate(zip(ids, phases, strict=True)):
        _image(folder / "JPEGImages" / f"{sample}.jpg", 10 + n)
        raw = _pattern([0, 2, 9, 458, 1][n:] + [0, 2, 9, 458, 1][:n])
        images.append({"image_id": 100 + n, "file_name": f"{sample}.jpg", "height": HEIGHT, "width": WIDTH,
                       "phase": phase})
        for value in sorted(set(raw.flatten().tolist()) - {0}):
            rle = mask_utils.encode(np.asfortranarray((raw == value).astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            annotations.append({"image_id": 100 + n, "category_id": value, "segmentation": rle})
        fx.raw[sample] = raw
        label60 = _lookup(raw, CONTEXT_RAW_TO_60)
        if phase == "val":  # the benchmarks read val only
            fx.expected["context"][sample] = label60
            fx.expected["context59"][sample] = _lookup(label60, {0: 255, 1: 0, 2: 1, 59: 58})
        if prepared:
            _label(folder / "SegmentationClassContext" / f"{sample}.png", label60)
    (folder / "trainval_merged.json").write_text(json.dumps({"images": images, "annos_segmentation": annotations}))
    if prepared:
        split = folder / "ImageSets" / "SegmentationContext"
        split.mkdir(parents=True)
        (split / "val.txt").write_text("".join(f"{i}\n" for i, p in zip(ids, phases, strict=True) if p == "val"))
        (split / "train.txt").write_text(f"{ids[2]}\n")
    return fx


# ---------------------------------------------------------------------------------------------------------- COCO
# Raw stuffthingmaps values: 0 person, 12 stop sign (COCO id 13; id 12 is unused), 156 sky-other, 255 unlabeled.
COCO_RAW_TO_STUFF = {0: 0, 12: 11, 156: 145, 255: 255}
COCO_RAW_TO_OBJECT = {0: 1, 12: 12, 156: 0, 255: 0}


def make_coco(root: Path, prepared: bool = True) -> Fixture:
    """coco_stuff164k with 2 val2017 images and raw maps (+ *_labelTrainIds / *_instanceTrainIds when prepared)."""
    folder = Path(root) / "coco_stuff164k"
    ids = ["000000000139", "000000000285"]
    fx = Fixture(Path(root), ids, expected={"coco-stuff": {}, "coco-object": {}})
    for n, sample in enumerate(ids):
        _image(folder / "images" / "val2017" / f"{sample}.jpg", 20 + n)
        raw = _pattern([0, 12, 156, 255] if n == 0 else [156, 0, 255])
        _label(folder / "annotations" / "val2017" / f"{sample}.png", raw)
        fx.raw[sample] = raw
        fx.expected["coco-stuff"][sample] = _lookup(raw, COCO_RAW_TO_STUFF)
        fx.expected["coco-object"][sample] = _lookup(raw, COCO_RAW_TO_OBJECT)
        if prepared:
            maps = folder / "annotations" / "val2017"
            _label(maps / f"{sample}_labelTrainIds.png", fx.expected["coco-stuff"][sample])
            _label(maps / f"{sample}_instanceTrainIds.png", fx.expected["coco-object"][sample])
    # One train map: fetching must skip it (only val is extracted and converted).
    _label(folder / "annotations" / "train2017" / "000000000009.png", _pattern([0]))
    return fx


# ---------------------------------------------------------------------------------------------------------- ADE20K
def make_ade20k(root: Path) -> Fixture:
    """ade/ADEChallengeData2016 with 2 validation images; raw 0 = 'other', 1 = wall, 3 = sky."""
    folder = Path(root) / "ade" / "ADEChallengeData2016"
    ids = ["ADE_val_00000001", "ADE_val_00000002"]
    fx = Fixture(Path(root), ids, expected={"ade20k": {}})
    for n, sample in enumerate(ids):
        _image(folder / "images" / "validation" / f"{sample}.jpg", 30 + n)
        raw = _pattern([0, 1, 3, 150][n:])
        _label(folder / "annotations" / "validation" / f"{sample}.png", raw)
        fx.raw[sample] = raw
        fx.expected["ade20k"][sample] = _lookup(raw, {0: 255, 1: 0, 3: 2, 150: 149})
    _image(folder / "images" / "training" / "ADE_train_00000001.jpg", 39)
    _label(folder / "annotations" / "training" / "ADE_train_00000001.png", _pattern([1]))
    return fx


# ---------------------------------------------------------------------------------------------------------- Cityscapes
# labelIds -> trainIds (cityscapesScripts): 7 road -> 0, 26 car -> 13, 33 bicycle -> 18, 0 unlabeled and
# 29 caravan -> 255.
CITYSCAPES_ID_TO_TRAIN = {7: 0, 26: 13, 33: 18, 0: 255, 29: 255}


def make_cityscapes(root: Path, prepared: bool = True, folder_name: str = "cityscapes") -> Fixture:
    """cityscapes/{leftImg8bit,gtFine}/val/frankfurt with 2 images (+ labelTrainIds when prepared), 1 train image."""
    folder = Path(root) / folder_name
    ids = ["frankfurt_000000_000294", "frankfurt_000000_000576"]
    fx = Fixture(Path(root), ids, expected={"cityscapes": {}})
    entries = [("val", i) for i in ids] + [("train", "aachen_000000_000019")]
    for n, (split, sample) in enumerate(entries):
        city = sample.split("_")[0]
        _image(folder / "leftImg8bit" / split / city / f"{sample}_leftImg8bit.png", 40 + n, "PNG")
        raw = _pattern([7, 26, 0, 33, 29][n:])
        _label(folder / "gtFine" / split / city / f"{sample}_gtFine_labelIds.png", raw)
        expected = _lookup(raw, CITYSCAPES_ID_TO_TRAIN)
        if prepared:
            _label(folder / "gtFine" / split / city / f"{sample}_gtFine_labelTrainIds.png", expected)
        if split == "val":
            fx.raw[sample] = raw
            fx.expected["cityscapes"][sample] = expected
    return fx


# ---------------------------------------------------------------------------------------------------------- ImageNet
IMAGENET_WNIDS = {"n01440764": 0, "n01443537": 1, "n15075141": 999}  # tench, goldfish, toilet tissue


def make_imagenet(root: Path, per_class: int = 2) -> Fixture:
    """imagenet/val/<wnid>/ILSVRC2012_val_*.JPEG for three WNIDs (indices 0, 1 and 999 of the 1000)."""
    folder = Path(root) / "imagenet" / "val"
    fx = Fixture(Path(root), [], expected={"imagenet": {}})
    number = 0
    for wnid, index in IMAGENET_WNIDS.items():
        for _ in range(per_class):
            number += 1
            name = f"ILSVRC2012_val_{number:08d}"
            _image(folder / wnid / f"{name}.JPEG", 50 + number, "JPEG")
            fx.ids.append(name)
            fx.expected["imagenet"][name] = np.array(index)
    return fx


def make_imagenet_archives(folder: Path) -> tuple[Path, Path, dict[str, str]]:
    """A flat ILSVRC2012_img_val.tar and a devkit whose meta.mat/ground truth sort it; returns (tar, devkit, truth)."""
    import scipy.io

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # meta.mat: leaf synsets have ILSVRC2012_ID 1..1000 in sorted-WNID order; one non-leaf synset is mixed in.
    fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O")]
    synsets = np.array([(1, "n01440764", "tench", "", 0), (2, "n01443537", "goldfish", "", 0),
                        (1000, "n15075141", "toilet tissue", "", 0), (1001, "n00001740", "entity", "", 3)],
                       dtype=fields)
    meta = io.BytesIO()
    scipy.io.savemat(meta, {"synsets": synsets})
    truth = {"ILSVRC2012_val_00000001.JPEG": "n01443537", "ILSVRC2012_val_00000002.JPEG": "n15075141",
             "ILSVRC2012_val_00000003.JPEG": "n01440764", "ILSVRC2012_val_00000004.JPEG": "n01443537"}
    ids = {"n01440764": 1, "n01443537": 2, "n15075141": 1000}
    devkit = folder / "ILSVRC2012_devkit_t12.tar.gz"
    with tarfile.open(devkit, "w:gz") as tf:
        _add_bytes(tf, "ILSVRC2012_devkit_t12/data/meta.mat", meta.getvalue())
        _add_bytes(tf, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt",
                   "".join(f"{ids[w]}\n" for w in truth.values()).encode())
    val_tar = folder / "ILSVRC2012_img_val.tar"
    with tarfile.open(val_tar, "w") as tf:
        for n, name in enumerate(truth):
            buffer = io.BytesIO()
            Image.fromarray(np.full((HEIGHT, WIDTH, 3), n * 40, dtype=np.uint8)).save(buffer, format="JPEG")
            _add_bytes(tf, name, buffer.getvalue())
    return val_tar, devkit, truth


# ---------------------------------------------------------------------------------------------------------- synthetic
SYNTHETIC_CLASSES = ["red circle", "blue square", "sand"]


def make_synthetic(root: Path) -> Fixture:
    """ROOT/eval/{images,annotations}/<id>.png and classes.json as ``mixreorg data synth`` writes them."""
    folder = Path(root) / "eval"
    ids = ["000000", "000001"]
    fx = Fixture(Path(root), ids, expected={"synthetic": {}})
    for n, sample in enumerate(ids):
        _image(folder / "images" / f"{sample}.png", 60 + n, "PNG")
        raw = _pattern([2, 0, 1, 255][n:])
        _label(folder / "annotations" / f"{sample}.png", raw)
        fx.raw[sample] = raw
        fx.expected["synthetic"][sample] = raw
    meta = {"classes": SYNTHETIC_CLASSES, "palette": [[200, 30, 30], [30, 30, 200], [220, 200, 150]],
            "has_background": False, "ignore_index": 255, "num_images": len(ids), "objects": SYNTHETIC_CLASSES[:2]}
    (folder / "classes.json").write_text(json.dumps(meta))
    return fx


# ---------------------------------------------------------------------------------------------------------- archives
def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def pack_tar(tree: Path, archive: Path, inside: str) -> Path:
    """Tar ``tree/inside`` so that the archive's entries start with ``inside``."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w") as tf:
        tf.add(tree / inside, arcname=inside)
    return archive


def pack_zip(tree: Path, archive: Path, inside: str, strip: str = "") -> Path:
    """Zip every file under ``tree/inside``; entry names are relative to ``tree/strip``."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    base = tree / strip
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((tree / inside).rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(base).as_posix())
    return archive
