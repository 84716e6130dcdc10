"""Unpair-Seg's frozen backbones: open_clip ConvNeXt and ViT towers by name and tag (tiny random models registered as
open_clip configs, nothing downloaded) and our GroupViT checkpoints; their levels, dense features, region embeddings
and text towers, checked against the models' own forwards."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from tiny_openclip import CONVNEXT, RESNET, VIT, build, weights_file  # noqa: E402

from mixreorg.errors import MixreorgError  # noqa: E402
from mixreorg.unpairseg.adapter import mask_pool  # noqa: E402
from mixreorg.unpairseg.backbones import (  # noqa: E402
    ConvNeXtBackbone,
    GroupingBackbone,
    ViTBackbone,
    build_backbone,
    check_backbone_name,
)


def _images(seed: int = 0, size: int = 64) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(2, 3, size, size)


def test_convnext_levels_are_strides_4_to_32_and_a_whole_image_region_is_clips_image_embedding(tmp_path):
    spec = f"openclip:{CONVNEXT}:{weights_file(tmp_path, CONVNEXT)}"
    backbone, model_cfg = build_backbone(spec, [], pretrained=True)
    assert isinstance(backbone, ConvNeXtBackbone) and model_cfg is None
    assert not any(p.requires_grad for p in backbone.parameters()) and not backbone.training
    images = _images()
    with torch.no_grad():
        out = backbone(images)
        assert [tuple(level.shape[-2:]) for level in out.levels] == [(16, 16), (8, 8), (4, 4), (2, 2)]
        assert [level.shape[1] for level in out.levels] == backbone.channels
        whole = backbone.embed_regions(mask_pool(out.dense, torch.ones(2, 1, 64, 64)))[:, 0]
        clip = backbone.clip.encode_image(images)
    torch.testing.assert_close(whole, clip, rtol=1e-4, atol=1e-5)
    reference = build(CONVNEXT)  # the same weights, as open_clip loads them from the file
    with torch.no_grad():
        torch.testing.assert_close(backbone.clip.encode_text(backbone.tokenizer(["a zebra"])),
                                   reference.encode_text(backbone.tokenizer(["a zebra"])))


def test_vit_dense_features_are_its_projected_patch_tokens(tmp_path):
    from mixreorg.training_free.dense import dense_features
    from mixreorg.training_free.methods import get_method

    backbone, _ = build_backbone(f"openclip:{VIT}:{weights_file(tmp_path)}", [1, 1, 2, 2], pretrained=True)
    assert isinstance(backbone, ViTBackbone) and backbone.layers == [0, 0, 1, 1]
    images = _images(1)
    with torch.no_grad():
        out = backbone(images)
        tokens, grid = dense_features(backbone.clip.visual, images, get_method("plain"))
    assert [tuple(level.shape[-2:]) for level in out.levels] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    torch.testing.assert_close(out.dense, tokens[:, 1:].transpose(1, 2).reshape(2, -1, *grid))
    assert backbone.embed_regions(out.dense[:, :, 0, 0]) is not None


def test_groupvit_dense_features_mix_its_segments_and_its_text_tower_is_its_own(tiny_model):
    from mixreorg.evaluation.zero_shot import embed_classes

    backbone = GroupingBackbone(tiny_model.eval(), [])
    images = _images(2)
    with torch.no_grad():
        out = backbone(images)
        encoded = tiny_model.image_encoder(images)
        segments = F.normalize(tiny_model.segment_embeddings(encoded), dim=-1)  # [B, S, D]
    assert [tuple(level.shape[-2:]) for level in out.levels] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    # every patch's dense vector is a convex mixture of the image's segment embeddings
    from mixreorg.model.mixreorg import combine_assignments

    soft = combine_assignments(encoded.assignments, "soft")
    expected = (soft @ segments).transpose(1, 2).reshape(2, -1, 8, 8)
    torch.testing.assert_close(out.dense, expected)
    names = ["zebra", "grass"]
    torch.testing.assert_close(backbone.embed_names(names, ["a photo of a {}."]),
                               embed_classes(tiny_model, names, ("a photo of a {}.",)))


@pytest.mark.parametrize(("name", "message"), [
    ("", "unpairseg.model.backbone is empty"),
    ("resnet50", "unknown backbone 'resnet50'"),
    ("openclip:no-such-model:x", "unknown open_clip model 'no-such-model'"),
    ("checkpoint:", "names no checkpoint"),
])
def test_unknown_backbones_are_refused_in_one_line(name, message):
    with pytest.raises(MixreorgError, match=message):
        check_backbone_name(name)


def test_a_resnet_tower_and_a_missing_checkpoint_are_refused(tmp_path):
    with pytest.raises(MixreorgError, match="ModifiedResNet image tower; Unpair-Seg takes open_clip's ConvNeXt"):
        build_backbone(f"openclip:{RESNET}:{weights_file(tmp_path, RESNET)}", [], pretrained=True)
    with pytest.raises(MixreorgError, match="is neither an existing file or folder nor a known name"):
        build_backbone(f"checkpoint:{tmp_path / 'nothing'}", [], pretrained=True)
