"""The README's quick start, run as written: each line of its shell block and its Python block, with the two
downloads (the photo, the released weights) served from 127.0.0.1 instead of the internet."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mixreorg.config import load_config
from mixreorg.model import build_model

sys.path.insert(0, os.path.dirname(__file__))
from cli_runner import run_cli  # noqa: E402
from local_http import serve  # noqa: E402
from test_segment import write_official_release  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"


def quick_start() -> tuple[list[str], str]:
    """(shell lines, Python code) of the README's quick start section."""
    section = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    shell = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return [line for line in shell.splitlines() if line.strip()], python


def test_quick_start_runs_as_written(tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    served = tmp_path / "served"
    served.mkdir()
    release = served / "release.pth"
    write_official_release(build_model(load_config("tiny_groupvit")).eval(), release)  # a tiny stand-in
    digest = hashlib.sha256(release.read_bytes()).hexdigest()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    shell, python = quick_start()
    with serve(served) as server:
        manifest = tmp_path / "checkpoints.yaml"
        manifest.write_text(f"group_vit_gcc_yfcc_30e:\n  file: release-{digest[:8]}.pth\n"
                            f"  urls: ['{server.url('release.pth')}']\n  sha256_prefix: {digest[:8]}\n")
        monkeypatch.setenv("MIXREORG_CHECKPOINTS_MANIFEST", str(manifest))
        monkeypatch.setenv("MIXREORG_CACHE", str(tmp_path / "cache"))
        ran = 0
        for line in shell:
            words = shlex.split(line)
            if words[:3] == ["python3", "-m", "venv"]:
                continue  # the install: these tests run inside it
            if words[0] == "curl":  # the photo's download: any photo will do
                photo = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
                Image.fromarray(photo).save(work / words[-1].rsplit("/", 1)[-1])
                continue
            assert words[0] == "mixreorg", f"the quick start has a line this test cannot run: {line}"
            code, stdout, stderr = run_cli(words[1:], monkeypatch, capsys)
            assert code == 0, stderr
            ran += 1
        assert ran == 1 and [r.status for r in server.requests] == [200]  # the weights, downloaded once
        for name in ("000000039769_mask.png", "000000039769_overlay.png", "000000039769.json"):
            assert (work / "seg" / name).is_file(), name  # the files the README names
        (work / "seg" / "000000039769.json").unlink()
        exec(compile(python, "README quick start", "exec"), {})
        assert (work / "seg" / "000000039769.json").is_file() and len(server.requests) == 1  # from the cache
