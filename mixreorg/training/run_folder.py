"""One owner per run folder: an ``fcntl`` lock held by the training process (rank 0) for the whole run.

The kernel drops the lock when its process ends, however it ends (kill -9 included), so a lock never goes
stale; the ``.lock`` file itself stays and only names the last holder (PID and host). A second run on the same
``--out`` (fresh or ``--resume auto``) stops at once with one line naming that PID.

The lock is a POSIX record lock (``lockf``), not ``flock``: a forked DataLoader worker would share an
``flock`` and keep the folder locked after its parent was killed. A POSIX lock belongs to one process (and
works over NFS), but closing any descriptor of the file drops it, so this module is the file's only reader.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import socket
from pathlib import Path

from mixreorg.errors import MixreorgError

LOCK_FILE = ".lock"


def _holder(lock: Path) -> str:
    """'process 1234 on node7' as the holder wrote it (a run folder on a shared filesystem spans machines)."""
    try:
        pid, _, host = lock.read_text().strip().partition(" ")
    except OSError:
        pid, host = "", ""
    if not pid.isdigit():
        return "another process"
    return f"process {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")


def _busy(run_dir: Path, lock: Path) -> MixreorgError:
    return MixreorgError(
        f"{run_dir} is in use: {_holder(lock)} is training there (it holds {lock}); wait for it to end, "
        "stop it, or choose another --out"
    )


def check_not_in_use(run_dir: Path) -> None:
    """Fail now when a live process owns ``run_dir`` (a probe: takes and drops the lock, creates nothing)."""
    lock = run_dir / LOCK_FILE
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return  # no lock file: nobody ever trained here, or it is not writable and the real lock will say so
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            raise _busy(run_dir, lock) from None
        raise
    finally:
        os.close(fd)  # closing drops a lock taken here


class RunFolder:
    """The run folder as this process owns it: the lock, and what a failed start must take back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = path / LOCK_FILE
        self._fd: int | None = None
        self._created_folder = False
        self._created_lock = False

    def acquire(self) -> None:
        """Create the folder if needed and take its lock, or raise naming the process that holds it."""
        self._created_folder = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        while True:
            self._created_lock = not self.lock.exists()
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EACCES, errno.EAGAIN):
                    raise _busy(self.path, self.lock) from None
                raise
            # A failed start of the previous owner may have deleted the file we locked: lock the new one.
            with contextlib.suppress(FileNotFoundError):
                if os.fstat(fd).st_ino == os.stat(self.lock).st_ino:
                    break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard_failed_start(self, names: list[str]) -> None:
        """Remove what a run that failed before its first step wrote (``names`` in the folder), the lock file
        if this run made it, and the folder if this run made it and nothing else is in it."""
        for name in names:
            target = self.path / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
        if self._created_lock:
            self.lock.unlink(missing_ok=True)
        if self._created_folder:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only if empty
