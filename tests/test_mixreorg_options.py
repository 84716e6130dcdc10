"""MixReorg's reading options (not in the paper) each change what they say, and the training diagnostics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mixreorg.config.loader import load_config
from mixreorg.errors import MixreorgError
from mixreorg.losses import compute_losses
from mixreorg.model import build_model
from mixreorg.model.mixreorg import combine_assignments
from mixreorg.model.tokenizer import tokenize

BATCH = 8


def _inputs():
    torch.manual_seed(1)
    texts = tokenize([f"a {c} zebra on sand" for c in ["young", "big"] * 16], 32).reshape(BATCH, 4, 32)
    return torch.randn(BATCH, 3, 64, 64), texts


def _forward(overrides: list[str], seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("tiny", overrides)
    images, texts = _inputs()
    out = model(images, texts, generator=torch.Generator().manual_seed(0))
    return model, out


def _loss_grads(overrides: list[str], *, only_segmentation: bool = False) -> tuple[torch.Tensor, dict]:
    model, out = _forward(overrides)
    cfg = load_config("tiny", overrides).loss
    if only_segmentation:
        cfg.contrastive_weight = cfg.multi_label_weight = cfg.restoration_weight = 0.0
    losses = compute_losses(out, cfg, group_size=4)
    losses["loss"].backward()
    return losses["loss"].detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _differs(a: dict, b: dict) -> bool:
    """Some gradient differs by more than 0.1% of its size (gradients at initialisation are tiny)."""
    return any((a[n] - b[n]).norm() > 1e-3 * a[n].norm() for n in a.keys() & b.keys() if a[n].norm() > 0)


def test_progressive_detach_keeps_the_forward_and_cuts_the_gradient_through_the_remixed_features():
    loss, grads = _loss_grads([])
    loss_detached, grads_detached = _loss_grads(["model.mixing.progressive_detach=true"])
    torch.testing.assert_close(loss, loss_detached)
    assert _differs(grads, grads_detached)
    # Without progressive mixing there is no Mix(Z_o) to detach: nothing changes.
    _, plain = _loss_grads(["model.mixing.progressive_layers=0"])
    _, plain_detached = _loss_grads(["model.mixing.progressive_layers=0", "model.mixing.progressive_detach=true"])
    assert not _differs(plain, plain_detached)


def test_seg_attention_detach_gives_the_segmentation_loss_no_path_into_the_assignments():
    _, attached = _forward(["model.mixing.seg_attention_detach=false"])
    _, detached = _forward(["model.mixing.seg_attention_detach=true"])
    assert attached.mixed_assignment.requires_grad and not detached.mixed_assignment.requires_grad
    torch.testing.assert_close(attached.mixed_assignment, detached.mixed_assignment)
    _, grads = _loss_grads(["model.mixing.seg_attention_detach=false"], only_segmentation=True)
    _, grads_detached = _loss_grads(["model.mixing.seg_attention_detach=true"], only_segmentation=True)
    assert _differs(grads, grads_detached)


def test_own_segmentation_temperature_is_the_only_one_the_segmentation_loss_trains():
    _, shared = _loss_grads([], only_segmentation=True)
    assert shared["logit_scale"].abs() > 0
    model, own_out = _forward(["model.segmentation_temperature=own"])
    assert isinstance(model.segmentation_logit_scale, torch.nn.Parameter)
    _, own = _loss_grads(["model.segmentation_temperature=own"], only_segmentation=True)
    assert own["logit_scale"] == 0 and own["segmentation_logit_scale"].abs() > 0
    # Inference reads the contrastive temperature whichever the segmentation loss uses.
    with torch.no_grad():
        model.segmentation_logit_scale.fill_(0.0)
    assert model.temperature() == model.logit_scale.exp() and model.temperature(segmentation=True) == 1.0
    assert build_model("tiny").segmentation_logit_scale is None


def test_running_segment_norm_normalises_mixed_segments_as_inference_does():
    bn_projector = ["model.projection.num_layers=2"]  # GroupViT's projector: the option is about its BatchNorm
    model, out = _forward([*bn_projector, "model.mixing.segment_norm=running"])
    _, batch_out = _forward(bn_projector)
    images, _ = _inputs()
    from mixreorg.model.mixing import sample_mixing_plan

    plan = sample_mixing_plan(BATCH, 64, 4, torch.device("cpu"), torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens = model.image_encoder.forward_mixreorg(images, plan, model.cfg.mixing).mixed.tokens
        model.image_projector.eval()
        expected = model.image_projector(tokens)
    torch.testing.assert_close(out.mixed_segments.detach(), expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(batch_out.mixed_segments.detach(), expected, atol=1e-3)


def test_training_diagnostics_count_segments_and_compare_restored_with_original():
    model, out = _forward([])
    assert set(out.diagnostics) == {"segments_per_image", "restored_cosine"}
    torch.testing.assert_close(out.diagnostics["restored_cosine"],
                               F.cosine_similarity(out.restored, out.image, dim=-1).mean().detach())
    images, texts = _inputs()
    torch.manual_seed(0)
    groupvit = build_model("tiny_groupvit")
    gv_out = groupvit(images, texts)
    encoded = groupvit.image_encoder(images)  # same weights and images: the same soft maps (no gumbel in soft)
    winners = combine_assignments(encoded.assignments, "soft").argmax(-1)
    expected = sum(len(torch.unique(w)) for w in winners) / BATCH
    assert abs(gv_out.diagnostics["segments_per_image"].item() - expected) < 1e-6
    losses = compute_losses(gv_out, load_config("tiny_groupvit").loss)
    assert "segments_per_image" in losses
    total = sum(v for k, v in losses.items() if k.endswith("_loss"))
    torch.testing.assert_close(losses["loss"], total)  # diagnostics are logged, never summed


@pytest.mark.parametrize("overrides, message", [
    (["model.mixing.segment_norm=frozen"], "segment_norm must be one of batch, running"),
    (["model.segmentation_temperature=mine"], "segmentation_temperature must be one of shared, own"),
])
def test_bad_option_values_are_refused(overrides, message):
    with pytest.raises(MixreorgError, match=message):
        build_model("tiny", overrides)
