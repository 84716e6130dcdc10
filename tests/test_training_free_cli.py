"""Training-free methods through the shared stages: `mixreorg eval --model ... --method ...` on the benchmark fixtures,
`mixreorg segment`, `Predictor.from_model`, weights through open_clip and a (loopback) Hugging Face Hub cache, and
bad input in one line."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from mixreorg import Predictor
from mixreorg.data.benchmarks import get_benchmark
from mixreorg.errors import MixreorgError
from mixreorg.evaluation.protocols import resolve_protocol
from mixreorg.evaluation.readout import make_readout
from mixreorg.evaluation.segmentation import protocol_labels, protocol_scorer, slide_settings
from mixreorg.evaluation.sliding import segment_images
from mixreorg.training_free.backend import TrainingFreeBackend

sys.path.insert(0, os.path.dirname(__file__))
import benchmark_fixtures as fixtures  # noqa: E402
from cli_runner import run_cli  # noqa: E402
from local_hub import serve_hub  # noqa: E402
from test_eval_cli import SEGMENTATION, reference_miou, save_model  # noqa: E402
from tiny_openclip import RESNET, VIT, build, config, weights_file  # noqa: E402


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for make in (fixtures.make_voc, fixtures.make_context, fixtures.make_coco, fixtures.make_ade20k,
                 fixtures.make_cityscapes):
        make(root)
    fixtures.make_synthetic(root / "synthetic")
    return root


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> str:
    """--model for the tiny ViT: open_clip loads the weights file itself (strict), as it loads a pretrained tag."""
    return f"openclip:{VIT}:{weights_file(tmp_path_factory.mktemp('weights'))}"


def test_eval_runs_every_set_under_the_sclip_protocol_with_the_manifests_settings(data_root, spec, tmp_path,
                                                                                  monkeypatch, capsys):
    out = tmp_path / "naclip.json"
    code, stdout, stderr = run_cli(
        ["eval", "-d", "all", "--model", spec, "--method", "naclip", "--pamr", "--data-root", str(data_root),
         "--device", "cpu", "--out", str(out), "--workers", "0", "--limit", "1"], monkeypatch, capsys)
    assert code == 0, stderr
    report = json.loads(out.read_text())
    assert [r["dataset"] for r in report["results"]] == SEGMENTATION
    assert (report["model"], report["method"], report["protocol"], report["pamr"]) == (spec, "naclip", "sclip", True)
    assert report["checkpoint"] is None and set(report["skipped"]) == {"imagenet"}
    for result in report["results"]:
        settings = result["settings"]
        assert (settings["name"], settings["readout"], settings["pamr_stage"]) == ("sclip", "softmax", "image")
        assert settings["mean"] == pytest.approx([255 * 0.48145466, 255 * 0.4578275, 255 * 0.40821073])
        assert 0 <= result["metrics"]["miou"] <= 100 and result["num_images"] == 1
        if result["dataset"] != "synthetic":
            manifest = get_benchmark(result["dataset"], data_root).protocols["sclip"]
            assert settings["short_side"] == manifest["resize_short_side"]
            assert settings["logit_scale"] == manifest["logit_scale"]
            assert settings["class_names"] == manifest["class_names"]
    by_name = {r["dataset"]: r for r in report["results"]}
    assert by_name["voc"]["settings"]["area_threshold"] == 0.1
    assert by_name["cityscapes"]["settings"]["short_side"] == 560
    assert f"# mixreorg eval: {spec} (naclip)" in out.with_suffix(".md").read_text()
    assert "skipped imagenet" in stderr

    # The reported mIoU is the one of label maps made here, with the same weights, outside the CLI.
    backend = TrainingFreeBackend(build(VIT), "naclip", name=spec)
    benchmark = get_benchmark("voc", data_root)
    protocol = resolve_protocol("sclip", "voc", True, 64, pamr=True, settings=benchmark.protocols["sclip"],
                                mean=backend.mean, std=backend.std)
    image, label, _ = benchmark[0]
    readout = make_readout(protocol, protocol_labels(benchmark.classes, protocol, True))
    scorer = protocol_scorer(backend, benchmark.classes, protocol, True)
    (prediction,) = segment_images([torch.tensor(image)], scorer, slide_settings(protocol, 8), readout)
    expected = reference_miou([label], [prediction.numpy()], len(benchmark.classes))
    assert by_name["voc"]["metrics"]["miou"] == pytest.approx(expected)


def test_checkpoints_and_methods_share_every_protocol_with_pamr(data_root, spec, tmp_path, monkeypatch, capsys):
    """A GroupViT checkpoint under sclip, and a method under unified and groupvit, each with PAMR where that
    protocol's lineage puts it (per window for unified and groupvit)."""
    checkpoint = save_model(tmp_path / "tiny")
    base = ["eval", "-d", "voc", "--data-root", str(data_root), "--device", "cpu", "--workers", "0", "--limit", "1"]
    runs = {"groupvit-sclip": ["-c", str(checkpoint), "--protocol", "sclip"],
            "method-unified": ["--model", spec, "--method", "clearclip", "--protocol", "unified", "--pamr"],
            "method-groupvit": ["--model", spec, "--method", "sclip", "--protocol", "groupvit", "--pamr"],
            "groupvit-unified": ["-c", str(checkpoint), "--protocol", "unified", "--pamr"]}
    found = {}
    for name, extra in runs.items():
        out = tmp_path / f"{name}.json"
        code, _, stderr = run_cli(base + extra + ["--out", str(out)], monkeypatch, capsys)
        assert code == 0, (name, stderr)
        found[name] = json.loads(out.read_text())["results"][0]
        assert 0 <= found[name]["metrics"]["miou"] <= 100
    settings = found["groupvit-sclip"]["settings"]
    assert (settings["readout"], settings["logit_scale"], settings["short_side"]) == ("softmax", 65.0, 336)
    assert settings["class_names"] == "class_names/voc.txt" and len(settings["templates"]) == 80
    for name in ("method-unified", "groupvit-unified"):
        settings = found[name]["settings"]
        assert (settings["background"], settings["background_score"], settings["pamr_stage"]) == (
            "constant", 0.4, "window")
    assert found["method-groupvit"]["settings"]["background_score"] == 0.95  # the manifest's GroupViT threshold


def test_methods_differ_and_predictor_gives_evals_maps(data_root, spec):
    """Every method changes the masks; on the synthetic set (no manifest: the protocol's geometry for the model)
    Predictor with the same labels gives exactly eval's label maps."""
    benchmark = get_benchmark("synthetic", data_root / "synthetic")
    images = [benchmark[i][0] for i in range(len(benchmark))]
    maps = {}
    for method in ("plain", "maskclip", "sclip", "clearclip", "naclip"):
        predictor = Predictor.from_model(spec, method=method, device="cpu")
        assert predictor.protocol().name == "sclip"
        maps[method] = [r.label_map for r in predictor.predict(images, labels=list(benchmark.classes))]
    assert len({np.concatenate([m.ravel() for m in found]).tobytes() for found in maps.values()}) == 5

    backend = TrainingFreeBackend(build(VIT), "clearclip", name=spec)
    protocol = resolve_protocol("sclip", "synthetic", False, 64, mean=backend.mean, std=backend.std)
    readout = make_readout(protocol, protocol_labels(benchmark.classes, protocol, False))
    scorer = protocol_scorer(backend, benchmark.classes, protocol, False)
    expected = segment_images([torch.tensor(image) for image in images], scorer, slide_settings(protocol, 8),
                              readout)
    for ours, theirs in zip(maps["clearclip"], expected, strict=True):
        assert np.array_equal(ours, theirs.numpy())


def test_segment_with_a_method_a_class_file_with_synonyms_and_a_background(spec, tmp_path, monkeypatch, capsys):
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(image)
    classes = tmp_path / "classes.txt"
    classes.write_text("cat, kitty\ndog\n# a comment\nsky, clouds\n")
    code, stdout, stderr = run_cli(
        ["segment", str(image), "--model", spec, "--method", "sclip", "--labels-file", str(classes),
         "--background-threshold", "0.45", "--pamr", "--device", "cpu", "--out", str(tmp_path / "out")],
        monkeypatch, capsys)
    assert code == 0, stderr
    assert "protocol sclip" in stderr and "80 template(s), PAMR" in stderr
    record = json.loads((tmp_path / "out" / "photo.json").read_text())
    assert (record["model"], record["method"], record["protocol"]["name"]) == (spec, "sclip", "sclip")
    assert record["synonyms"] == {"cat": ["kitty"], "sky": ["clouds"]} and record["protocol"]["pamr"]
    mask = np.array(Image.open(tmp_path / "out" / "photo_mask.png"))
    assert mask.shape == (70, 90) and mask.max() <= 3


def test_weights_come_through_the_hub_cache_and_offline_from_it(tmp_path, monkeypatch):
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "lab" / "tiny-clip"
    repo.mkdir(parents=True)
    model = build(VIT, seed=3)
    (repo / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": config(VIT), "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, repo / "open_clip_model.safetensors")
    (tmp_path / "hub" / "lab" / "no-weights").mkdir()
    (tmp_path / "hub" / "lab" / "no-weights" / "open_clip_config.json").write_text(json.dumps({"model_cfg": config()}))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with serve_hub(tmp_path / "hub") as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)  # what HF_ENDPOINT sets when read at import
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.endpoint + "/{repo_id}/resolve/{revision}/"
                            "{filename}")
        backend = TrainingFreeBackend.from_spec("openclip:hf-hub:lab/tiny-clip", "naclip")
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in backend.model.state_dict().items())
        assert backend.mean == (127.5, 127.5, 127.5) and backend.std == (63.75, 63.75, 63.75)
        with pytest.raises(MixreorgError, match="could not load the weights of openclip:hf-hub:lab/no-weights"):
            TrainingFreeBackend.from_spec("openclip:hf-hub:lab/no-weights")  # never random weights in silence
        served = len(hub.requests)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        again = TrainingFreeBackend.from_spec("openclip:hf-hub:lab/tiny-clip", "naclip")
        assert len(hub.requests) == served  # offline: the cache answered
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in again.model.state_dict().items())


def test_bad_input_gives_one_clear_line(data_root, spec, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    rn = f"openclip:{RESNET}:{weights_file(tmp_path, RESNET)}"
    base = ["eval", "-d", "voc", "--data-root", str(data_root), "--device", "cpu", "--out", str(tmp_path / "r.json")]
    cases = [
        (["--model", "openclip:ViT-B-61:openai"], "unknown open_clip model 'ViT-B-61'"),
        (["--model", spec, "--method", "nacl"], "unknown method 'nacl'"),
        (["--model", rn, "--method", "naclip"], "ResNet image tower, not one of open_clip's own ViTs"),
        (["--model", spec, "-c", "group_vit_gcc_yfcc_30e"], "give either --checkpoint"),
        (["-c", "group_vit_gcc_yfcc_30e", "--method", "naclip"], "--method naclip applies to --model"),
        (["--model", "openclip:ViT-B-16:openai"], "not in the Hugging Face cache"),
        (["--model", spec, "--protocol", "sclp"], "unknown protocol 'sclp'"),
    ]
    for extra, message in cases:
        code, _, stderr = run_cli(base + extra, monkeypatch, capsys)
        assert code == 2 and message in stderr and stderr.count("\n") == 1, (extra, stderr)
    assert not (tmp_path / "r.json").exists()

    classes = tmp_path / "classes.txt"
    classes.write_text("cat\n,\n")
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(image)
    code, _, stderr = run_cli(["segment", str(image), "--model", spec, "--labels-file", str(classes), "--out",
                               str(tmp_path / "seg")], monkeypatch, capsys)
    assert code == 2 and "line 2 (',') has an empty name" in stderr and stderr.count("\n") == 1
    assert not (tmp_path / "seg").exists()
