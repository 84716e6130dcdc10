"""The installed package: every subpackage listed, the CLI under mixreorg.cli, and a working console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "mixreorg").rglob("__init__.py")}
    found |= {"mixreorg.cli", "mixreorg.data_manifests"}
    assert found == listed


def test_cli_claims_no_top_level_name(tmp_path):
    probe = "import importlib.util as u, mixreorg.cli.main; print(u.find_spec('cli') is None)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def _mixreorg(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("mixreorg", path=str(Path(sys.executable).parent)) or "mixreorg"
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_help_lists_every_stage_and_version_prints():
    out = _mixreorg("--help")
    assert out.returncode == 0
    for command in ("data", "train", "convert", "eval", "segment", "info", "version"):
        assert command in out.stdout
    from mixreorg import __version__

    assert _mixreorg("version").stdout.strip() == __version__
