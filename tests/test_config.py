"""Presets, YAML files and key=value overrides resolve into typed configs, and bad input is named clearly."""

from __future__ import annotations

import pytest

from mixreorg.config import available_presets, config_to_dict, load_config, save_config
from mixreorg.errors import MixreorgError


def test_presets_ship_with_the_package():
    assert {"tiny", "tiny_groupvit", "groupvit_vits16", "mixreorg_vits16"} <= set(available_presets())


def test_mixreorg_preset_matches_the_paper():
    cfg = load_config("mixreorg_vits16")
    vision = cfg.model.vision
    assert (vision.width, vision.heads, vision.depths, vision.contextual_layers) == (384, 6, [6, 3, 3], 1)
    assert vision.num_group_tokens[:2] == [64, 32] and vision.num_output_groups == [64, 32]
    assert (cfg.model.text.layers, cfg.model.text.width, cfg.model.projection.embed_dim) == (12, 256, 256)
    assert cfg.model.mixing.enabled and cfg.model.mixing.group_size == 16 and cfg.model.mixing.progressive_layers == 6


def test_overrides_are_typed_and_nested():
    cfg = load_config(
        "tiny", ["train.batch_size=64", "model.vision.depths=[1,1,1]", "train.base_lr=1", "loss.gather_with_grad=false"]
    )
    assert cfg.train.batch_size == 64
    assert cfg.model.vision.depths == [1, 1, 1]
    assert isinstance(cfg.train.base_lr, float) and cfg.train.base_lr == 1.0
    assert cfg.loss.gather_with_grad is False


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.batchsize=3", "unknown config key 'train.batchsize'"),
        ("train.batch_size=abc", "expects an integer"),
        ("model.vision=3", "is a section"),
        ("novalue", "key=value"),
        ("loss.gather_with_grad=maybe", "true or false"),
    ],
)
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(MixreorgError, match=message):
        load_config("tiny", [override])


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(MixreorgError, match="unknown preset 'nope'.*tiny"):
        load_config("nope")


def test_yaml_file_with_base_preset_and_roundtrip(tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text("base: tiny\ntrain:\n  batch_size: 8\n")
    cfg = load_config(user, ["train.epochs=3"])
    assert cfg.model.name == "tiny" and cfg.train.batch_size == 8 and cfg.train.epochs == 3
    resolved = tmp_path / "resolved.yaml"
    save_config(cfg, resolved)
    assert config_to_dict(load_config(resolved)) == config_to_dict(cfg)


def test_missing_yaml_and_invalid_yaml(tmp_path):
    with pytest.raises(MixreorgError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(MixreorgError, match="not valid YAML"):
        load_config(broken)
