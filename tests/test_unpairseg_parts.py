"""Unpair-Seg's parts against plain reference computations: matching, the multi-scale filter, prompt sampling,
mask pooling, the losses, overlap suppression and entity extraction."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from mixreorg.data.nouns import noun_phrases
from mixreorg.unpairseg.adapter import MultiScaleAdapter, mask_pool
from mixreorg.unpairseg.losses import alignment_loss, mask_iou, mask_losses
from mixreorg.unpairseg.matching import agreeing_pairs, confidence, match
from mixreorg.unpairseg.model import suppress_overlaps
from mixreorg.unpairseg.prompts import BOX, POINT, point_grid, sample_training_prompts


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (6, 6), (1, 4)])
def test_matching_equals_scipys_assignment_and_is_optimal(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(20):
        similarity = rng.normal(size=shape)
        pairs = match(similarity)
        rows, cols = linear_sum_assignment(-similarity)  # the same problem as a cost minimisation
        assert sorted(pairs) == sorted(zip(rows.tolist(), cols.tolist(), strict=True))
        assert len({m for m, _ in pairs}) == len(pairs) == min(shape)  # one-to-one
        best = max(sum(similarity[r, c] for r, c in zip(perm, range(shape[1]), strict=False))
                   for perm in itertools.permutations(range(shape[0]), min(shape))) if shape[0] >= shape[1] else None
        if best is not None:
            assert sum(similarity[m, e] for m, e in pairs) == pytest.approx(best)
    assert match(np.zeros((0, 3))) == []


def test_confidence_is_the_softmax_over_masks():
    similarity = np.array([[0.3, 0.1], [0.2, 0.4], [0.1, 0.0]])
    sure = confidence(similarity, 10.0)
    for entity in range(2):
        weights = np.exp(10.0 * similarity[:, entity])
        np.testing.assert_allclose(sure[:, entity], weights / weights.sum())


def test_the_multi_scale_filter_keeps_exactly_the_pairs_every_scale_agrees_on_confidently():
    rng = np.random.default_rng(0)
    for trial in range(50):
        masks, entities = rng.integers(2, 7), rng.integers(1, 5)
        scales = [rng.normal(size=(masks, entities)) for _ in range(rng.integers(2, 4))]
        if trial % 2:  # make the scales agree more often than chance
            scales = [scales[0] + 0.1 * rng.normal(size=scales[0].shape) for _ in scales]
        threshold = float(rng.uniform(0, 0.6))
        expected = None
        for similarity in scales:
            rows, cols = linear_sum_assignment(similarity, maximize=True)
            weights = np.exp(5.0 * similarity)
            sure = weights / weights.sum(axis=0)
            here = {(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if sure[r, c] >= threshold}
            expected = here if expected is None else expected & here
        assert set(agreeing_pairs(scales, 5.0, threshold)) == expected


def test_a_pair_matched_differently_at_one_scale_is_dropped():
    near = np.array([[0.9, 0.0], [0.0, 0.8], [0.1, 0.1]])
    far = np.array([[0.9, 0.0], [0.1, 0.1], [0.0, 0.8]])  # entity 1 goes to another mask here
    assert agreeing_pairs([near, far], 10.0, 0.0) == [(0, 0)]
    assert agreeing_pairs([near, near], 10.0, 0.0) == [(0, 0), (1, 1)]
    assert agreeing_pairs([near, near], 10.0, 0.9999) == []  # no pair is that sure


def _toy_masks() -> np.ndarray:
    """Three masks on a 16 x 16 mask grid: a big square, a small square inside it, a stripe; the rest uncovered."""
    masks = np.zeros((3, 16, 16), np.float32)
    masks[0, 2:12, 2:12] = 1
    masks[1, 4:7, 4:7] = 1
    masks[2, 14:16, :] = 1
    return masks


def test_training_prompts_target_the_smallest_mask_under_them():
    masks = _toy_masks()
    boxes, kinds, targets = sample_training_prompts(masks, 64, grid=8, box_probability=0.0,
                                                    rng=np.random.default_rng(1))
    assert boxes.shape == (64, 4) and kinds.tolist() == [POINT] * 64 and targets.shape == (64,)
    cell = 64 / 8
    for index, (x, y, x2, y2) in enumerate(boxes):
        assert (x, y) == (x2, y2)
        row, col = int(y // 4), int(x // 4)
        covering = [m for m in range(3) if masks[m, row, col] > 0.5]
        assert covering, "every point lies on a mask"
        assert targets[index] == min(covering, key=lambda m: masks[m].sum())
        in_cell = index // 8 * cell <= y < (index // 8 + 1) * cell and index % 8 * cell <= x < (index % 8 + 1) * cell
        if in_cell:  # points keep their cell unless it had no mask and they moved into one
            continue
        cell_rows = slice(int(index // 8 * cell // 4), int((index // 8 + 1) * cell // 4))
        cell_cols = slice(int(index % 8 * cell // 4), int((index % 8 + 1) * cell // 4))
        assert (masks[:, cell_rows, cell_cols] <= 0.5).any(axis=0).any()


def test_training_boxes_are_their_targets_bounding_boxes_and_sampling_is_seeded():
    masks = _toy_masks()
    boxes, kinds, targets = sample_training_prompts(masks, 64, 6, 1.0, np.random.default_rng(2))
    assert (kinds == BOX).all()
    expected = {0: [8, 8, 48, 48], 1: [16, 16, 28, 28], 2: [0, 56, 64, 64]}
    for box, target in zip(boxes, targets, strict=True):
        assert box.tolist() == expected[int(target)]
    again = sample_training_prompts(masks, 64, 6, 1.0, np.random.default_rng(2))
    assert all(np.array_equal(a, b) for a, b in zip((boxes, kinds, targets), again, strict=True))
    _, mixed, _ = sample_training_prompts(masks, 64, 10, 0.5, np.random.default_rng(3))
    assert 20 < int((mixed == BOX).sum()) < 80


def test_point_grid_is_the_cell_centres():
    grid = point_grid(2, 40, 80)
    assert grid.tolist() == [[20.0, 10.0], [60.0, 10.0], [20.0, 30.0], [60.0, 30.0]]


def test_mask_pooling_equals_a_naive_loop():
    torch.manual_seed(0)
    features = torch.randn(2, 5, 4, 6)
    masks = (torch.rand(2, 3, 8, 12) > 0.6).float()
    masks[1, 2] = 0
    masks[1, 2, 0, 0] = 1  # a mask smaller than one feature cell still gets its cell
    pooled = mask_pool(features, masks)
    for b, q in itertools.product(range(2), range(3)):
        total, weight = torch.zeros(5), 0.0
        for y, x in itertools.product(range(4), range(6)):
            share = masks[b, q, 2 * y:2 * y + 2, 2 * x:2 * x + 2].mean()  # the cell's covered fraction
            total += share * features[b, :, y, x]
            weight += float(share)
        torch.testing.assert_close(pooled[b, q], total / weight)


def test_mask_losses_equal_naive_sums():
    torch.manual_seed(1)
    logits = torch.randn(4, 6, 5)
    targets = (torch.rand(4, 6, 5) > 0.5).float()
    targets[3] = 0
    iou_logits = torch.randn(4)
    terms = mask_losses(logits, targets, iou_logits)
    bce = dice = iou_error = 0.0
    for n in range(4):
        pixels = [(float(logits[n].flatten()[i]), float(targets[n].flatten()[i])) for i in range(30)]
        probs = [1 / (1 + np.exp(-z)) for z, _ in pixels]
        bce += sum(-(t * np.log(p) + (1 - t) * np.log(1 - p)) for p, (_, t) in zip(probs, pixels, strict=True)) / 30
        dice += 1 - (2 * sum(p * t for p, (_, t) in zip(probs, pixels, strict=True)) + 1) / (
            sum(probs) + sum(t for _, t in pixels) + 1)
        predicted = {i for i, (z, _) in enumerate(pixels) if z > 0}
        true = {i for i, (_, t) in enumerate(pixels) if t > 0.5}
        iou = len(predicted & true) / len(predicted | true) if predicted | true else 1.0
        iou_error += (1 / (1 + np.exp(-float(iou_logits[n]))) - iou) ** 2
    assert float(terms["mask"]) == pytest.approx(bce / 4, rel=1e-5)
    assert float(terms["dice"]) == pytest.approx(dice / 4, rel=1e-5)
    assert float(terms["iou"]) == pytest.approx(iou_error / 4, rel=1e-5)
    assert mask_iou(torch.full((1, 2, 2), -1.0), torch.zeros(1, 2, 2)).item() == 1.0  # two empty masks agree


def test_alignment_loss_is_cross_entropy_over_the_batch_entities():
    torch.manual_seed(2)
    regions, entities = F.normalize(torch.randn(5, 8), dim=-1), F.normalize(torch.randn(3, 8), dim=-1)
    index = torch.tensor([0, 2, 1, 2, 0])
    loss = alignment_loss(regions, index, entities, 20.0)
    naive = 0.0
    for k in range(5):
        logits = [20.0 * float(regions[k] @ entities[e]) for e in range(3)]
        naive += -(logits[int(index[k])] - np.log(sum(np.exp(z) for z in logits)))
    assert float(loss) == pytest.approx(naive / 5, rel=1e-5)


def test_overlap_suppression_keeps_the_best_of_each_overlapping_group():
    masks = torch.zeros(4, 10, 10, dtype=torch.bool)
    masks[0, :5] = True  # IoU with 1 is 40/60 = 0.67
    masks[1, 1:7] = True
    masks[2, 8:] = True
    masks[3, 0:3] = True  # IoU with 0 is 0.6, with 1 is 20/70 = 0.29
    scores = torch.tensor([0.8, 0.9, 0.7, 0.75])
    assert suppress_overlaps(masks, scores, 0.4).tolist() == [1, 3, 2]
    assert suppress_overlaps(masks, scores, 0.7).tolist() == [1, 0, 3, 2]
    assert suppress_overlaps(masks, scores, 0.0).tolist() == [1, 2]


def test_the_adapter_starts_as_the_identity_on_the_dense_features():
    torch.manual_seed(3)
    adapter = MultiScaleAdapter([4, 6, 8, 10], dense_dim=12, hidden=8)
    levels = [torch.randn(1, c, 16 // 2**i, 16 // 2**i) for i, c in enumerate([4, 6, 8, 10])]
    dense = torch.randn(1, 12, 2, 2)
    assert torch.equal(adapter(levels, dense), dense)
    adapter.out.bias.data.fill_(0.5)
    assert not torch.equal(adapter(levels, dense), dense)


def test_entities_are_the_captions_noun_runs():
    assert noun_phrases("a photo of a young zebra and two tigers lying on the grass under a blue sky") == \
        ["zebra", "tigers", "grass", "sky"]
    assert noun_phrases("a red star in front of a brick wall, a brick wall again") == ["star", "brick wall"]
    assert noun_phrases("") == []
