"""Dense zero-shot logits: the official GroupViT recipe's structure and the background rule."""

from __future__ import annotations

import pytest
import torch

from mixreorg.errors import MixreorgError
from mixreorg.inference import class_embeddings, dense_logits, with_background
from mixreorg.model.mixreorg import combine_assignments


def test_class_embeddings_average_templates_before_normalising(tiny_model):
    tiny_model.eval()
    templates = ["a photo of a {}.", "art of the {}."]
    emb = class_embeddings(tiny_model, ["cat", "dog"], templates)
    assert emb.shape == (2, 64)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    from mixreorg.model import tokenize

    with torch.no_grad():
        raw = tiny_model.encode_text(tokenize(["a photo of a cat.", "art of the cat."], 32))
    torch.testing.assert_close(emb[0], torch.nn.functional.normalize(raw.mean(0), dim=0))
    with pytest.raises(MixreorgError, match="non-empty"):
        class_embeddings(tiny_model, ["cat", " "])


def test_groupvit_mode_gives_each_pixel_its_strongest_segment(tiny_model):
    tiny_model.eval()
    classes = class_embeddings(tiny_model, ["cat", "dog", "sky", "sea", "car", "road", "tree"])
    images = torch.randn(2, 3, 64, 80)
    out = dense_logits(tiny_model, images, classes, mode="groupvit", top_k=5)
    assert out.logits.shape == (2, 7, 64, 80) and out.attention.shape == (2, 8, 64, 80)
    winner = out.attention.argmax(dim=1)  # [B, H, W]
    expected = torch.gather(out.segment_logits, 1, winner.flatten(1).unsqueeze(-1).expand(-1, -1, 7))
    torch.testing.assert_close(out.logits.flatten(2).transpose(1, 2), expected)
    # Only the image's top-5 classes can score; the other two are exactly zero everywhere.
    assert int((out.segment_logits.sum(dim=1) == 0).sum(dim=1).min()) == 2


def test_soft_mode_is_the_attention_weighted_similarity(tiny_model):
    tiny_model.eval()
    classes = class_embeddings(tiny_model, ["cat", "dog"])
    images = torch.randn(1, 3, 64, 64)
    out = dense_logits(tiny_model, images, classes, mode="soft")
    with torch.no_grad():
        enc = tiny_model.image_encoder(images)
    patch_maps = combine_assignments(enc.assignments)  # [1, 64, 8] at 8x8 patches
    # At a patch centre of an 8x upsampling, bilinear interpolation blends neighbours; check the mean instead.
    expected_mean = (patch_maps @ out.segment_logits).mean(dim=1)
    torch.testing.assert_close(out.logits.mean(dim=(2, 3)), expected_mean, atol=1e-4, rtol=1e-4)


def test_background_is_where_no_class_reaches_the_threshold():
    logits = torch.tensor([[[[0.9, 0.2]], [[0.05, 0.3]]]])  # [1, 2 classes, 1, 2]
    scores = torch.tensor([[[0.9, 0.3]]])
    out = with_background(logits, threshold=0.5, segment_scores=scores)
    assert out[0, 0].tolist() == [[0.0, 1.0]]
    # A threshold above the best score is capped by it, so the best segment stays foreground.
    capped = with_background(logits, threshold=0.99, segment_scores=scores)
    assert capped[0, 0].tolist() == [[0.0, 1.0]]
