"""SA-1B as Meta distributes it, into image-mask shards.

The release is ~1000 tar files, each ~11k pairs of ``sa_N.jpg`` and ``sa_N.json`` (the per-image record with COCO
RLE masks that our shards use too). Meta's links file is a tab-separated ``file_name<TAB>cdn_link`` list with a
header line; given it, the tars are downloaded (resumable, kept in ``download_dir`` so a rerun skips them) and read
one after another. Local tars, or folders of them, are read in place. Pairs are checked as they stream: an image
that does not decode, masks that do not decode or do not fit the image, an empty mask set, or half a pair is skipped
and counted.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

from mixreorg.data.masks.convert import Item, write_mask_dataset
from mixreorg.errors import MixreorgError


def read_links(path: Path) -> list[tuple[str, str]]:
    """(file name, URL) of each tar in Meta's links file."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise MixreorgError(f"cannot read the SA-1B links file {path} ({exc})") from exc
    links = []
    for number, line in enumerate(lines, 1):
        parts = line.strip().split("\t")
        if not line.strip() or (number == 1 and parts[0] == "file_name"):
            continue
        if len(parts) != 2 or not parts[0].endswith(".tar") or "://" not in parts[1]:
            raise MixreorgError(f"{path} line {number} is not 'sa_NNNNNN.tar<TAB>URL'; pass Meta's SA-1B links file "
                                "(or the downloaded .tar files)")
        links.append((parts[0], parts[1]))
    if not links:
        raise MixreorgError(f"{path} lists no tar file; pass Meta's SA-1B links file")
    return links


def local_tars(inputs: list[Path]) -> list[Path]:
    tars = []
    for path in inputs:
        if path.is_dir():
            tars += sorted(path.glob("*.tar"))
        elif path.suffix == ".tar" and path.is_file():
            tars.append(path)
        else:
            raise MixreorgError(f"{path} is neither an SA-1B links file, a .tar file nor a folder of them")
    if not tars:
        raise MixreorgError(f"no .tar files in {', '.join(map(str, inputs))}")
    return tars


def tar_items(path: Path) -> Iterator[Item]:
    """The (image, record) pairs of one SA-1B tar, in member order; a pair's halves may come in either order."""
    pending: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(path) as archive:
            for member in archive:
                name = Path(member.name)
                if not member.isfile() or name.suffix.lower() not in (".jpg", ".jpeg", ".json"):
                    continue
                kind = "json" if name.suffix.lower() == ".json" else "jpg"
                halves = pending.setdefault(name.stem, {})
                halves[kind] = archive.extractfile(member).read()
                if len(halves) == 2:
                    del pending[name.stem]
                    yield Item(name.stem, halves["jpg"], halves["json"])
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise MixreorgError(f"{path} is not a readable tar file ({exc}); download it again") from exc
    for stem, halves in pending.items():
        yield Item(stem, halves.get("jpg"), halves.get("json"))


def convert_sa1b(inputs: list[str | Path], out: str | Path, download_dir: str | Path | None = None,
                 limit_tars: int = 0, max_side: int = 1024, shard_size: int = 1000) -> dict:
    """Shards of SA-1B from the links file (downloading its tars) or from local tars; ``limit_tars`` keeps the
    first N tars (0: all)."""
    from mixreorg.data.download import download_file

    paths = [Path(p).expanduser() for p in inputs]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise MixreorgError(f"{missing[0]} does not exist; pass Meta's SA-1B links file or the .tar files")
    if limit_tars < 0:
        raise MixreorgError(f"--limit-tars must be 0 (all) or more, got {limit_tars}")
    links_file = len(paths) == 1 and paths[0].is_file() and paths[0].suffix != ".tar"
    if links_file:
        links = read_links(paths[0])[: limit_tars or None]
        folder = Path(download_dir).expanduser() if download_dir else Path(out).parent / "sa1b_tars"
        sources = [(folder / name, url) for name, url in links]
    else:
        sources = [(tar, None) for tar in local_tars(paths)[: limit_tars or None]]

    def items() -> Iterator[Item]:
        for tar, url in sources:
            if url is not None:
                download_file(url, tar)
            yield from tar_items(tar)

    summary = write_mask_dataset(items(), out, shard_size, max_side, None, "sa1b", ", ".join(map(str, inputs)))
    return {**summary, "tars": len(sources)}
