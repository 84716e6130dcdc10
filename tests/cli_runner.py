"""Run the real console-script entry point inside the test process (importable: tests/ is on sys.path)."""

from __future__ import annotations

import sys
from pathlib import Path


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``mixreorg ARGS`` through ``entry()``, which turns errors into one line."""
    from mixreorg.cli.main import entry

    monkeypatch.setattr(sys, "argv", ["mixreorg", *args])
    try:
        entry()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def processes_in_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, read from /proc."""
    import os

    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended while we looked
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry))
    return found


def run_isolated(command: list[str], timeout: float, stderr_path=None, **popen) -> tuple[int, str, str]:
    """Run ``command`` as its own process group; fail if it outlives ``timeout`` (a hang) or leaves any
    process of its group behind (loader workers included). Returns (exit code, stdout, stderr); with
    ``stderr_path`` stderr goes to that file, as it would in a batch job's log, and is read back from it."""
    import os
    import signal
    import subprocess

    import pytest

    env = {**os.environ, "OMP_NUM_THREADS": "1", **popen.pop("env", {})}
    err = open(stderr_path, "w") if stderr_path else subprocess.PIPE  # noqa: SIM115 - closed below
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True, env=env,
                            **popen)
    try:
        out, err_text = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{' '.join(command[:3])} ... hung: still running after {timeout} s")
    finally:
        if stderr_path:
            err.close()
        left = processes_in_group(proc.pid)
        if left:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not left, f"processes left behind by {command[:3]}: {left}"
    if stderr_path:
        err_text = Path(stderr_path).read_text()
    return proc.returncode, out, err_text
