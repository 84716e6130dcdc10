"""Resumable, checksummed, atomic HTTP downloads and safe archive extraction.

A download streams into ``<dest>.part``; an interrupted one resumes from where it stopped with an HTTP
``Range`` request. Only a file whose size and published checksums match is renamed to ``dest``, so a file
under its final name is always complete. Used for benchmark archives, URL lists and (later) checkpoints.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from mixreorg.errors import MixreorgError
from mixreorg.utils.progress import progress_bar

CHUNK_BYTES = 1 << 20
MIRROR_ENV = "MIXREORG_DATA_MIRROR"


def mirrored_url(url: str, mirror: str | None = None, name: str | None = None) -> str:
    """Point ``url`` at ``mirror`` (option, else $MIXREORG_DATA_MIRROR): ``{mirror}/{name or the URL's file name}``.

    A mirror is any HTTP folder holding the files under their official names (a lab cache, a local copy).
    """
    mirror = mirror or os.environ.get(MIRROR_ENV)
    if not mirror:
        return url
    name = name or PurePosixPath(urllib.request.urlparse(url).path).name
    return f"{mirror.rstrip('/')}/{name}"


def file_digests(path: Path, algorithms: list[str], desc: str | None = None) -> dict[str, str]:
    """Hex digests of ``path`` for each algorithm, in one read."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as handle, _bytes_bar(path.stat().st_size, 0, desc or f"checking {path.name}") as bar:
        while block := handle.read(CHUNK_BYTES):
            for hasher in hashers.values():
                hasher.update(block)
            bar.update(len(block))
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def verify_file(path: Path, size: int | None = None, sha256: str | None = None, md5: str | None = None) -> None:
    """Raise MixreorgError unless ``path`` has the given size and checksums (None = not checked)."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise MixreorgError(f"{path} has {actual_size:,} bytes, expected {size:,}")
    expected = {name: value.lower() for name, value in (("sha256", sha256), ("md5", md5)) if value}
    if not expected:
        return
    actual = file_digests(path, list(expected))
    for name, value in expected.items():
        if actual[name] != value:
            raise MixreorgError(f"{path.name} has {name} {actual[name]}, expected {value}")


def download_file(
    url: str,
    dest: str | Path,
    *,
    size: int | None = None,
    sha256: str | None = None,
    md5: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify it, and rename it into place.

    An existing ``dest`` is verified and kept. A size or checksum mismatch deletes the partial file and
    raises MixreorgError; a dropped connection keeps it so that the next call resumes.
    """
    dest = Path(dest)
    if dest.exists():
        try:
            verify_file(dest, size, sha256, md5)
        except MixreorgError as exc:
            raise MixreorgError(f"{exc}; delete {dest} to download it again") from exc
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    if size is None or offset < size:
        _stream(url, part, offset, size, timeout)
    try:
        verify_file(part, size, sha256, md5)
    except MixreorgError as exc:
        part.unlink(missing_ok=True)
        raise MixreorgError(f"download of {url} is corrupt: {exc}; deleted it, rerun to download again") from exc
    os.replace(part, dest)
    return dest


def _stream(url: str, part: Path, offset: int, size: int | None, timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "mixreorg"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send: the part file is already whole
            return
        raise MixreorgError(
            f"{url} answered HTTP {exc.code} ({exc.reason}); check the URL, or use --mirror/--from"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MixreorgError(f"cannot reach {url} ({reason}); check the network, or use --mirror/--from") from exc
    error: Exception | None = None
    with response:
        if offset and response.status != 206:  # the server ignored Range: start over
            offset = 0
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length else size
        with open(part, "ab" if offset else "wb") as out, _bytes_bar(size or expected, offset, part.name) as bar:
            while True:
                try:
                    block = response.read(CHUNK_BYTES)
                except (OSError, http.client.HTTPException) as exc:  # the connection, not our disk
                    block, error = b"", exc
                if not block:
                    break
                out.write(block)
                bar.update(len(block))
    done = part.stat().st_size
    if error is not None or (expected is not None and done < expected):
        raise MixreorgError(
            f"download of {url} stopped at {done:,} bytes ({error or 'connection closed'}); "
            "rerun the same command to resume"
        )


def _bytes_bar(total: int | None, initial: int, desc: str) -> tqdm:
    return progress_bar(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                        leave=False, dynamic_ncols=True)


def extract_archive(archive: str | Path, dest: str | Path, members: str | None = None) -> Path:
    """Extract a .tar/.tar.gz/.tgz/.zip ``archive`` into ``dest``; ``members`` keeps names with that prefix.

    Files go to a hidden staging folder first and are moved into ``dest`` only when the whole archive was read,
    so an interrupted extraction never leaves a half-filled tree under the final names. Entries that would land
    outside ``dest`` (absolute paths, ``..``, links) are refused.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / f".extracting-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, staging, members)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, staging, members)
        else:
            raise MixreorgError(f"{archive} is neither a tar nor a zip archive; check the file")
        for entry in sorted(staging.iterdir()):
            _merge_move(entry, dest / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _safe_name(name: str, archive: Path) -> PurePosixPath | None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise MixreorgError(f"{archive} holds an unsafe path '{name}'; refusing to extract it")
    return path if path.parts else None


def _wanted(name: str, members: str | None) -> bool:
    return members is None or name.lstrip("./").startswith(members.lstrip("./"))


def _extract_zip(archive: Path, staging: Path, members: str | None) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = [info for info in zf.infolist() if _wanted(info.filename, members)]
        for info in progress_bar(infos, desc=f"extracting {archive.name}", unit="file", leave=False):
            path = _safe_name(info.filename, archive)
            if path is None:
                continue
            target = staging / path
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK_BYTES)


def _extract_tar(archive: Path, staging: Path, members: str | None) -> None:
    with tarfile.open(archive) as tf, progress_bar(desc=f"extracting {archive.name}", unit="file", leave=False) as bar:
        for info in tf:  # streaming: a 6 GB tar is never listed in memory first
            if not _wanted(info.name, members):
                continue
            path = _safe_name(info.name, archive)
            if path is None:
                continue
            target = staging / path
            if info.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif info.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                with tf.extractfile(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK_BYTES)
                bar.update(1)
            # links and devices are skipped: no benchmark archive needs them and they can point outside dest


def _merge_move(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``; folders that already exist are merged, files are replaced."""
    if src.is_dir() and dst.is_dir():
        for entry in src.iterdir():
            _merge_move(entry, dst / entry.name)
        src.rmdir()
    else:
        if dst.is_dir() and not dst.is_symlink():
            shutil.rmtree(dst)
        os.replace(src, dst)
