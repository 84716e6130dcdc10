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
