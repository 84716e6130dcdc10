"""`mixreorg segment` and the Predictor: any PIL image, outputs that read back, bad input, named downloads."""

from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from mixreorg.checkpoint import load_model, save_pretrained
from mixreorg.config import load_config
from mixreorg.errors import MixreorgError
from mixreorg.inference.checkpoints import resolve_checkpoint
from mixreorg.inference.inputs import expand_inputs, load_image, parse_labels
from mixreorg.inference.predictor import Predictor, load_for_inference
from mixreorg.model import build_model, tokenize

sys.path.insert(0, os.path.dirname(__file__))
from cli_runner import run_cli
from local_http import serve  # noqa: E402

LABELS = "cat,dog,sky"





@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    config = load_config("tiny")
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_pretrained(build_model(config), config, folder)
    return folder


@pytest.fixture(scope="module")
def predictor(checkpoint):
    torch.set_num_threads(1)
    return Predictor.from_checkpoint(checkpoint, device="cpu", size=64, crop=64, stride=32)




def write_inputs(folder) -> dict[str, tuple[int, int]]:
    """One file per awkward kind of image; value = the upright (height, width) the outputs must have."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "plain.jpg")
    Image.fromarray(rgb[..., 0]).save(folder / "grey.png")
    rgba = np.dstack([rgb, rng.integers(0, 256, (40, 60), dtype=np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "print.jpg")
    deep = (rng.integers(0, 65536, (40, 60))).astype(np.uint16)
    Image.fromarray(deep).save(folder / "deep16.png")  # mode I;16
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: the camera was turned 90 degrees, viewers rotate it upright
    rotated.save(folder / "phone.jpg", exif=exif.tobytes())
    return {"plain": (40, 60), "grey": (40, 60), "alpha": (40, 60), "print": (40, 60), "deep16": (40, 60),
            "phone": (60, 40)}


def test_loading_without_random_init_gives_the_same_weights(checkpoint):
    draws = {name: getattr(torch.nn.init, name) for name in ("normal_", "trunc_normal_", "kaiming_uniform_")}
    fast, _ = load_for_inference(checkpoint)
    plain, _ = load_model(checkpoint)
    assert fast.state_dict().keys() == plain.state_dict().keys()
    for key, value in plain.state_dict().items():
        assert torch.equal(fast.state_dict()[key], value), key
    tokens = tokenize(["a photo of a cat."], fast.context_length)  # also uses the causal-mask buffer
    with torch.no_grad():
        assert torch.equal(fast.encode_text(tokens), plain.eval().encode_text(tokens))
    assert all(getattr(torch.nn.init, name) is fn for name, fn in draws.items())  # restored afterwards


def test_load_image_handles_every_mode(tmp_path):
    sizes = write_inputs(tmp_path)
    for stem, size in sizes.items():
        path = next(tmp_path.glob(f"{stem}.*"))
        image = load_image(path)
        assert image.dtype == np.uint8 and image.shape == (*size, 3), stem
    deep = load_image(tmp_path / "deep16.png")
    raw = np.asarray(Image.open(tmp_path / "deep16.png"), dtype=np.float64)
    np.testing.assert_allclose(deep[..., 0], np.round(raw / 257), atol=1)  # 16 bits scaled, not clipped
    alpha = np.asarray(Image.open(tmp_path / "alpha.png"))
    transparent = alpha[..., 3] == 0
    if transparent.any():  # fully transparent pixels show the white background
        assert (load_image(tmp_path / "alpha.png")[transparent] == 255).all()
    phone = load_image(tmp_path / "phone.jpg")
    plain = load_image(tmp_path / "plain.jpg")
    assert np.abs(phone.astype(int) - np.rot90(plain, k=-1).astype(int)).mean() < 12  # rotated, not just resized
    with pytest.raises(MixreorgError, match="not a readable image"):
        (tmp_path / "fake.jpg").write_text("hello")
        load_image(tmp_path / "fake.jpg")


def test_predictor_result_and_labels(predictor):
    image = np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    result = predictor.predict(image, labels=LABELS)
    assert result.labels == ["cat", "dog", "sky"] and result.label_map.shape == (50, 70)
    assert result.label_map.max() < 3 and sum(result.pixel_share) == pytest.approx(1.0)
    masks = result.masks()
    assert sum(mask.sum() for mask in masks.values()) == 50 * 70
    with_bg = predictor.predict(image, background_threshold=0.0)  # 0: nothing is background
    assert with_bg.labels[0] == "background" and (with_bg.label_map > 0).all()
    all_bg = predictor.predict(image, background_threshold=1.0)
    assert all_bg.label_map.max() <= 3
    with pytest.raises(MixreorgError, match="twice"):
        parse_labels("cat, dog, Cat")
    with pytest.raises(MixreorgError, match="empty"):
        parse_labels("cat,,dog")
    with pytest.raises(MixreorgError, match="'background' is added"):
        predictor.predict(image, labels="background,cat", background_threshold=0.5)


def test_large_image_is_segmented_in_pieces(predictor):
    """A long, large image: the working copy is slid over, and the full-size map is built in row chunks."""
    image = np.random.default_rng(2).integers(0, 256, (600, 2400, 3), dtype=np.uint8)
    result = predictor.predict(image, labels=LABELS)
    assert result.label_map.shape == (600, 2400)


def test_cli_segments_every_kind_of_image_and_reports_a_bad_file(tmp_path, checkpoint, monkeypatch, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    sizes = write_inputs(inputs)
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(
        ["segment", str(inputs), "--labels", LABELS, "--checkpoint", str(checkpoint), "--out", str(out),
         "--size", "64", "--device", "cpu", "--background-threshold", "0.2"], monkeypatch, capsys)
    assert code == 1, stderr
    assert "broken.png" in stderr and "1 of 7 inputs" in stderr and "Traceback" not in stderr
    assert len(stdout.strip().splitlines()) == 6
    for stem, (height, width) in sizes.items():
        mask = Image.open(out / f"{stem}_mask.png")
        assert mask.mode == "P" and mask.size == (width, height)
        overlay = Image.open(out / f"{stem}_overlay.png")
        assert overlay.size[1] >= height and overlay.size[0] > width  # image plus legend panel
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["labels"] == ["background", "cat", "dog", "sky"]
        assert list(record["label_scores"]) == record["labels"]  # every label ranked, present or not
        assert all(0 <= score <= 1 for score in record["label_scores"].values())
        assert record["image"] == str(next(inputs.glob(f"{stem}.*")).resolve())
        assert record["protocol"]["short_side"] == 64 and record["protocol"]["background_score"] == 0.2
        from pycocotools import mask as mask_utils

        indices = np.asarray(mask)
        present = {record["labels"][i] for i in np.unique(indices)}
        assert {segment["label"] for segment in record["segments"]} == present  # no empty masks
        for segment in record["segments"]:
            rle = dict(segment["rle"], counts=segment["rle"]["counts"].encode())
            decoded = mask_utils.decode(rle).astype(bool)
            assert np.array_equal(decoded, indices == segment["index"])
            assert segment["pixel_share"] == pytest.approx(decoded.mean())
    assert not (out / "broken_mask.png").exists()


def test_cli_leaves_no_empty_output_folder_when_every_input_fails(tmp_path, checkpoint, monkeypatch, capsys):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    code, _, stderr = run_cli(["segment", str(tmp_path / "broken.png"), "--labels", LABELS, "-c", str(checkpoint),
                               "--out", str(out), "--size", "64", "--device", "cpu"], monkeypatch, capsys)
    assert code == 1 and "1 of 1 inputs" in stderr
    assert not out.exists()


def test_cli_format_choice_and_duplicate_stems(tmp_path, checkpoint, monkeypatch, capsys):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        Image.fromarray(np.full((20, 30, 3), 90, dtype=np.uint8)).save(tmp_path / sub / "same.png")
    out = tmp_path / "out"
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("# my labels\ncat\ndog, puppy\n\n")  # puppy: a synonym of dog
    code, stdout, _ = run_cli(
        ["segment", str(tmp_path / "*" / "same.png"), "--labels-file", str(labels_file), "-c", str(checkpoint),
         "--out", str(out), "--size", "64", "--format", "json,png"], monkeypatch, capsys)
    assert code == 0
    # png is the old name of mask
    assert sorted(p.name for p in out.iterdir()) == ["same-2.json", "same-2_mask.png", "same.json", "same_mask.png"]
    record = json.loads((out / "same.json").read_text())
    assert record["labels"] == ["cat", "dog"] and record["synonyms"] == {"dog": ["puppy"]}


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--labels", ""], "no labels given"),
        (["--labels", "cat,dog,cat"], "given twice"),
        (["--labels", "cat, ,dog"], "empty entries"),
        (["--labels", "cat", "--checkpoint", "no_such_release"], "neither an existing file or folder nor a known name"),
        (["--labels", "cat", "--format", "gif"], "unknown output format"),
        (["--labels", "cat,background", "--background-threshold", "0.5"], "'background' is added"),
        (["--labels", "cat", "--background-threshold", "1.5"], "outside 0-1"),
    ],
)
def test_cli_bad_input_gives_one_clear_line(tmp_path, checkpoint, monkeypatch, capsys, extra, message):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image)
    args = ["segment", str(image), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")]
    code, _, stderr = run_cli(args + extra, monkeypatch, capsys)
    assert code == 2 and message in stderr
    assert stderr.count("\n") == 1 and stderr.startswith("error: ")


def test_cli_unwritable_output_folder(tmp_path, checkpoint, monkeypatch, capsys):
    if os.geteuid() == 0:
        blocker = tmp_path / "file"  # root ignores permissions: use a path whose parent is a file instead
        blocker.write_text("")
        out = blocker / "out"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        out = locked / "out"
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image)
    code, _, stderr = run_cli(["segment", str(image), "--labels", "cat", "-c", str(checkpoint), "--out", str(out)],
                              monkeypatch, capsys)
    assert code == 2 and "cannot write to the output folder" in stderr and stderr.count("\n") == 1


def test_expand_inputs_reports_what_matched_nothing(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    files, problems = expand_inputs([str(tmp_path), str(tmp_path / "missing.png"), str(tmp_path / "*.gif")])
    assert files == [tmp_path / "a.png"]  # folders contribute their image files only
    assert len(problems) == 2


def write_official_release(model, path) -> None:
    """Our weights under NVlabs' names, in their .pth layout (Conv1d projector weights, a plain config)."""
    state = {}
    for key, value in model.state_dict().items():
        key = key.replace("image_encoder.", "img_encoder.", 1).replace("image_projector.", "img_projector.", 1)
        if key.startswith(("img_projector.", "text_projector.")) and key.endswith(("0.weight", "linear_out.weight")):
            value = value[..., None] if value.ndim == 2 else value
        state[key] = value
    torch.save({"model": state, "epoch": 30, "config": {"model": {"img_encoder": {"num_heads": [3, 3, 3]}}}}, path)


def test_named_checkpoint_is_downloaded_verified_and_reused(tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    model = build_model(load_config("tiny_groupvit")).eval()  # the official releases are GroupViTs
    served = tmp_path / "served"
    served.mkdir()
    release = served / "tiny_release-0000.pth"
    write_official_release(model, release)
    digest = hashlib.sha256(release.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    with serve(served) as server:
        manifest = tmp_path / "checkpoints.yaml"
        manifest.write_text(
            f"tiny_release:\n  file: tiny_release-0000.pth\n  urls: ['{server.url('missing.pth')}', "
            f"'{server.url('tiny_release-0000.pth')}']\n  sha256_prefix: {digest[:8]}\n"
            f"bad_release:\n  file: bad-0000.pth\n  urls: ['{server.url('tiny_release-0000.pth')}']\n"
            f"  sha256_prefix: deadbeef\n"
        )
        path = resolve_checkpoint("tiny_release", cache_dir=cache, manifest=manifest)
        assert path == cache / "checkpoints" / "tiny_release-0000.pth" and path.read_bytes() == release.read_bytes()
        assert [r.status for r in server.requests] == [404, 200]  # the first URL failed, the mirror served it
        loaded, _ = load_model(path)
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key

        # A second run (here through the CLI, with the list and cache from the environment) downloads nothing.
        monkeypatch.setenv("MIXREORG_CHECKPOINTS_MANIFEST", str(manifest))
        monkeypatch.setenv("MIXREORG_CACHE", str(cache))
        image = tmp_path / "x.png"
        Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(image)
        code, stdout, stderr = run_cli(["segment", str(image), "--labels", "cat,dog", "-c", "tiny_release",
                                        "--out", str(tmp_path / "out"), "--size", "64"], monkeypatch, capsys)
        assert code == 0, stderr
        assert len(server.requests) == 2

        with pytest.raises(MixreorgError, match="sha256"):
            resolve_checkpoint("bad_release", cache_dir=cache, manifest=manifest)
        assert sorted(p.name for p in (cache / "checkpoints").iterdir()) == ["tiny_release-0000.pth"]
