"""The synthetic corpus: exact labels, honest captions, colour that does not give the class away, determinism."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mixreorg.data import synthetic
from mixreorg.data.synthetic import BACKGROUNDS, CLASSES, SHAPES, generate_corpus, render_scene, sample_rng
from mixreorg.data.synthetic.appearance import ANIMALS
from mixreorg.errors import MixreorgError

MIXREORG = Path(sys.executable).with_name("mixreorg")


@pytest.mark.parametrize("size", [64, 96])
def test_label_map_matches_what_was_drawn(size):
    for index in range(40):
        image, labels, caption, meta = render_scene(sample_rng(0, "train", index), size)
        assert image.size == (size, size) and image.mode == "RGB"
        assert labels.shape == (size, size) and labels.dtype == np.uint8
        counts = np.bincount(labels.ravel(), minlength=len(CLASSES))
        expected = np.zeros(len(CLASSES), int)
        for obj in meta["objects"]:
            expected[obj["class_id"]] += obj["area"]
            x0, y0, x1, y1 = obj["bbox"]
            # Objects are big enough to be seen at 8 px patches: 25-55% of the image side (minus occlusion).
            assert max(x1 - x0, y1 - y0) >= 0.2 * size, obj
            assert max(x1 - x0, y1 - y0) <= 0.6 * size, obj
        for background in meta["backgrounds"]:
            expected[background["class_id"]] += background["area"]
        assert (counts == expected).all(), (counts, expected)
        assert counts.sum() == size * size  # every pixel is an object or a background class
        assert 1 <= len(meta["objects"]) <= 3


def test_captions_name_every_object_and_usually_the_background():
    named_background = 0
    phrasings = set()
    for index in range(300):
        _, _, caption, meta = render_scene(sample_rng(1, "train", index), 64)
        for obj in meta["objects"]:
            assert obj["shape"] in caption, (caption, meta)
        named_background += any(b["name"] in caption for b in meta["backgrounds"])
        phrasings.add(caption.split()[0])
    assert named_background >= 0.75 * 300
    assert len(phrasings) >= 5  # varied openings: "a", "photo", "there", "two", "sand", ...


def test_scenes_can_be_narrowed_to_some_shapes_and_patterns():
    narrow = ("circle", "cross")
    drawn = set()
    for index in range(30):
        _, labels, caption, meta = render_scene(sample_rng(0, "train", index), 64, shapes=narrow, patterns=("plain",))
        drawn |= {obj["shape"] for obj in meta["objects"]}
        assert all(obj["pattern"] == "plain" for obj in meta["objects"])
        assert {CLASSES[c] for c in np.unique(labels)} <= set(narrow) | set(BACKGROUNDS)
    assert drawn == set(narrow)
    with pytest.raises(ValueError, match="shapes must come from"):
        render_scene(sample_rng(0, "train", 0), 64, shapes=("cat",))


def test_colour_alone_does_not_identify_shapes():
    """The best colour -> class lookup learned on one split labels object pixels of another barely above chance."""

    def pixels(split, count):
        colours, labels = [], []
        for index in range(count):
            image, label, _, _ = render_scene(sample_rng(2, split, index), 48)
            colours.append(np.asarray(image).reshape(-1, 3) // 32)
            labels.append(label.ravel())
        colours = np.concatenate(colours).astype(int)
        return colours[:, 0] * 64 + colours[:, 1] * 8 + colours[:, 2], np.concatenate(labels)

    train_bins, train_labels = pixels("train", 150)
    test_bins, test_labels = pixels("eval", 60)
    table = np.zeros((512, len(CLASSES)), int)
    np.add.at(table, (train_bins, train_labels), 1)
    predicted = table.argmax(1)[test_bins]
    objects = test_labels < len(SHAPES)
    assert (predicted[objects] == test_labels[objects]).mean() < 0.25
    # and every colour is worn by many different shapes
    shapes_per_colour: dict[str, set] = {}
    for index in range(200):
        for obj in render_scene(sample_rng(3, "train", index), 48)[3]["objects"]:
            shapes_per_colour.setdefault(obj["colour"], set()).add(obj["shape"])
    assert min(len(s) for s in shapes_per_colour.values()) >= 4


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_corpus_layout_and_byte_identical_for_a_seed(tmp_path):
    kwargs = dict(train_size=40, eval_size=5, image_size=64, shard_size=16, world="shapes")
    first = generate_corpus(tmp_path / "a", seed=7, **kwargs)
    generate_corpus(tmp_path / "b", seed=7, **kwargs)
    generate_corpus(tmp_path / "c", seed=8, **kwargs)
    a, b, c = _tree(tmp_path / "a"), _tree(tmp_path / "b"), _tree(tmp_path / "c")
    assert a == b
    assert a["train/00000.tar"] != c["train/00000.tar"]
    assert first["train_shards"] == 3
    assert sorted(k for k in a if k.startswith("train/")) == [
        "train/00000.tar", "train/00001.tar", "train/00002.tar", "train/manifest.json"
    ]
    manifest = json.loads(a["train/manifest.json"])
    assert manifest["total"] == 40
    assert [s["num_samples"] for s in manifest["shards"]] == [16, 16, 8]
    with tarfile.open(tmp_path / "a" / "train" / "00002.tar") as tar:
        names = tar.getnames()
        assert sorted(names[:3]) == ["000000032.jpg", "000000032.json", "000000032.txt"]
        meta = json.loads(tar.extractfile("000000032.json").read())
        caption = tar.extractfile("000000032.txt").read().decode()
    assert meta["caption"] == caption and all(o["shape"] in caption for o in meta["objects"])
    classes = json.loads(a["eval/classes.json"])
    assert classes["classes"] == list(SHAPES + BACKGROUNDS) and classes["has_background"] is False
    assert classes["objects"] == list(SHAPES) and json.loads(a["synth.json"])["world"] == "shapes"
    assert len(classes["palette"]) == len(classes["classes"])
    for index in range(5):
        label = np.asarray(Image.open(tmp_path / "a" / "eval" / "annotations" / f"{index:06d}.png"))
        image = Image.open(tmp_path / "a" / "eval" / "images" / f"{index:06d}.png")
        assert label.shape == (64, 64) and image.size == (64, 64)
        _, drawn, _, _ = render_scene(sample_rng(7, "eval", index), 64)
        assert (label == drawn).all()
    assert not list(tmp_path.glob(".*partial*"))


def test_interrupted_run_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = synthetic.render_scene

    def failing(rng, size):
        calls["n"] += 1
        if calls["n"] == 30:
            raise KeyboardInterrupt
        return real(rng, size)

    monkeypatch.setitem(synthetic.WORLDS, "shapes", replace(synthetic.WORLDS["shapes"], render=failing))
    with pytest.raises(KeyboardInterrupt):
        generate_corpus(tmp_path / "corpus", train_size=40, eval_size=2, image_size=48, shard_size=10, world="shapes")
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_write_over_existing_output(tmp_path):
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(MixreorgError, match="not an empty folder"):
        generate_corpus(out, train_size=4, eval_size=1, image_size=48)
    assert (out / "keep.txt").read_text() == "mine" and len(list(tmp_path.iterdir())) == 1
    with pytest.raises(MixreorgError, match="image-size"):
        generate_corpus(tmp_path / "small", train_size=4, eval_size=1, image_size=8)


def test_console_script_synth_and_clean_error(tmp_path):
    out = tmp_path / "corpus"
    args = [str(MIXREORG), "data", "synth", "--out", str(out), "--train-size", "12", "--eval-size", "2",
            "--image-size", "48", "--shard-size", "5"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote 12 training pairs of the appearance world in 3 shards" in done.stdout
    assert json.loads((out / "eval" / "classes.json").read_text())["objects"] == list(ANIMALS)
    shapes = subprocess.run([*args[:4], str(tmp_path / "shapes"), *args[5:], "--world", "shapes"],
                            capture_output=True, text=True, timeout=120)
    assert shapes.returncode == 0 and "of the shapes world" in shapes.stdout, shapes.stderr
    unknown = subprocess.run([*args[:4], str(tmp_path / "x"), "--world", "moon"], capture_output=True, text=True)
    assert unknown.returncode != 0 and "unknown synthetic world 'moon'" in unknown.stderr
    assert "Traceback" not in unknown.stderr and not (tmp_path / "x").exists()
    again = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0
    assert again.stderr.strip().startswith("error: ") and "Traceback" not in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
