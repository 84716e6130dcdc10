"""Dataset manifests: the facts about each dataset, read from ``data_manifests/<name>.yaml``.

Schema (every file):
    name, title, homepage          identity; ``name`` equals the file stem
    kind                           segmentation | classification | image-text
    access                         download (plain URLs) | login (the user fetches the files, we take ``--from``)
    how_to_get                     text printed when files must be fetched by hand (null when not needed)
    files                          [{name, url, bytes, sha256, md5, extract_to, members}]; null = not published.
                                   ``extract_to`` is a folder under the data root (null: the file is used as is);
                                   ``members`` keeps only archive entries with that prefix.
    layout                         folder under the data root that the loaders read (mmsegmentation's layout)
    benchmarks                     {name: {split, expected_samples, num_classes, has_background,
                                   reduce_zero_label, ignore_index, protocol, protocols, classes, palette}};
                                   ``classes`` are the prompt names with index = label value after preparation;
                                   ``protocol`` holds the GroupViT/TCL evaluation settings (resize, slide window,
                                   template, bg_thresh); ``protocols`` the other named protocols' per-set settings
                                   (``sclip``: resize, window, logit_scale, prob_thd, area_thd and ``class_names``, a
                                   file under data_manifests/ with one class per line and synonyms after commas).
Image-text manifests (cc12m, cc3m) add ``list_format`` {header, columns}, ``expected_rows`` and ``img2dataset``.
Dataset-specific label facts sit at the top level (``raw_id_mapping``, ``unused_map_values``, ...).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mixreorg.errors import MixreorgError


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset, as published."""

    name: str
    url: str | None
    bytes: int | None = None
    sha256: str | None = None
    md5: str | None = None
    extract_to: str | None = None
    members: str | None = None


@dataclass(frozen=True)
class BenchmarkSpec:
    """What a loader and the evaluator need to know about one benchmark."""

    name: str
    dataset: str
    split: str
    expected_samples: int
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    has_background: bool
    reduce_zero_label: bool
    ignore_index: int = 255
    protocol: dict[str, Any] = field(default_factory=dict)
    protocols: dict[str, dict[str, Any]] = field(default_factory=dict)  # other protocols' settings, by name
    # Classes that are objects (the synthetic worlds' animals or shapes); eval then also reports their mIoU and
    # the other classes' apart.
    object_classes: tuple[str, ...] = ()


def manifest_dir() -> Path:
    """The folder of manifests: packaged as ``mixreorg.data_manifests`` when installed, else the source tree's."""
    try:
        packaged = Path(str(resources.files("mixreorg.data_manifests")))
        if (packaged / "voc.yaml").is_file():
            return packaged
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[3] / "data_manifests"


def available_manifests() -> list[str]:
    """Dataset manifests (files with a ``files`` list; checkpoints.yaml and the like are not datasets)."""
    return sorted(p.stem for p in manifest_dir().glob("*.yaml") if "\nfiles:" in p.read_text())


@functools.cache
def load_manifest(name: str) -> dict[str, Any]:
    """The manifest of dataset ``name`` (a stem in data_manifests/, or a path to a YAML file); shared, read-only."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else manifest_dir() / f"{name}.yaml"
    if not path.is_file():
        raise MixreorgError(f"no manifest {path}; known datasets: {', '.join(available_manifests())}")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or "name" not in data:
        raise MixreorgError(f"{path} is not a dataset manifest (it needs at least 'name' and 'files')")
    return data


def file_specs(manifest: dict[str, Any]) -> list[FileSpec]:
    known = set(FileSpec.__dataclass_fields__)
    return [FileSpec(**{k: v for k, v in entry.items() if k in known}) for entry in manifest.get("files") or []]


def benchmark_spec(dataset: str, benchmark: str) -> BenchmarkSpec:
    """The spec of ``benchmark`` inside manifest ``dataset`` (e.g. ``("voc", "voc20")``)."""
    manifest = load_manifest(dataset)
    entry = (manifest.get("benchmarks") or {}).get(benchmark)
    if entry is None:
        raise MixreorgError(f"manifest '{dataset}' defines no benchmark '{benchmark}'")
    return BenchmarkSpec(
        name=benchmark,
        dataset=dataset,
        split=str(entry["split"]),
        expected_samples=int(entry["expected_samples"]),
        classes=tuple(entry["classes"]),
        palette=tuple(tuple(rgb) for rgb in entry.get("palette") or ()),
        has_background=bool(entry.get("has_background", False)),
        reduce_zero_label=bool(entry.get("reduce_zero_label", False)),
        ignore_index=int(entry.get("ignore_index", 255)),
        protocol=dict(entry.get("protocol") or {}),
        protocols={str(name): dict(block or {}) for name, block in (entry.get("protocols") or {}).items()},
    )
