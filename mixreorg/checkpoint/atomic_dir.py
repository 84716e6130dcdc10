"""Write a whole checkpoint folder so that it appears under its final name only once it is complete."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from safetensors import SafetensorError

from mixreorg.errors import MixreorgError

PARTIAL_SUFFIX = ".partial"
# What the writers raise when a write fails: OSError (plain files), torch.save's RuntimeError
# ("unexpected pos ..."; saving into a Python file object chains the OSError behind it), safetensors' own.
WRITE_ERRORS = (OSError, RuntimeError, SafetensorError)
FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
FULL_DISK_TEXTS = ("No space left on device", "Disk quota exceeded", "os error 28", "os error 122")


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


def _disk_full(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in FULL_DISK_ERRNOS:
            return True
        if any(text in str(seen) for text in FULL_DISK_TEXTS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def write_failed(exc: BaseException, what: str, folder: Path, intact: str) -> MixreorgError:
    """One line for a failed write of ``what`` into ``folder``: a full disk says so; ``intact`` names what
    is still safe (e.g. 'the previous checkpoint step 4 is intact')."""
    if _disk_full(exc):
        return MixreorgError(f"no space left on {folder} while saving {what}; {intact}")
    return MixreorgError(f"could not write {what} to {folder} ({type(exc).__name__}: {exc}); {intact}")
