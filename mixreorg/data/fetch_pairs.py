"""Image-text pairs from the web: URL list -> parquet -> img2dataset -> webdataset shards (jpg + txt + json).

``fetch_pairs("cc12m", out)`` downloads the list named in data_manifests/cc12m.yaml (or takes ``url_list``: any
tsv/csv/parquet with url and caption columns, optionally .gz), rewrites it as a clean two-column parquet (pyarrow's
CSV reader breaks on quotes and newlines in captions), and runs img2dataset's Python API into ``out``.

Re-running the same command resumes: img2dataset skips every shard whose ``*_stats.json`` exists, so a shard cut
short is fetched again from the start. img2dataset exits normally even when every download failed, so the
summary is rebuilt here from the stats files, and zero successes is an error.

A cluster fetch (``distributor="pyspark"``, ``pip install 'mixreorg[spark]'``) runs the same code under
spark-submit; ``out`` must be a folder every worker can reach (a shared filesystem)::

    spark-submit --master spark://MASTER:7077 --conf spark.executor.memory=16G \\
        "$(python -c 'import mixreorg.cli.main as m; print(m.__file__)')" \\
        data fetch cc12m --out /shared/cc12m --distributor pyspark --threads 64
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import io
import json
import math
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from tqdm import tqdm

from mixreorg.data.benchmarks.manifest import file_specs, load_manifest
from mixreorg.data.download import download_file, mirrored_url
from mixreorg.errors import MixreorgError
from mixreorg.utils.io import atomic_path, atomic_write_text
from mixreorg.utils.progress import progress_bar

PAIR_DATASETS = ("cc12m", "cc3m", "urls")  # "urls": any list given with url_list
RESIZE_MODES = ("no", "border", "keep_ratio", "keep_ratio_largest", "center_crop")
DISTRIBUTORS = ("multiprocessing", "pyspark")
URL_NAMES = ("url", "image_url", "img_url")
CAPTION_NAMES = ("caption", "text", "title", "alt")
LIST_DIR = "_list"  # inside the output folder; img2dataset only looks at the top level
BATCH_ROWS = 100_000


@dataclass
class FetchSummary:
    """Totals over every shard in the output folder (this run and earlier ones)."""

    out: Path
    shards: int
    expected_shards: int
    count: int
    successes: int
    failed_to_download: int
    failed_to_resize: int
    reasons: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        rate = self.successes / self.count if self.count else 0.0
        lines = [
            f"{self.out}: {self.shards}/{self.expected_shards} shards, {self.successes:,} of {self.count:,} images "
            f"({rate:.1%}); failed to download {self.failed_to_download:,}, failed to resize {self.failed_to_resize:,}"
        ]
        lines += [f"  {n:>9,}  {reason}" for reason, n in sorted(self.reasons.items(), key=lambda kv: -kv[1])[:10]]
        if self.shards < self.expected_shards:
            lines.append(f"  {self.expected_shards - self.shards} shard(s) did not finish; rerun the command to retry")
        return lines


def fetch_pairs(
    dataset: str,
    out: str | Path,
    url_list: str | Path | None = None,
    *,
    image_size: int = 512,
    resize_mode: str = "keep_ratio",
    processes: int | None = None,
    threads: int = 64,
    distributor: str = "multiprocessing",
    shard_size: int = 10_000,
    timeout: int = 10,
    retries: int = 0,
    mirror: str | None = None,
    log: Callable[[str], None] = print,
) -> FetchSummary:
    """Fetch ``dataset`` (cc12m, cc3m, or urls with ``url_list``) into webdataset shards under ``out``."""
    if dataset not in PAIR_DATASETS:
        raise MixreorgError(f"unknown image-text dataset '{dataset}'; expected one of {', '.join(PAIR_DATASETS)}")
    if resize_mode not in RESIZE_MODES:
        raise MixreorgError(f"--resize-mode {resize_mode} is unknown; expected one of {', '.join(RESIZE_MODES)}")
    if distributor not in DISTRIBUTORS:
        raise MixreorgError(f"--distributor {distributor} is unknown; expected one of {', '.join(DISTRIBUTORS)}")
    if distributor == "pyspark" and importlib.util.find_spec("pyspark") is None:
        raise MixreorgError("--distributor pyspark needs pyspark: pip install 'mixreorg[spark]'")
    if min(image_size, threads, shard_size) < 1 or (processes is not None and processes < 1):
        raise MixreorgError("--image-size, --processes, --threads and --shard-size must be positive")
    out = _writable_folder(Path(out))
    source = _list_source(dataset, out, url_list, mirror)
    parquet, rows = _converted_list(source, out / LIST_DIR, dataset)
    _check_resume(out, source, rows, shard_size)
    log(f"{rows:,} URLs in {source.name}; fetching into {out} ({math.ceil(rows / shard_size)} shards)")
    _run_img2dataset(parquet, out, image_size=image_size, resize_mode=resize_mode,
                     processes=processes or os.cpu_count() or 1, threads=threads, distributor=distributor,
                     shard_size=shard_size, timeout=timeout, retries=retries)
    summary = read_summary(out, expected_shards=math.ceil(rows / shard_size))
    for line in summary.lines():
        log(line)
    if summary.successes == 0:
        top = ", ".join(f"{reason} ({n})" for reason, n in Counter(summary.reasons).most_common(3))
        raise MixreorgError(f"no image could be fetched into {out}: {summary.count:,} tried, all failed ({top})")
    return summary


def read_summary(out: str | Path, expected_shards: int | None = None) -> FetchSummary:
    """Aggregate img2dataset's ``*_stats.json`` files in ``out``."""
    out = Path(out)
    totals: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    stats_files = sorted(out.glob("*_stats.json"))
    for path in stats_files:
        stats = json.loads(path.read_text())
        for key in ("count", "successes", "failed_to_download", "failed_to_resize"):
            totals[key] += int(stats.get(key, 0))
        reasons.update({k: int(v) for k, v in (stats.get("status_dict") or {}).items() if k != "success"})
    return FetchSummary(out=out, shards=len(stats_files), expected_shards=expected_shards or len(stats_files),
                        count=totals["count"], successes=totals["successes"],
                        failed_to_download=totals["failed_to_download"], failed_to_resize=totals["failed_to_resize"],
                        reasons=dict(reasons))


def _writable_folder(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise MixreorgError(f"--out {out} is a file; give a folder for the shards")
    try:
        (out / LIST_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MixreorgError(f"cannot create {out} ({exc.strerror}); choose a writable --out folder") from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise MixreorgError(f"{out} is not writable; choose a writable --out folder")
    return out.resolve()


def _list_source(dataset: str, out: Path, url_list: str | Path | None, mirror: str | None) -> Path:
    if url_list is not None:
        path = Path(url_list).expanduser()
        if not path.is_file():
            raise MixreorgError(f"--url-list {path} does not exist")
        return path
    if dataset == "urls":
        raise MixreorgError("'urls' needs --url-list FILE (a tsv/csv/parquet with url and caption columns)")
    manifest = load_manifest(dataset)
    spec = file_specs(manifest)[0]
    if spec.url is None:
        hint = (manifest.get("how_to_get") or "").strip().splitlines()
        raise MixreorgError(f"the {dataset} list has no public URL; {' '.join(line.strip() for line in hint)}")
    return download_file(mirrored_url(spec.url, mirror, spec.name), out / LIST_DIR / spec.name,
                         size=spec.bytes, sha256=spec.sha256, md5=spec.md5)


def _converted_list(source: Path, list_dir: Path, dataset: str) -> tuple[Path, int]:
    """``source`` as ``url, caption`` parquet; reused while the source file is unchanged."""
    target = list_dir / (source.name.split(".")[0] + ".urls.parquet")
    stamp = list_dir / (target.name + ".source.yaml")
    identity = {"source": str(source.resolve()), "bytes": source.stat().st_size, "mtime": source.stat().st_mtime}
    if target.is_file() and stamp.is_file():
        recorded = yaml.safe_load(stamp.read_text()) or {}
        if {k: recorded.get(k) for k in identity} == identity:
            return target, int(recorded["rows"])
    layout = (load_manifest(dataset).get("list_format") or {}) if dataset != "urls" else {}
    rows = convert_url_list(source, target, headerless_columns=layout.get("columns"))
    atomic_write_text(stamp, yaml.safe_dump({**identity, "rows": rows}))
    return target, rows


def convert_url_list(source: str | Path, target: str | Path, headerless_columns: list[str] | None = None) -> int:
    """Write ``source`` (tsv/csv/parquet[.gz]) as a ``url, caption`` parquet at ``target``; returns the row count.

    A header row must name the columns (url/image_url and caption/text/title/alt). Header-less files are read with
    ``headerless_columns`` (CC12M: url, caption; CC3M: caption, url), or recognised by the column holding http URLs.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    source, target = Path(source), Path(target)
    schema = pa.schema([("url", pa.string()), ("caption", pa.string())])
    rows = 0
    with atomic_path(target) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        batch: list[tuple[str, str]] = []
        for url, caption in _read_pairs(source, headerless_columns):
            batch.append((url, caption))
            if len(batch) >= BATCH_ROWS:
                writer.write_table(_table(batch, schema))
                rows += len(batch)
                batch = []
        if batch:
            writer.write_table(_table(batch, schema))
            rows += len(batch)
        if rows == 0:
            raise MixreorgError(f"{source} holds no URLs; check the file")
    return rows


def _table(batch: list[tuple[str, str]], schema):  # pyarrow is imported lazily, so no annotations
    import pyarrow as pa

    urls, captions = zip(*batch, strict=True)
    return pa.table({"url": list(urls), "caption": list(captions)}, schema=schema)


def _read_pairs(source: Path, headerless_columns: list[str] | None) -> Iterator[tuple[str, str]]:
    suffixes = [s.lower() for s in source.suffixes if s.lower() != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    if kind == ".parquet":
        yield from _parquet_pairs(source)
        return
    if kind not in (".tsv", ".csv", ".txt"):
        raise MixreorgError(
            f"--url-list {source.name}: unsupported format; use .tsv, .csv or .parquet (optionally .gz)"
        )
    compressed = source.suffix.lower() == ".gz"
    opener = gzip.open if compressed else open
    with opener(source, "rb") as raw, progress_bar(total=None if compressed else source.stat().st_size, unit="B",
                                                   desc=f"reading {source.name}", unit_scale=True, leave=False) as bar:
        # csv: quoted fields may hold newlines; tsv: one record per "\n" (a stray "\r" stays in the caption)
        text = io.TextIOWrapper(io.BufferedReader(_Counting(raw, bar)), encoding="utf-8", errors="replace",
                                newline="" if kind == ".csv" else "\n")
        records = csv.reader(text) if kind == ".csv" else (line.rstrip("\r\n").split("\t") for line in text)
        first = next(records, None)
        if first is None:
            return
        header = [name.strip().lower() for name in first]
        url_at, caption_at = _column(header, URL_NAMES), _column(header, CAPTION_NAMES)
        if url_at is not None and caption_at is not None:
            pending: list[list[str]] = []
            width = len(first)
        else:
            url_at, caption_at, width = _headerless(first, headerless_columns, source)
            pending = [first]
        for record in _chain(pending, records):
            if width == 2 and len(record) > 2:  # unquoted tabs inside a caption: the URL sits at one end
                record = [record[0], "\t".join(record[1:])] if url_at == 0 else ["\t".join(record[:-1]), record[-1]]
            if len(record) != width:
                continue
            url = record[url_at].strip()
            if url:
                yield url, record[caption_at]


def _parquet_pairs(source: Path) -> Iterator[tuple[str, str]]:
    import pyarrow.parquet as pq

    table_file = pq.ParquetFile(source)
    names = [name.lower() for name in table_file.schema_arrow.names]
    url_at, caption_at = _column(names, URL_NAMES), _column(names, CAPTION_NAMES)
    if url_at is None or caption_at is None:
        raise _missing_columns(source, table_file.schema_arrow.names)
    columns = [table_file.schema_arrow.names[url_at], table_file.schema_arrow.names[caption_at]]
    for batch in table_file.iter_batches(batch_size=BATCH_ROWS, columns=columns):
        for url, caption in zip(*(batch.column(i).to_pylist() for i in range(2)), strict=True):
            if url:
                yield str(url).strip(), "" if caption is None else str(caption)


def _column(names: list[str], wanted: tuple[str, ...]) -> int | None:
    return next((names.index(name) for name in wanted if name in names), None)


def _headerless(first: list[str], columns: list[str] | None, source: Path) -> tuple[int, int, int]:
    """(url index, caption index, record width) of a file without a header row."""
    if columns and "url" in columns and "caption" in columns:
        return columns.index("url"), columns.index("caption"), len(columns)
    looks_like_url = [cell.strip().startswith(("http://", "https://")) for cell in first]
    if len(first) >= 2 and looks_like_url[0] != looks_like_url[-1]:
        return (0, 1, 2) if looks_like_url[0] else (1, 0, 2)
    raise _missing_columns(source, first)


def _missing_columns(source: Path, found: list[str]) -> MixreorgError:
    shown = ", ".join(repr(name[:40]) for name in found[:6])
    return MixreorgError(
        f"--url-list {source.name} has no url and caption columns (first row: {shown}); "
        "add a header row naming them 'url' and 'caption'"
    )


def _chain(first: list[list[str]], rest: Iterator[list[str]]) -> Iterator[list[str]]:
    yield from first
    yield from rest


class _Counting(io.RawIOBase):
    """Passes reads through and advances a progress bar by the bytes read."""

    def __init__(self, raw: io.BufferedIOBase, bar: tqdm) -> None:
        self.raw, self.bar = raw, bar

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.bar.update(len(data))
        return len(data)


def _check_resume(out: Path, source: Path, rows: int, shard_size: int) -> None:
    """img2dataset resumes by shard number, which only means the same thing for the same list and shard size."""
    config_path = out / LIST_DIR / "fetch.yaml"
    current = {"list": source.name, "rows": rows, "shard_size": shard_size}
    if config_path.is_file() and any(out.glob("*_stats.json")):
        previous = yaml.safe_load(config_path.read_text()) or {}
        changed = [k for k in current if previous.get(k) != current[k]]
        if changed:
            was = ", ".join(f"{k}={previous.get(k)}" for k in changed)
            raise MixreorgError(
                f"{out} was fetched with {was}; resume with the same list and --shard-size, or use a new --out"
            )
    atomic_write_text(config_path, yaml.safe_dump(current))


def _run_img2dataset(parquet: Path, out: Path, **options: object) -> None:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations otherwise asks PyPI on import
    from img2dataset import download

    if options["distributor"] == "pyspark":
        from pyspark.sql import SparkSession

        # Under spark-submit this joins the cluster; img2dataset would otherwise start a local[N] session.
        SparkSession.builder.appName("mixreorg-fetch").getOrCreate()
    previous = signal.getsignal(signal.SIGINT)
    try:
        download(
            url_list=str(parquet), input_format="parquet", url_col="url", caption_col="caption",
            output_format="webdataset", output_folder=str(out), incremental_mode="incremental",
            image_size=options["image_size"], resize_mode=options["resize_mode"], resize_only_if_bigger=True,
            processes_count=options["processes"], thread_count=options["threads"],
            distributor=options["distributor"], number_sample_per_shard=options["shard_size"],
            timeout=options["timeout"], retries=options["retries"], enable_wandb=False,
        )
    except SystemExit as exc:  # img2dataset's Ctrl-C handler exits with status 0
        raise KeyboardInterrupt from exc
    finally:
        signal.signal(signal.SIGINT, previous)  # img2dataset installs its own handler process-wide
        sys.stdout.flush()
