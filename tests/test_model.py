"""The image/text encoders and the three-branch MixReorg forward: shapes, sizes, invariants, gradients."""

from __future__ import annotations

import pytest
import torch

from mixreorg.config import load_config
from mixreorg.errors import MixreorgError
from mixreorg.model import build_model, tokenize
from mixreorg.model.mixing import mix, sample_mixing_plan


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_groupvit_preset_has_the_official_parameter_counts():
    # Figures from the spec (instantiating the official modules): 55,726,610 in total.
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        model = build_model("groupvit_vits16")
        mixreorg = build_model("mixreorg_vits16")
    assert _count(model.image_encoder) == 28_837_136
    assert _count(model.text_encoder) == 22_145_792
    assert _count(model.image_projector) == 2_633_984
    assert _count(model.text_projector) == 2_109_696
    assert _count(model) == 55_726_610
    # MixReorg: 64 -> 32 groups plus one contextual block (spec 8.1).
    assert _count(mixreorg.image_encoder) == 28_860_224 + 1_774_464


def test_image_encoder_runs_at_other_sizes_in_eval(tiny_model):
    tiny_model.eval()
    with torch.no_grad():
        out = tiny_model.image_encoder(torch.randn(2, 3, 64, 96))
    assert out.grid == (8, 12)
    assert out.tokens.shape == (2, 8, 96) and out.pooled.shape == (2, 96)
    first, second = out.assignments
    assert first.soft.shape == (2, 16, 96) and second.soft.shape == (2, 8, 16)
    # Every token is assigned to exactly one group at inference, and soft maps are distributions.
    assert torch.equal(first.hard.sum(dim=1), torch.ones(2, 96))
    torch.testing.assert_close(first.soft.sum(dim=1), torch.ones(2, 96))


def test_inference_is_deterministic_and_training_assignment_is_noisy(tiny_model):
    images = torch.randn(2, 3, 64, 64)
    tiny_model.eval()
    with torch.no_grad():
        a, b = tiny_model.encode_image(images)[0], tiny_model.encode_image(images)[0]
    assert torch.equal(a, b)
    tiny_model.train()
    torch.manual_seed(1)
    hard_1 = tiny_model.image_encoder(images).assignments[0].hard
    torch.manual_seed(2)
    hard_2 = tiny_model.image_encoder(images).assignments[0].hard
    assert not torch.equal(hard_1, hard_2)  # gumbel noise only in training


def test_original_branch_of_mixreorg_equals_plain_forward(tiny_model):
    tiny_model.eval()
    images = torch.randn(8, 3, 64, 64)
    plan = sample_mixing_plan(8, 64, 4, torch.device("cpu"), torch.Generator().manual_seed(0))
    with torch.no_grad():
        branches = tiny_model.image_encoder.forward_mixreorg(images, plan, tiny_model.cfg.mixing)
        plain = tiny_model.image_encoder(images)
    torch.testing.assert_close(branches.original.tokens, plain.tokens, atol=1e-5, rtol=1e-5)


def test_without_progressive_mixing_the_mixed_branch_is_the_encoder_on_mixed_tokens(tiny_config):
    cfg = load_config("tiny", ["model.mixing.progressive_layers=0"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    images = torch.randn(8, 3, 64, 64)
    plan = sample_mixing_plan(8, 64, 4, torch.device("cpu"), torch.Generator().manual_seed(3))
    encoder = model.image_encoder
    with torch.no_grad():
        branches = encoder.forward_mixreorg(images, plan, cfg.model.mixing)
        tokens, grid = encoder.embed(images)
        expected = encoder._stages(mix(tokens, plan), None, 0, [], grid)
        progressive = encoder.forward_mixreorg(images, plan, tiny_config.model.mixing)
    torch.testing.assert_close(branches.mixed.tokens, expected.tokens, atol=1e-5, rtol=1e-5)
    # With P > 0 the original features enter the mixed branch, so it changes.
    assert not torch.allclose(progressive.mixed.tokens, expected.tokens, atol=1e-3)


@pytest.mark.parametrize("mode", ["output", "input", "average"])
def test_training_forward_reaches_every_parameter(mode):
    torch.manual_seed(0)
    model = build_model("tiny", [f"model.mixing.progressive_mode={mode}"])
    from mixreorg.losses import compute_losses

    batch = 8
    texts = tokenize([f"a {c} star on sand" for c in ["red", "blue"] * 16], 32).reshape(batch, 4, 32)
    out = model(torch.randn(batch, 3, 64, 64), texts, generator=torch.Generator().manual_seed(0))
    losses = compute_losses(out, load_config("tiny").loss, group_size=4)
    terms = {key for key in losses if key.endswith("_loss")}
    assert terms == {"contrastive_loss", "multi_label_loss", "segmentation_loss", "restoration_loss"}
    losses["loss"].backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert unused == []


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = build_model("tiny_groupvit", ["model.vision.hard_assignment=false"])
    images = torch.randn(4, 3, 64, 64)
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        model.image_encoder.grad_checkpointing = checkpointing
        model.image_encoder(images).pooled.square().sum().backward()
        grads.append(model.image_encoder.pos_embed.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_text_encoder_pools_at_the_end_token(tiny_model):
    tiny_model.eval()
    tokens = tokenize(["a cat", "a cat"], 32)
    tokens[1, 5:] = 0  # padding after EOT never changes the embedding (causal mask)
    tokens[0, 5:] = 7
    with torch.no_grad():
        emb = tiny_model.encode_text(tokens)
    torch.testing.assert_close(emb[0], emb[1])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.vision.heads=5"], "divisible by their number of heads"),
        (["model.mixing.progressive_layers=9"], "progressive_layers must be between 0"),
        (["model.mixing.progressive_mode=sideways"], "progressive_mode must be one of"),
        (["model.vision.depths=[2,1]"], "one entry per stage"),
        (["model.vision.stem=resnet"], "stem must be one of patch, conv"),
        (
            ["model.vision.stem=conv", "model.vision.image_size=72", "model.vision.patch_size=6"],
            "stem=conv needs a power-of-two patch_size",
        ),
    ],
)
def test_invalid_model_configs_are_rejected(overrides, message):
    with pytest.raises(MixreorgError, match=message):
        build_model("tiny", overrides)


def test_conv_stem_keeps_the_patch_grid_and_every_token_sees_only_its_neighbourhood():
    torch.manual_seed(0)
    model = build_model("tiny", ["model.vision.stem=conv"]).eval()
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        tokens, grid = model.image_encoder.patch_embed(images)
        assert grid == (8, 12) and tokens.shape == (1, 96, 96)
        # Changing the top-left corner moves the first token but not one a few patches away.
        changed = images.clone()
        changed[..., :4, :4] += 5.0
        moved, _ = model.image_encoder.patch_embed(changed)
    assert not torch.allclose(moved[0, 0], tokens[0, 0])
    torch.testing.assert_close(moved[0, 3 * 12 + 3], tokens[0, 3 * 12 + 3])
    assert model.image_encoder(images).tokens.shape == (1, 8, 96)


def test_trimmed_text_encoding_equals_open_clips_full_length_forward(tiny_model):
    from mixreorg.model.text_encoder import encode_tokens

    tiny_model.eval()
    tokens = tokenize(["a cat", "a striped red star lying on the sand"], 32)
    with torch.no_grad():
        full = tiny_model.text_encoder(tokens)
        trimmed = encode_tokens(tiny_model.text_encoder, tokens)
    torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=1e-5)


def test_uninitialised_build_then_strict_load_equals_the_original(tiny_model):
    empty = build_model(tiny_model.cfg, initialize=False)
    empty.load_state_dict(tiny_model.state_dict(), strict=True)
    tiny_model.eval(), empty.eval()
    tokens = tokenize(["a red star"], 32)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(empty.encode_text(tokens), tiny_model.encode_text(tokens))
        torch.testing.assert_close(empty.encode_image(images)[0], tiny_model.encode_image(images)[0])


def test_tiny_presets_project_with_one_linear_layer_and_the_paper_presets_with_groupvits_head():
    # The tiny presets' projector is affine (no BatchNorm whose statistics collapse the small models' segments);
    # the paper-scale presets keep GroupViT's Linear-BatchNorm-ReLU-Linear.
    torch.manual_seed(0)
    for preset in ("tiny", "tiny_groupvit"):
        model = build_model(preset).train()
        for projector in (model.image_projector, model.text_projector):
            assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in projector.modules())
            a, b = torch.randn(4, projector.linear_out.in_features), torch.randn(4, projector.linear_out.in_features)
            zero = projector(torch.zeros_like(a))
            torch.testing.assert_close(projector(a + b) - zero, (projector(a) - zero) + (projector(b) - zero))
    for preset in ("groupvit_vits16", "mixreorg_vits16"):
        assert load_config(preset).model.projection.num_layers == 2
    two = build_model("tiny", ["model.projection.num_layers=2"])
    assert isinstance(two.image_projector.linear_hidden[1], torch.nn.BatchNorm1d)
