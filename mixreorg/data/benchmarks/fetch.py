"""``mixreorg data fetch voc|context|coco|ade20k|cityscapes|imagenet --root DIR``: download, check, extract, prepare.

Steps: every file of the manifest is taken from ``--from`` (checked against the published size and checksums)
or downloaded into ``ROOT/downloads`` with resume; archives are extracted into the mmsegmentation layout;
the dataset's ``prepare`` writes the label files; the loaders then read every benchmark of the dataset, and only
then is ``ROOT/.mixreorg/<dataset>.done`` written. Datasets behind a login print how to get them and take the files
(or an existing folder) with ``--from``. Any failure leaves no marker, so a rerun redoes what is missing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import yaml

from mixreorg.data.benchmarks import ade20k, cityscapes, coco, context, imagenet, voc
from mixreorg.data.benchmarks.manifest import FileSpec, file_specs, load_manifest
from mixreorg.data.download import download_file, extract_archive, mirrored_url, verify_file
from mixreorg.errors import MixreorgError
from mixreorg.utils.io import atomic_write_text

FETCHABLE: dict[str, ModuleType] = {m.DATASET: m for m in (voc, context, coco, ade20k, cityscapes, imagenet)}
ALIASES = {"voc20": "voc", "context59": "context", "coco-object": "coco", "coco-stuff": "coco"}
EXTRA_FILES = {"context": ("trainval_merged.json",)}  # still needed when a folder provides the images


def fetch_benchmark_data(
    name: str,
    root: str | Path,
    sources: Sequence[str | Path] = (),
    *,
    mirror: str | None = None,
    manifest: str | Path | None = None,
    keep_archives: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Fetch and prepare dataset ``name`` under data root ``root``; returns the root.

    ``sources`` are local archives (matched to the manifest by file name) or folders already in the dataset's
    layout (linked as ``ROOT/<layout>``). ``mirror`` replaces the download host ({mirror}/{file name});
    ``manifest`` is a YAML file to use instead of data_manifests/<dataset>.yaml.
    """
    dataset = ALIASES.get(name, name)
    if dataset not in FETCHABLE:
        choices = ", ".join([*FETCHABLE, *ALIASES])
        raise MixreorgError(f"unknown dataset '{name}'; expected one of {choices} (or cc12m, cc3m with --out)")
    module = FETCHABLE[dataset]
    data = load_manifest(str(manifest) if manifest else dataset)
    root = _writable_root(Path(root).expanduser())
    marker = root / ".mixreorg" / f"{dataset}.done"
    if marker.is_file() and not sources:
        try:
            _validate(module, root)
            log(f"{dataset} is already complete under {root} (delete {marker} to fetch it again)")
            return root
        except MixreorgError:
            pass  # the data changed since: fetch again
    marker.unlink(missing_ok=True)

    specs = {spec.name: spec for spec in file_specs(data)}
    files, folders = _split_sources(sources, specs)
    for folder in folders:
        _link_folder(_layout_folder(folder, data["layout"]), root / data["layout"])
    needed = [s for s in specs.values() if not folders or s.name in files or s.name in EXTRA_FILES.get(dataset, ())]
    downloaded = []
    for spec in needed:
        if spec.name in files:
            _check_local(files[spec.name], spec)
        elif data.get("access") == "login" or spec.url is None:
            for line in (data.get("how_to_get") or "").strip().splitlines():
                log(line)
            raise MixreorgError(f"{dataset} needs {spec.name}, which cannot be downloaded by URL; get it as "
                                "described above and pass it with --from")
        else:
            log(f"downloading {spec.name}")
            files[spec.name] = download_file(mirrored_url(spec.url, mirror, spec.name), root / "downloads" / spec.name,
                                             size=spec.bytes, sha256=spec.sha256, md5=spec.md5)
            downloaded.append(files[spec.name])
    for spec in needed:
        if spec.extract_to is not None:
            log(f"extracting {spec.name} into {root / spec.extract_to}")
            extract_archive(files[spec.name], root / spec.extract_to, spec.members)
    module.prepare(root, data, files)
    sizes = _validate(module, root)
    atomic_write_text(marker, yaml.safe_dump({"dataset": dataset, "samples": sizes, "files": sorted(files),
                                              "finished": time.strftime("%Y-%m-%d %H:%M:%S")}))
    if not keep_archives:
        for path in downloaded:
            path.unlink(missing_ok=True)
    log(f"{dataset} is ready under {root}: " + ", ".join(f"{k} {v:,} samples" for k, v in sizes.items()))
    return root


def is_fetched(name: str, root: str | Path) -> bool:
    """True when ``fetch_benchmark_data`` finished for this dataset under ``root``."""
    return (Path(root) / ".mixreorg" / f"{ALIASES.get(name, name)}.done").is_file()


def _writable_root(root: Path) -> Path:
    if root.exists() and not root.is_dir():
        raise MixreorgError(f"--root {root} is a file; give a folder for the datasets")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MixreorgError(f"cannot create {root} ({exc.strerror}); choose a writable --root") from exc
    if not os.access(root, os.W_OK | os.X_OK):
        raise MixreorgError(f"{root} is not writable; choose a writable --root")
    return root.resolve()


def _split_sources(sources: Sequence[str | Path], specs: dict[str, FileSpec]) -> tuple[dict[str, Path], list[Path]]:
    files: dict[str, Path] = {}
    folders: list[Path] = []
    for source in map(lambda s: Path(s).expanduser(), sources):
        if source.is_dir():
            folders.append(source.resolve())
        elif source.is_file():
            if source.name not in specs:
                raise MixreorgError(f"--from {source}: expected one of {', '.join(specs)} (or a folder)")
            files[source.name] = source.resolve()
        else:
            raise MixreorgError(f"--from {source} does not exist")
    return files, folders


def _check_local(path: Path, spec: FileSpec) -> None:
    try:
        verify_file(path, spec.bytes, spec.sha256, spec.md5)
    except MixreorgError as exc:
        raise MixreorgError(f"--from {path} is not the published {spec.name}: {exc}") from exc


def _layout_folder(folder: Path, layout: str) -> Path:
    """The part of ``folder`` that matches the end of ``layout``: a parent like VOCdevkit/ is accepted too."""
    parts = Path(layout).parts
    for start in range(len(parts)):
        inner = folder.joinpath(*parts[start:])
        if inner.is_dir():
            return inner
    return folder


def _link_folder(folder: Path, target: Path) -> None:
    """Use an existing folder in place: ``target`` becomes a symlink to it (label files are added beside yours)."""
    if target.exists() or target.is_symlink():
        if target.resolve() == folder.resolve():
            return
        raise MixreorgError(f"{target} already exists; remove it, or pass its parent data folder as --root")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(folder, target_is_directory=True)


def _validate(module: ModuleType, root: Path) -> dict[str, int]:
    return {name: len(module.load(name, root)) for name in module.BENCHMARKS}
