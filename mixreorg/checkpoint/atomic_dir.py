"""Write a whole checkpoint folder so that it appears under its final name only once it is complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from mixreorg.errors import MixreorgError

PARTIAL_SUFFIX = ".partial"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def finish_tree(folder: Path) -> None:
    """Give temp-created entries normal permissions and flush them, so a crash after the rename cannot
    leave empty files."""
    mask = _umask()
    folder.chmod(0o777 & ~mask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


@contextlib.contextmanager
def atomic_directory(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; when the block succeeds it is renamed to ``path``.

    On error (or a killed process) only a hidden ``.NAME.*.partial`` folder is left, never a folder
    that looks complete. An existing ``path`` is replaced only with ``overwrite``; it is moved aside
    first and deleted after the new folder is in place.
    """
    path = Path(path)
    if path.exists() and not is_empty_dir(path) and not overwrite:
        raise MixreorgError(f"{path} already exists; choose a new output folder or allow overwriting (--force)")
    if path.exists() and not path.is_dir():
        raise MixreorgError(f"{path} exists and is a file; a checkpoint is written as a folder, choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX, dir=path.parent))
    try:
        yield tmp
        finish_tree(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
