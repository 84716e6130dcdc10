"""Run the real console-script entry point inside the test process (importable: tests/ is on sys.path)."""

from __future__ import annotations

import sys


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
