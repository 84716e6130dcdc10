"""ImageNet-1k val for zero-shot classification, in ImageFolder layout ``imagenet/val/<wnid>/*.JPEG``.

Class index = position of the WNID in the sorted list of 1000 (the manifest's ``wnids``), whatever subset of
folders is present; names are CLIP's cleaned names. ImageNet needs a login, so the files come in with ``--from``:
the flat val tar plus the devkit (its ``meta.mat`` and ground truth sort the 50,000 images into WNID folders, as
torchvision does), or an existing folder of WNID folders.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

from mixreorg.data.benchmarks.base import ClassificationBenchmark, fetch_hint
from mixreorg.data.benchmarks.manifest import load_manifest
from mixreorg.data.download import extract_archive
from mixreorg.errors import MixreorgError
from mixreorg.utils.progress import progress_bar

DATASET = "imagenet"
BENCHMARKS = ("imagenet",)
CANDIDATES = ("imagenet/val", "val", ".")
VAL_TAR = "ILSVRC2012_img_val.tar"
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def load(benchmark: str, root: Path) -> ClassificationBenchmark:
    entry = load_manifest(DATASET)["benchmarks"][DATASET]
    wnids, classes = list(entry["wnids"]), list(entry["classes"])
    index = {wnid: i for i, wnid in enumerate(wnids)}
    root = Path(root).expanduser()
    folder = next((root / c for c in CANDIDATES if _class_folders(root / c, index)), None)
    if folder is None:
        raise MixreorgError(
            f"expected {root / CANDIDATES[0]}/<wnid>/ folders (e.g. {root / CANDIDATES[0] / wnids[0]}); "
            f"{fetch_hint(DATASET, root)}"
        )
    samples = []
    for class_dir in _class_folders(folder, index):
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        samples += [(path, index[class_dir.name]) for path in files]
    if not samples:
        raise MixreorgError(f"the class folders under {folder} hold no images; {fetch_hint(DATASET, root)}")
    return ClassificationBenchmark(benchmark, classes, samples, folder.resolve(), wnids=wnids,
                                   expected_samples=int(entry["expected_samples"]))


def _class_folders(folder: Path, index: dict[str, int]) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name in index)


def prepare(root: Path, manifest: dict, files: dict[str, Path]) -> None:
    """Sort the flat val tar into ``imagenet/val/<wnid>/`` with the devkit; a folder source needs nothing."""
    if VAL_TAR not in files:
        return
    if DEVKIT not in files:
        raise MixreorgError(f"sorting {VAL_TAR} needs the devkit too: add --from {DEVKIT}")
    target = Path(root) / "imagenet" / "val"
    if target.exists():  # only ever renamed into place complete
        return
    wnid_of_image = devkit_val_wnids(files[DEVKIT])
    flat = Path(root) / "imagenet" / ".val-flat"
    sorting = Path(root) / "imagenet" / ".val-sorting"
    shutil.rmtree(sorting, ignore_errors=True)
    extract_archive(files[VAL_TAR], flat)
    for path in progress_bar(sorted(flat.iterdir()), desc="sorting imagenet val", unit="img"):
        number = int(path.stem.rsplit("_", 1)[-1])  # ILSVRC2012_val_00000001.JPEG -> 1
        if not 1 <= number <= len(wnid_of_image):
            raise MixreorgError(f"{path.name} has no entry in the devkit's ground truth; is this the 2012 val tar?")
        (sorting / wnid_of_image[number - 1]).mkdir(parents=True, exist_ok=True)
        os.replace(path, sorting / wnid_of_image[number - 1] / path.name)
    os.replace(sorting, target)
    shutil.rmtree(flat, ignore_errors=True)


def devkit_val_wnids(devkit: Path) -> list[str]:
    """The WNID of each val image, in image-number order, from the devkit's meta.mat and ground truth."""
    import scipy.io

    wanted = {"meta": "data/meta.mat", "truth": "data/ILSVRC2012_validation_ground_truth.txt"}
    found: dict[str, bytes] = {}
    with tarfile.open(devkit) as tf:
        for member in tf:
            for key, suffix in wanted.items():
                if member.isfile() and member.name.endswith(suffix):
                    found[key] = tf.extractfile(member).read()
    missing = [wanted[k] for k in wanted if k not in found]
    if missing:
        raise MixreorgError(f"{devkit} has no {', '.join(missing)}; is it ILSVRC2012_devkit_t12.tar.gz?")
    synsets = scipy.io.loadmat(io.BytesIO(found["meta"]), squeeze_me=True)["synsets"]
    # Leaf synsets (no children) are the 1000 classes; their ILSVRC2012_ID is what the ground truth lists.
    id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}
    try:
        return [id_to_wnid[int(token)] for token in found["truth"].split()]
    except (KeyError, ValueError) as exc:
        raise MixreorgError(f"{devkit}: the ground truth names a class id not in meta.mat ({exc})") from exc
