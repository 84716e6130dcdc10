"""Hugging Face Hub checkpoints: ``--checkpoint owner/name`` through huggingface_hub against a loopback Hub, cached,
offline mode honoured, our format and transformers' (safetensors, .bin, sharded), and clear errors."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from mixreorg.checkpoint import convert_checkpoint, load_model, save_pretrained
from mixreorg.checkpoint.hub import download_from_hub, parse_hub_id
from mixreorg.config import load_config
from mixreorg.errors import MixreorgError
from mixreorg.model import build_model

sys.path.insert(0, os.path.dirname(__file__))
from cli_runner import run_cli  # noqa: E402
from local_hub import serve_hub  # noqa: E402

# transformers' GroupViT has GroupViT's Linear-BatchNorm-ReLU-Linear projector, not the tiny presets' linear one.
HF_PROJECTOR = ["model.projection.num_layers=2"]


@pytest.fixture(scope="module")
def groupvit():
    torch.manual_seed(0)
    return build_model(load_config("tiny_groupvit", HF_PROJECTOR)).eval()


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory, groupvit):
    """Three repositories: ours (a run's model folder), a transformers export, and one with sharded .bin weights."""
    root = tmp_path_factory.mktemp("hub")
    save_pretrained(groupvit, load_config("tiny_groupvit", HF_PROJECTOR), root / "lab" / "tiny-ours")
    convert_checkpoint(root / "lab" / "tiny-ours", root / "lab" / "tiny-hf", target_format="hf")
    sharded = root / "lab" / "tiny-sharded"
    sharded.mkdir()
    (sharded / "config.json").write_bytes((root / "lab" / "tiny-hf" / "config.json").read_bytes())
    from safetensors.torch import load_file

    state = load_file(root / "lab" / "tiny-hf" / "model.safetensors")
    names = sorted(state)
    halves = {"pytorch_model-00001-of-00002.bin": names[::2], "pytorch_model-00002-of-00002.bin": names[1::2]}
    for shard, keys in halves.items():
        torch.save({k: state[k] for k in keys}, sharded / shard)
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in halves.items() for k in keys}}
    (sharded / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    save_file({"unused": torch.zeros(1)}, root / "lab" / "not-a-model.safetensors")  # a file, not a repository
    return root


@pytest.fixture()
def online(monkeypatch, tmp_path):
    """A fresh Hub cache, and huggingface_hub allowed on the network (the test suite runs offline)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return constants


def _same_weights(loaded, original) -> bool:
    """Every tensor of ``loaded`` equals the original's (a transformers export drops the multi-label scale)."""
    theirs = original.state_dict()
    ours = loaded.state_dict()
    return set(theirs) - set(ours) <= {"multi_label_logit_scale"} and all(
        torch.equal(value, theirs[key]) for key, value in ours.items())


def test_hub_ids_are_told_apart_from_paths():
    assert parse_hub_id("nvidia/groupvit-gcc-yfcc") == ("nvidia/groupvit-gcc-yfcc", None)
    assert parse_hub_id("hf-hub:lab/model@v1.0") == ("lab/model", "v1.0")
    for other in ["group_vit_gcc_yfcc_30e", "runs/mr/model", "/abs/path", "../x/y", "a/b/c"]:
        assert parse_hub_id(other) is None, other


def test_models_download_once_and_load_offline_from_the_cache(hub_root, groupvit, online, monkeypatch):
    with serve_hub(hub_root) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        folders = {repo: download_from_hub(repo) for repo in ("lab/tiny-ours", "lab/tiny-hf", "lab/tiny-sharded")}
        fetched = sorted(path.rsplit("/", 1)[-1] for method, path, status in hub.requests
                         if method == "GET" and status == 200)
        # Only what the loader reads: ours' two files; the export's config and safetensors (not its tokenizer);
        # the sharded repository's config, index and shards after the missing safetensors were looked for.
        assert fetched == sorted(["config.yaml", "model.safetensors", "config.json", "model.safetensors",
                                  "config.json", "pytorch_model.bin.index.json", "pytorch_model-00001-of-00002.bin",
                                  "pytorch_model-00002-of-00002.bin"])
        for folder in folders.values():
            model, _ = load_model(folder)
            assert _same_weights(model, groupvit)
        before = len(hub.requests)
        monkeypatch.setattr(online, "HF_HUB_OFFLINE", True)
        for repo, folder in folders.items():
            assert download_from_hub(repo) == folder
        assert len(hub.requests) == before  # offline: the cache answered, nothing was asked
        with pytest.raises(MixreorgError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE is set"):
            download_from_hub("lab/never-fetched")
        monkeypatch.setattr(online, "HF_HUB_OFFLINE", False)
        with pytest.raises(MixreorgError, match="no model repository 'lab/missing'"):
            download_from_hub("lab/missing")


def test_segment_takes_a_hub_model_and_reports_hub_errors_in_one_line(hub_root, online, monkeypatch, capsys, tmp_path):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((24, 24, 3), dtype=np.uint8)).save(image)
    with serve_hub(hub_root) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        args = ["segment", str(image), "-l", "cat,dog", "--out", str(tmp_path / "out"), "--format", "json", "-c"]
        code, stdout, stderr = run_cli(args + ["hf-hub:lab/tiny-hf"], monkeypatch, capsys)
        assert code == 0, stderr
        assert json.loads((tmp_path / "out" / "x.json").read_text())["checkpoint"] == "hf-hub:lab/tiny-hf"
        code, stdout, stderr = run_cli(["convert", "lab/tiny-ours", "--to", "hf", "--out", str(tmp_path / "hf")],
                                       monkeypatch, capsys)
        assert code == 0 and "converted ours -> hf" in stdout, stderr
        assert (tmp_path / "hf" / "vocab.json").is_file()  # a Hub model, converted for transformers
        code, _, stderr = run_cli(args + ["lab/typo"], monkeypatch, capsys)
        assert code == 2 and stderr.count("\n") == 1
        assert "'lab/typo' is not an existing file or folder; as a Hub model: no model repository" in stderr
