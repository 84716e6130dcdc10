"""The sclip protocol and PAMR: the settings are the manifests' (and those are SCLIP's released configs), the readout
is SCLIP's post-processing written out pixel by pixel, PAMR is its definition written out pixel by pixel."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from mixreorg.data.benchmarks import get_benchmark_spec
from mixreorg.data.benchmarks.manifest import manifest_dir
from mixreorg.data.templates import FULL_TEMPLATES
from mixreorg.errors import MixreorgError
from mixreorg.evaluation.pamr import RING, SCLIP_DILATIONS, TCL_DILATIONS, pamr, refine_windows
from mixreorg.evaluation.protocols import IMAGES, resolve_protocol
from mixreorg.evaluation.readout import SoftmaxReadout, make_readout
from mixreorg.inference.inputs import read_labels_file

MANIFEST_OF = {"voc": "voc", "voc20": "voc", "context": "context", "context59": "context", "coco-object": "coco",
               "coco-stuff": "coco", "ade20k": "ade20k", "cityscapes": "cityscapes"}
# SCLIP's configs/cfg_*.py (wangf3014/SCLIP): short side, logit scale, prob_thd, area_thd
SCLIP_CONFIGS = {"voc": (336, 65, 0.1, 0.1), "voc20": (336, 40, None, None), "context": (336, 50, 0.1, None),
                 "context59": (336, 40, None, None), "coco-object": (336, 50, 0.1, None),
                 "coco-stuff": (448, 40, None, None), "ade20k": (336, 40, None, None),
                 "cityscapes": (560, 40, None, None)}


@pytest.mark.parametrize("benchmark", list(MANIFEST_OF))
def test_the_protocol_applies_what_the_manifest_says(benchmark):
    entry = yaml.safe_load((manifest_dir() / f"{MANIFEST_OF[benchmark]}.yaml").read_text())["benchmarks"][benchmark]
    written = entry["protocols"]["sclip"]
    spec = get_benchmark_spec(benchmark)
    protocol = resolve_protocol("sclip", benchmark, spec.has_background, 224, settings=spec.protocols["sclip"])
    assert (protocol.short_side, protocol.long_side, protocol.crop, protocol.stride) == (
        written["resize_short_side"], written["resize_max_long_side"], written["slide_crop"], written["slide_stride"])
    assert (protocol.logit_scale, protocol.background_score, protocol.area_threshold) == (
        written["logit_scale"], written.get("prob_thd"), written.get("area_thd"))
    assert protocol.background == ("probability" if entry["has_background"] else "none")
    assert protocol.templates == FULL_TEMPLATES and len(protocol.templates) == 80
    assert (protocol.synonyms, protocol.readout, protocol.pamr) == ("max", "softmax", False)
    # ... and the manifest holds SCLIP's released values
    short, scale, probability, area = SCLIP_CONFIGS[benchmark]
    assert (written["resize_short_side"], written["slide_crop"], written["slide_stride"]) == (short, 224, 112)
    assert (written["logit_scale"], written.get("prob_thd"), written.get("area_thd")) == (scale, probability, area)
    groups = read_labels_file(manifest_dir() / written["class_names"])
    assert len(groups) == entry["num_classes"] == len(spec.classes)
    if benchmark in ("voc", "coco-object"):
        assert "sky" in groups[0] and "wall" in groups[0]  # their background: stuff words
    if benchmark in ("voc", "voc20"):
        assert groups[spec.classes.index("person")][:2] == ("person", "person in shirt")


def test_pamr_and_the_background_score_follow_each_lineage():
    plain = resolve_protocol("unified", "voc", True, 224)
    refined = resolve_protocol("unified", "voc", True, 224, pamr=True)
    assert (plain.background_score, refined.background_score) == (0.5, 0.4)  # TCL: 0.4 with PAMR
    assert (refined.pamr_stage, refined.pamr_dilations, refined.pamr_steps) == ("window", TCL_DILATIONS, 10)
    sclip = resolve_protocol("sclip", IMAGES, False, 224, pamr=True)
    assert (sclip.pamr_stage, sclip.pamr_dilations) == ("image", SCLIP_DILATIONS)
    assert (sclip.short_side, sclip.crop, sclip.stride, sclip.logit_scale) == (336, 224, 112, 40.0)
    small = resolve_protocol("sclip", "synthetic", False, 64)
    assert (small.short_side, small.crop, small.stride) == (96, 64, 32)
    assert resolve_protocol("groupvit", "voc", True, 224).pamr_stage == "none"


def naive_pamr(image, scores, steps, dilations):
    """PAMR pixel by pixel: replicate edges, unbiased sigma over the rings' pixels, softmax over all neighbours."""
    channels, height, width = image.shape
    image, scores = image.double(), scores.double()

    def at(tensor, r, c):
        return tensor[:, min(max(r, 0), height - 1), min(max(c, 0), width - 1)]

    weights = {}
    for r in range(height):
        for c in range(width):
            neighbours = [(r + dr * d, c + dc * d) for d in dilations for dr, dc in RING]
            samples = torch.stack([image[:, r, c]] * len(dilations) + [at(image, *p) for p in neighbours])
            sigma = samples.std(dim=0)
            logits = [-float(((image[:, r, c] - at(image, *p)).abs() / (1e-8 + 0.1 * sigma)).mean())
                      for p in neighbours]
            top = max(logits)
            exps = [math.exp(value - top) for value in logits]
            weights[r, c] = [(p, value / sum(exps)) for p, value in zip(neighbours, exps, strict=True)]
    for _ in range(steps):
        refined = torch.zeros_like(scores)
        for (r, c), pairs in weights.items():
            for p, w in pairs:
                refined[:, r, c] += w * at(scores, *p)
        scores = refined
    return scores


def test_pamr_equals_its_definition_written_out():
    torch.manual_seed(0)
    image, scores = torch.rand(3, 6, 7) * 255, torch.rand(2, 6, 7)
    ours = pamr(image, scores, steps=3, dilations=(1, 2))
    torch.testing.assert_close(ours.double(), naive_pamr(image, scores, 3, (1, 2)), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ours, scores)  # it did refine
    # per-window (TCL's placement): a quarter of the window's size and back; constant scores stay constant
    crops, constant = torch.rand(2, 3, 32, 40), torch.full((2, 3, 32, 40), 0.25)
    torch.testing.assert_close(refine_windows(crops, constant, 2, (1, 2)), constant)


def naive_sclip_decision(cosines, owners, logit_scale, threshold, area):
    """SCLIP's postprocess_result, pixel by pixel: softmax over names, each class its best name, then classes whose
    winning area is at most ``area`` of the foreground are zeroed, argmax, and label 0 where the best is below."""
    queries, height, width = cosines.shape
    classes = max(owners) + 1
    probs = torch.zeros(classes, height, width, dtype=torch.float64)
    for r in range(height):
        for c in range(width):
            row = [logit_scale * float(cosines[q, r, c]) for q in range(queries)]
            top = max(row)
            exps = [math.exp(value - top) for value in row]
            for q, value in enumerate(exps):
                probs[owners[q], r, c] = max(probs[owners[q], r, c], value / sum(exps))
    if area is not None:
        winners = probs.argmax(0)
        counts = [int((winners == k).sum()) for k in range(classes)]
        foreground = sum(counts[1:])
        for k in range(1, classes):
            if not counts[k] > area * foreground:
                probs[k] = 0
    labels = probs.argmax(0)
    labels[probs.max(0).values < threshold] = 0
    return labels


@pytest.mark.parametrize("area", [None, 0.2])
def test_the_softmax_readout_is_sclips_postprocessing(area):
    torch.manual_seed(1)
    owners = [0, 0, 0, 1, 2, 2, 3, 4]
    cosines = torch.rand(len(owners), 9, 11) * 0.2 + torch.linspace(0, 0.05, 11)  # a drift: some labels win more
    readout = SoftmaxReadout(owners, 50.0, "named", threshold=0.35, area_threshold=area)
    ours = readout.label_map(cosines, None, (9, 11))
    assert torch.equal(ours, naive_sclip_decision(cosines, owners, 50.0, 0.35, area))
    assert 0 < int((ours == 0).sum()) < ours.numel()  # the threshold bites somewhere, not everywhere
    if area is not None:  # and the area threshold drops a label that wins without it
        without = SoftmaxReadout(owners, 50.0, "named", threshold=0.35).label_map(cosines, None, (9, 11))
        assert set(without.unique().tolist()) - set(ours.unique().tolist())
    # your own labels with a background threshold: label 0 is added, scored by the threshold alone
    added = SoftmaxReadout([0, 0, 1, 2], 50.0, "added", threshold=0.5)
    probs = added.label_scores(cosines[:4], None, (9, 11))
    assert probs.shape[0] == 4 and torch.equal(added.label_map(cosines[:4], None, (9, 11)), probs.max(0).indices)
    expected = naive_sclip_decision(cosines[:4], [1, 1, 2, 3], 50.0, 0.5, None)  # shifted by the added label
    assert torch.equal(added.label_map(cosines[:4], None, (9, 11)), expected)


def test_readouts_come_from_the_protocol():
    groups = [("sky", "wall"), ("cat",), ("dog", "puppy")]
    voc = resolve_protocol("sclip", "voc", True, 224, settings=get_benchmark_spec("voc").protocols["sclip"])
    readout = make_readout(voc, groups)
    assert readout.owners.tolist() == [0, 0, 1, 2, 2] and readout.num_labels == 3
    assert (readout.threshold, readout.area_threshold, readout.logit_scale) == (0.1, 0.1, 65.0)
    assert type(make_readout(resolve_protocol("groupvit", "voc", True, 224), groups)).__name__ == "WindowReadout"


def test_a_class_file_line_without_names_is_refused_with_its_number(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("# comment\ncat, kitty\n , \ndog\n")
    with pytest.raises(MixreorgError, match=r"classes.txt line 3 \(','\) has an empty name"):
        read_labels_file(path)
    path.write_text("cat, kitty  # a comment\n\ndog\n")
    assert read_labels_file(path) == [("cat", "kitty"), ("dog",)]
