"""Shared fixtures: small models and a deterministic, offline environment for every test."""

from __future__ import annotations

import os

import pytest

# Tests never reach a model hub; fail fast instead of hanging on the closed network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_config():
    from mixreorg.config import load_config

    return load_config("tiny")


@pytest.fixture()
def tiny_model(tiny_config):
    import torch

    from mixreorg.model import build_model

    torch.manual_seed(0)
    return build_model(tiny_config)


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread per test: on a 2-core machine two threads wait on each other at every op,
    and subprocess tests (torchrun ranks, loader workers) need the other core."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> str:
    """A 128-image synthetic training corpus (64 px, 8 shards); its manifest is what `--data` takes."""
    from mixreorg.data.synthetic import generate_corpus

    root = tmp_path_factory.mktemp("corpus") / "synth"
    generate_corpus(root, train_size=128, eval_size=0, image_size=64, shard_size=16)
    return str(root / "train" / "manifest.json")
