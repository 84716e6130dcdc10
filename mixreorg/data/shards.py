"""Writing webdataset shards, and ``mixreorg data shard``: a user's own image-caption pairs as shards.

Shards are plain tars of ``{key}.{jpg|png|webp}``, ``{key}.txt`` and ``{key}.json`` members (the layout
img2dataset writes), named ``00000.tar``, ``00001.tar``, ... with fixed member times, so the same input gives
byte-identical shards. Outputs are built in a hidden folder beside ``--out`` and renamed into place at the end:
an interrupted run leaves no folder that looks complete.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import secrets
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from mixreorg.errors import MixreorgError
from mixreorg.utils.progress import progress_bar

IMAGE_EXTENSIONS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")


@contextlib.contextmanager
def atomic_output_dir(out: str | Path) -> Iterator[Path]:
    """Yield an empty hidden folder beside ``out``; on success it becomes ``out`` in one rename.

    ``out`` must not exist or be an empty folder, so nothing already written is ever replaced.
    On any error the hidden folder is removed.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MixreorgError(
            f"output {out} already exists and is not an empty folder; remove it or choose another --out"
        )
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as exc:
        raise MixreorgError(f"cannot create {out} ({exc.strerror or exc}); choose a writable --out") from exc
    try:
        yield tmp
        os.replace(tmp, out)  # replaces an empty folder too
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_shards(samples: Iterable[dict], out_dir: str | Path, shard_size: int) -> list[dict]:
    """Write samples (``__key__`` plus extension -> bytes/str/dict) into ``{n:05d}.tar`` shards of ``shard_size``.

    Returns the manifest entries ``[{"url": name, "num_samples": n}, ...]``.
    """
    import webdataset as wds  # imports torch: only when shards are written

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards: list[dict] = []
    writer = None
    try:
        for sample in samples:
            if writer is None or shards[-1]["num_samples"] == shard_size:
                if writer is not None:
                    writer.close()
                name = f"{len(shards):05d}.tar"
                writer = wds.TarWriter(str(out_dir / name), encoder=False, mtime=0)
                shards.append({"url": name, "num_samples": 0})
            writer.write({key: value if key.startswith("__") else _encode(value) for key, value in sample.items()})
            shards[-1]["num_samples"] += 1
    finally:
        if writer is not None:
            writer.close()
    return shards


def _encode(value):
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True).encode("utf-8")
    return value


def shard_user_data(
    src: str | Path,
    out: str | Path,
    shard_size: int = 1000,
    image_column: str = "path",
    caption_column: str = "caption",
) -> dict:
    """Shard a folder of images with same-name .txt captions, or a .csv/.tsv/.parquet of image path + caption.

    Folders are read in sorted path order, tables in row order; paths in a table are relative to the table's
    folder unless absolute. Pairs whose image is missing or not an image are skipped and counted.
    """
    from mixreorg.data.verify import write_manifest

    src = Path(src)
    if shard_size < 1:
        raise MixreorgError(f"--shard-size must be at least 1, got {shard_size}")
    if not src.exists():
        raise MixreorgError(f"{src} does not exist; pass a folder of images with .txt captions or a .csv/.tsv/.parquet")
    skipped: Counter[str] = Counter()
    pairs = _folder_pairs(src, skipped) if src.is_dir() else _table_pairs(src, image_column, caption_column, skipped)
    if not pairs:
        reasons = ", ".join(f"{n} {why}" for why, n in skipped.items()) or "no rows"
        raise MixreorgError(f"no usable image-caption pairs in {src} ({reasons})")
    with atomic_output_dir(out) as tmp, progress_bar(total=len(pairs), desc="shard", unit="img") as progress:
        shards = write_shards(_samples(pairs, src, progress), tmp, shard_size)
        write_manifest(tmp / "manifest.json", shards)
    return {"out": str(out), "shards": len(shards), "samples": len(pairs), "skipped": dict(skipped)}


def _samples(pairs: list[tuple[Path, str]], src: Path, progress) -> Iterator[dict]:
    root = src if src.is_dir() else src.parent
    for index, (image_path, caption) in enumerate(pairs):
        try:
            source = image_path.relative_to(root).as_posix()
        except ValueError:
            source = str(image_path)
        yield {
            "__key__": f"{index:09d}",
            IMAGE_EXTENSIONS[image_path.suffix.lower()]: image_path.read_bytes(),
            "txt": caption,
            "json": {"source": source},
        }
        progress.update(1)


def _folder_pairs(folder: Path, skipped: Counter) -> list[tuple[Path, str]]:
    images = sorted(
        (p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    if not images:
        raise MixreorgError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {folder}")
    pairs = []
    for image in images:
        caption_file = image.with_suffix(".txt")
        if caption_file.is_file():
            pairs.append((image, caption_file.read_text(encoding="utf-8", errors="replace").strip()))
        else:
            skipped["without a same-name .txt caption"] += 1
    if not pairs:
        raise MixreorgError(
            f"found {len(images)} images under {folder} but none has a same-name .txt caption (cat.jpg + cat.txt)"
        )
    return pairs


def _table_pairs(table: Path, image_column: str, caption_column: str, skipped: Counter) -> list[tuple[Path, str]]:
    rows, columns = _read_table(table)
    missing = [c for c in (image_column, caption_column) if c not in columns]
    if missing:
        raise MixreorgError(
            f"{table} has columns {columns}, expected '{image_column}' and '{caption_column}' "
            f"(missing {missing}); rename them or pass --image-column/--caption-column"
        )
    pairs = []
    for row in rows:
        raw_path, caption = row[image_column], row[caption_column]
        if not raw_path or caption is None:
            skipped["with an empty path or caption"] += 1
            continue
        path = Path(str(raw_path))
        path = path if path.is_absolute() else table.parent / path
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped["not .jpg/.jpeg/.png/.webp"] += 1
        elif not path.is_file():
            skipped["with a missing image file"] += 1
        else:
            pairs.append((path, str(caption).strip()))
    return pairs


def _read_table(table: Path) -> tuple[list[dict], list[str]]:
    suffix = table.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise MixreorgError(f"{table} is not a folder or a {'/'.join(TABLE_SUFFIXES)} table of image path + caption")
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            data = pq.read_table(table)
        except Exception as exc:  # pyarrow raises its own ArrowInvalid for non-parquet bytes
            raise MixreorgError(f"cannot read {table} as parquet: {exc}") from exc
        return data.to_pylist(), list(data.column_names)
    with open(table, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
        rows = list(reader)
        return rows, list(reader.fieldnames or [])
