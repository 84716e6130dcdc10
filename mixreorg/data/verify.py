"""Shard lists and their manifest: ``mixreorg data verify`` and what training reads to size its epochs.

The manifest (``manifest.json``) lists the usable shards with their sample counts; URLs of shards inside the
manifest's folder are stored relative to it, so the folder can be moved. Truncated, unreadable or empty shards
are listed under ``bad_shards`` and left out of ``shards``; undecodable images are listed under ``bad_samples`` and
not counted (the training loader skips them).
"""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from mixreorg.errors import MixreorgError
from mixreorg.utils.io import atomic_write_text
from mixreorg.utils.progress import progress_bar

MANIFEST_FORMAT = "mixreorg-shards/1"
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
TEXT_KEYS = ("txt", "text")


@dataclass
class ShardList:
    """Resolved shard URLs; ``sizes`` only when every part came from a manifest."""

    urls: list[str]
    sizes: list[int] | None = None

    @property
    def total(self) -> int | None:
        return None if self.sizes is None else sum(self.sizes)


def _is_remote(url: str) -> bool:
    return "://" in url or url.startswith("pipe:")


def write_manifest(path: str | Path, shards: list[dict], bad_shards=(), bad_samples=()) -> dict:
    """Write the manifest atomically. Local URLs are absolute or relative to the manifest's folder; those under
    that folder are stored relative to it."""
    path = Path(path)
    base = path.parent.resolve()

    def relative(url: str) -> str:
        if _is_remote(url):
            return url
        target = (base / url).resolve()
        return target.relative_to(base).as_posix() if target.is_relative_to(base) else str(target)

    manifest = {
        "format": MANIFEST_FORMAT,
        "total": sum(s["num_samples"] for s in shards),
        "shards": [{"url": relative(s["url"]), "num_samples": s["num_samples"]} for s in shards],
        "bad_shards": [dict(s, url=relative(s["url"])) for s in bad_shards],
        "bad_samples": [dict(s, url=relative(s["url"])) for s in bad_samples],
    }
    atomic_write_text(path, json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_manifest(path: str | Path) -> ShardList:
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
        entries = manifest["shards"]
        urls = [e["url"] if _is_remote(e["url"]) else str(path.parent / e["url"]) for e in entries]
        sizes = [int(e["num_samples"]) for e in entries]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MixreorgError(
            f"{path} is not a readable shard manifest ({exc}); rebuild it with 'mixreorg data verify'"
        ) from exc
    return ShardList(urls, sizes)


def resolve_shards(spec: str, check_exists: bool = True) -> ShardList:
    """Expand a shard spec: paths, folders (their *.tar), brace patterns, globs, URLs, ``pipe:`` commands or
    manifests, several joined with ``::``. Local files must exist (one missing shard would stall a rank)."""
    urls: list[str] = []
    sizes: list[int] | None = []
    for part in (p for p in spec.split("::") if p.strip()):
        part = part.strip()
        if not _is_remote(part) and part.endswith(".json"):
            listed = read_manifest(part)
            urls += listed.urls
            sizes = None if sizes is None else sizes + listed.sizes
            continue
        sizes = None
        if not _is_remote(part) and os.path.isdir(part):
            found = sorted(glob.glob(os.path.join(glob.escape(part), "*.tar")))
            if not found:
                raise MixreorgError(f"no .tar shards in folder {part}")
            urls += found
        elif not _is_remote(part) and any(c in part for c in "*?["):
            found = sorted(glob.glob(part))
            if not found:
                raise MixreorgError(f"no files match {part}")
            urls += found
        elif "{" in part or "$" in part:
            from webdataset.shardlists import expand_urls  # brace and ${WDS_*} expansion; imports torch

            urls += expand_urls(part)
        else:
            urls.append(part)
    if not urls:
        raise MixreorgError(f"no shards in '{spec}'; pass shard paths, a folder, a brace pattern or a manifest")
    if check_exists:
        missing = [u for u in urls if not _is_remote(u) and not os.path.isfile(u)]
        if missing:
            raise MixreorgError(f"{len(missing)} of {len(urls)} shards do not exist, first: {missing[0]}")
    return ShardList(urls, sizes or None)


@dataclass
class ShardReport:
    url: str
    samples: int = 0
    bad_samples: list[dict] = field(default_factory=list)
    error: str = ""


def _decodes(data: bytes) -> str:
    """Empty if the image decodes fully; otherwise the reason. JPEG draft mode decodes every block at 1/8 scale."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (64, 64))
            image.load()
        return ""
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError...) for bad bytes
        return f"{type(exc).__name__}: {exc}"


def check_shard(url: str) -> ShardReport:
    """Read one shard member by member: count samples with a decodable image and a caption."""
    from webdataset.gopen import gopen

    report = ShardReport(url)
    current: dict = {}

    def finish(sample: dict) -> None:
        if not sample:
            return
        image = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
        if image is None or not any(k in sample for k in TEXT_KEYS):
            report.bad_samples.append({"url": url, "key": sample["__key__"], "reason": "missing image or caption"})
            return
        reason = _decodes(image)
        if reason:
            report.bad_samples.append({"url": url, "key": sample["__key__"], "reason": reason})
        else:
            report.samples += 1

    try:
        with gopen(url, "rb") as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                if not member.isreg():
                    continue
                directory, name = os.path.split(member.name)
                key, _, suffix = name.partition(".")
                key = os.path.join(directory, key)
                if key != current.get("__key__"):
                    finish(current)
                    current = {"__key__": key}
                current[suffix.lower()] = tar.extractfile(member).read()
        finish(current)
        if not _is_remote(url) and not _has_end_marker(url):
            report.error = "no end-of-archive marker: the shard was cut short at a member boundary"
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        report.error = f"{type(exc).__name__}: {exc}"
    return report


def _has_end_marker(path: str) -> bool:
    """A complete tar ends in (at least) two zero blocks; streaming readers accept a file cut just before them."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() < 1024:
            return False
        handle.seek(-1024, os.SEEK_END)
        return handle.read(1024) == bytes(1024)


def verify_shards(spec: str, out: str | Path | None = None, workers: int = 1) -> dict:
    """Check every shard of ``spec`` and write the manifest (default: ``manifest.json`` beside the shards)."""
    shard_list = resolve_shards(spec)
    if out is None:
        folders = {os.path.dirname(os.path.abspath(u)) for u in shard_list.urls if not _is_remote(u)}
        if len(folders) != 1:
            raise MixreorgError("shards are not all in one local folder; pass --out to say where the manifest goes")
        out = Path(folders.pop()) / "manifest.json"
    reports = []
    with progress_bar(total=len(shard_list.urls), desc="verify", unit="shard") as progress:
        if workers > 1:
            import multiprocessing

            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for report in pool.imap(check_shard, shard_list.urls):
                    reports.append(report)
                    progress.update(1)
        else:
            for url in shard_list.urls:
                reports.append(check_shard(url))
                progress.update(1)
    for report in reports:
        report.url = report.url if _is_remote(report.url) else os.path.abspath(report.url)
        for sample in report.bad_samples:
            sample["url"] = report.url
        if not report.error and not report.samples:  # a reader given only empty shards would have nothing
            first = f" (first: {report.bad_samples[0]['reason']})" if report.bad_samples else ""
            report.error = f"no usable samples{first}"
    good = [{"url": r.url, "num_samples": r.samples} for r in reports if not r.error]
    bad = [{"url": r.url, "reason": r.error, "readable_samples": r.samples} for r in reports if r.error]
    bad_samples = [s for r in reports if not r.error for s in r.bad_samples]  # bad shards are left out whole
    if not good:
        raise MixreorgError(
            f"no usable samples in {len(reports)} shard(s) of '{spec}' (first problem: {bad[0]['reason']})"
        )
    manifest = write_manifest(out, good, bad, bad_samples)
    return {"manifest": str(out), **manifest}
