"""Flags users trip on: one meaning for -c, eval's workers default, data fetch naming img2dataset's defaults."""

from __future__ import annotations

import os
import sys

from mixreorg.evaluation.run import EvalRequest, default_workers

sys.path.insert(0, os.path.dirname(__file__))
from cli_runner import run_cli  # noqa: E402


def test_c_means_checkpoint_and_train_says_so(tmp_path, monkeypatch, capsys):
    code, _, stderr = run_cli(["train", "-c", "tiny", "--out", str(tmp_path / "run")], monkeypatch, capsys)
    assert code == 2 and stderr.count("\n") == 1
    assert "train has no -c: name the preset or YAML with --config" in stderr
    assert not (tmp_path / "run").exists()
    for command in ("eval", "segment"):
        code, stdout, _ = run_cli([command, "--help"], monkeypatch, capsys)
        assert code == 0 and "-c" in stdout and "--checkpoint" in stdout


def test_eval_workers_default_to_the_machines_cores():
    assert EvalRequest("voc", "ckpt", "data").workers is None  # resolved when the processes are known
    cores = os.cpu_count() or 1
    assert default_workers(1) == cores and default_workers(cores * 2) == 1


def test_data_fetch_help_names_the_img2dataset_defaults_it_changes(monkeypatch, capsys):
    code, stdout, _ = run_cli(["data", "fetch", "--help"], monkeypatch, capsys)
    text = " ".join(stdout.replace("│", " ").split())  # rich draws a box around the options
    assert code == 0
    for default in ("default is 256", "default is border", "default is 1)", "default is 256,"):
        assert default in text, default
