"""The Python API and the shared protocol: segment runs what eval runs, batches, every image type, probabilities,
precision, overrides recorded, results that save and draw themselves."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from mixreorg.checkpoint import save_pretrained
from mixreorg.config import load_config
from mixreorg.data.benchmarks import get_benchmark
from mixreorg.data.synthetic import generate_corpus
from mixreorg.errors import MixreorgError
from mixreorg.evaluation.protocols import IMAGES, resolve_protocol
from mixreorg.evaluation.segmentation import protocol_scorer, slide_settings
from mixreorg.evaluation.sliding import segment_images
from mixreorg.model import build_model

sys.path.insert(0, os.path.dirname(__file__))
from cli_runner import run_cli  # noqa: E402

LABELS = ["cat", "dog", "sky"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(load_config("tiny")).eval()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "synth"
    generate_corpus(root, train_size=1, eval_size=4, image_size=96, shard_size=1)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_pretrained(model, load_config("tiny"), folder)
    return folder


def test_predictor_is_importable_from_the_package():
    import mixreorg

    assert mixreorg.Predictor.__name__ == "Predictor"


def test_images_geometry_is_the_eval_geometry_of_the_models_images():
    tiny = resolve_protocol("groupvit", IMAGES, False, 64)
    synthetic = resolve_protocol("groupvit", "synthetic", False, 64)
    assert (tiny.short_side, tiny.long_side, tiny.crop, tiny.stride) == (128, 512, 64, 32)
    assert (tiny.short_side, tiny.long_side, tiny.crop, tiny.stride) == (
        synthetic.short_side, synthetic.long_side, synthetic.crop, synthetic.stride)
    release = resolve_protocol("groupvit", IMAGES, False, 224)
    voc = resolve_protocol("groupvit", "voc", False, 224)
    assert (release.short_side, release.long_side, release.crop, release.stride) == (448, 2048, 448, 224)
    assert release.as_dict() | {"dataset": "voc"} == voc.as_dict()
    custom = resolve_protocol("unified", IMAGES, True, 224, short_side=224, crop=160, background_score=0.3,
                              templates=["art of a {}."])
    assert (custom.short_side, custom.long_side, custom.crop, custom.stride) == (224, 1024, 160, 80)
    assert custom.templates == ("art of a {}.",) and (custom.background, custom.background_score) == ("constant", 0.3)
    for bad, message in [(dict(crop=0), "--crop must be a positive"), (dict(crop=64, stride=65), "larger than"),
                         (dict(templates=["no slot"]), "exactly one {}"), (dict(templates=["{} and {}"]), "exactly")]:
        with pytest.raises(MixreorgError, match=message):
            resolve_protocol("groupvit", IMAGES, False, 64, **bad)


def test_predictor_defaults_give_exactly_evals_label_maps(model, corpus):
    """The same model, images and classes: Predictor.predict with no settings == mixreorg eval's predictions."""
    from mixreorg import Predictor

    benchmark = get_benchmark("synthetic", corpus)
    protocol = resolve_protocol("groupvit", "synthetic", benchmark.has_background, model.cfg.vision.image_size)
    scorer = protocol_scorer(model, list(benchmark.classes), protocol, benchmark.has_background)
    paths = [sample.image for sample in benchmark.samples]
    images = [torch.from_numpy(np.array(Image.open(path).convert("RGB"))) for path in paths]
    expected = segment_images(images, scorer, slide_settings(protocol, 8))
    predictor = Predictor(model, device="cpu")
    results = predictor.predict(paths, labels=list(benchmark.classes))
    assert len(results) == len(paths) and results[0].source == str(paths[0].resolve())
    for result, reference in zip(results, expected, strict=True):
        assert np.array_equal(result.label_map, reference.numpy())
    settings = results[0].settings["protocol"]
    assert {k: v for k, v in settings.items() if k != "dataset"} == {
        k: v for k, v in protocol.as_dict().items() if k != "dataset"}


def test_every_image_type_and_batches_give_the_same_maps(model):
    from mixreorg import Predictor

    predictor = Predictor(model, device="cpu", batch_size=2)
    rgb = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    reference = predictor.predict(rgb, labels=LABELS)
    assert reference.label_map.shape == (40, 56) and reference.labels == LABELS
    forms = [Image.fromarray(rgb), rgb.astype(np.float32) / 255, torch.from_numpy(rgb).permute(2, 0, 1),
             torch.from_numpy(rgb).permute(2, 0, 1).float() / 255, np.dstack([rgb, np.full((40, 56), 255, np.uint8)])]
    other = np.random.default_rng(1).integers(0, 256, (70, 30, 3), dtype=np.uint8)
    results = predictor.predict([*forms, other])  # a list: one result per image, windows batched across images
    assert isinstance(results, list) and len(results) == len(forms) + 1
    for result in results[:-1]:
        assert np.array_equal(result.label_map, reference.label_map)
    alone = predictor.predict(other)
    assert results[-1].label_map.shape == (70, 30)
    assert (results[-1].label_map == alone.label_map).mean() > 0.99  # batch composition may move the last bit
    batch = predictor.predict(torch.from_numpy(np.stack([rgb, rgb])).permute(0, 3, 1, 2))  # [B, 3, H, W]
    assert len(batch) == 2 and np.array_equal(batch[1].label_map, reference.label_map)
    for bad, message in [(np.zeros((4, 4, 3), dtype=np.int32), "uint8"), (rgb.astype(np.float32), "0-1"),
                         (np.zeros((4, 4, 5), dtype=np.uint8), "shape"), (torch.zeros(2, 5, 4, 4)[0], "tensor"),
                         (3.5, "cannot read an image")]:
        with pytest.raises(MixreorgError, match=message):
            predictor.predict(bad)


def test_probabilities_scores_and_result_files(model, tmp_path):
    from mixreorg import Predictor

    predictor = Predictor(model, device="cpu")
    rgb = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    result = predictor.predict(rgb, labels=LABELS, return_probs=True)
    assert result.probs.shape == (3, 48, 64) and result.probs.dtype == np.float32
    assert np.array_equal(result.probs.argmax(axis=0), result.label_map)
    assert result.probs.min() >= 0 and result.probs.max() <= 1
    # The ranking score is the max over the working-resolution probabilities, which the resize cannot exceed.
    assert np.all(result.probs.max(axis=(1, 2)) <= result.label_scores + 1e-6)
    assert [name for name, _ in result.ranking()] == [LABELS[i] for i in np.argsort(-result.label_scores)]
    assert predictor.predict(rgb).probs is None
    written = result.save(tmp_path, stem="pic")
    assert [p.name for p in written] == ["pic_mask.png", "pic_overlay.png", "pic.json"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "pic_mask.png")), result.label_map)
    assert result.overlay().size == Image.open(tmp_path / "pic_overlay.png").size
    record = json.loads((tmp_path / "pic.json").read_text())
    assert list(record["label_scores"]) == LABELS
    assert {s["label"] for s in record["segments"]} == set(result.present)


def test_bf16_runs_on_cpu_and_stays_close_to_fp32(model):
    from mixreorg import Predictor

    rgb = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = Predictor(model, device="cpu").predict(rgb, labels=LABELS, return_probs=True)
    half = Predictor(model, device="cpu", precision="bf16").predict(rgb, labels=LABELS, return_probs=True)
    assert half.settings["precision"] == "bf16" and half.probs.dtype == np.float32
    assert np.abs(half.probs - full.probs).max() < 0.05
    assert not np.array_equal(half.probs, full.probs)  # it did run in bf16
    with pytest.raises(MixreorgError, match="fp16 needs a GPU"):
        Predictor(model, device="cpu", precision="fp16")
    with pytest.raises(MixreorgError, match="unknown precision"):
        Predictor(model, device="cpu", precision="int8")


def test_cli_records_overrides_and_refuses_bad_ones(checkpoint, tmp_path, monkeypatch, capsys):
    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(image)
    templates = tmp_path / "templates.txt"
    templates.write_text("# mine\na photo of a {}.\n\nart of the {}.\n")
    monkeypatch.chdir(tmp_path)
    args = ["segment", "in.png", "-l", "cat,dog", "-c", str(checkpoint), "--out", "out", "--format", "json"]
    code, _, stderr = run_cli(args + ["--size", "96", "--crop", "48", "--stride", "16", "--templates",
                                      str(templates), "--precision", "bf16"], monkeypatch, capsys)
    assert code == 0, stderr
    record = json.loads((tmp_path / "out" / "in.json").read_text())
    assert record["image"] == str(image.resolve())  # absolute, though given relative
    protocol = record["protocol"]
    assert (protocol["short_side"], protocol["crop"], protocol["stride"]) == (96, 48, 16)
    assert protocol["templates"] == ["a photo of a {}.", "art of the {}."] and record["precision"] == "bf16"
    assert record["checkpoint"] == str(checkpoint)
    (tmp_path / "bad.txt").write_text("a photo of a cat\n")
    for extra, message in [(["--stride", "100"], "larger than the window"), (["--crop", "-1"], "positive"),
                           (["--templates", "bad.txt"], "exactly one {}"), (["--templates", "none.txt"], "cannot read"),
                           (["--precision", "fp8"], "unknown precision"), (["--protocol", "mine"], "unknown protocol")]:
        code, _, stderr = run_cli(args + extra, monkeypatch, capsys)
        assert code == 2 and message in stderr and stderr.startswith("error: "), (extra, stderr)
        assert stderr.count("\n") == 1 and "Traceback" not in stderr


def test_synonyms_are_averaged_into_one_label(model):
    from mixreorg import Predictor
    from mixreorg.evaluation.zero_shot import embed_classes
    from mixreorg.inference.inputs import label_groups

    predictor = Predictor(model, device="cpu")
    predictor.set_labels(["sky", ("person", "person in shirt", "man")])
    assert predictor.labels == ["sky", "person"]
    names = embed_classes(model, ["person", "person in shirt", "man"], predictor.templates)
    expected = torch.nn.functional.normalize(names.mean(dim=0), dim=0)
    torch.testing.assert_close(predictor._embeddings[1], expected)
    torch.testing.assert_close(predictor._embeddings[0], embed_classes(model, ["sky"], predictor.templates)[0])
    result = predictor.predict(np.zeros((32, 32, 3), dtype=np.uint8))
    assert result.labels == ["sky", "person"] and result.settings["synonyms"] == {"person": ["person in shirt", "man"]}
    with pytest.raises(MixreorgError, match="given twice"):
        label_groups(["man", ("person", "Man")])
    with pytest.raises(MixreorgError, match="'background' is added"):
        label_groups([("sky", "background")], reserve_background=True)
