"""Benchmark loaders on tiny fixtures of each real layout, and `data fetch` for benchmarks end to end (offline)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from benchmark_fixtures import (
    IMAGENET_WNIDS,
    SYNTHETIC_CLASSES,
    make_ade20k,
    make_cityscapes,
    make_coco,
    make_context,
    make_imagenet,
    make_imagenet_archives,
    make_synthetic,
    make_voc,
    pack_tar,
    pack_zip,
)
from local_http import serve

from mixreorg.data.benchmarks import (
    fetch_benchmark_data,
    get_benchmark,
    get_classification_benchmark,
    is_fetched,
    load_manifest,
)
from mixreorg.data.benchmarks.manifest import available_manifests, manifest_dir
from mixreorg.errors import MixreorgError

MAKERS = {"voc": make_voc, "voc20": make_voc, "context": make_context, "context59": make_context,
          "coco-object": make_coco, "coco-stuff": make_coco, "ade20k": make_ade20k, "cityscapes": make_cityscapes,
          "synthetic": make_synthetic}
NUM_CLASSES = {"voc": 21, "voc20": 20, "context": 60, "context59": 59, "coco-object": 81, "coco-stuff": 171,
               "ade20k": 150, "cityscapes": 19, "synthetic": 3}
BACKGROUND = {"voc": True, "context": True, "coco-object": True}


def _assert_matches(dataset, expected: dict[str, np.ndarray]) -> None:
    assert sorted(s.id for s in dataset.samples) == sorted(expected)
    for i in range(len(dataset)):
        image, label, sample_id = dataset[i]
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert label.dtype == np.uint8 and label.shape == image.shape[:2]
        np.testing.assert_array_equal(label, expected[sample_id], err_msg=f"{dataset.name} {sample_id}")


@pytest.mark.parametrize("name", list(MAKERS))
def test_each_layout_loads_with_right_classes_and_labels(tmp_path, name):
    fixture = MAKERS[name](tmp_path)
    dataset = get_benchmark(name, tmp_path)
    assert dataset.name == name and len(dataset.classes) == NUM_CLASSES[name]
    assert dataset.has_background is BACKGROUND.get(name, False)
    assert dataset.ignore_index == 255
    if dataset.has_background:
        assert dataset.classes[0] == "background" and dataset.protocol["bg_thresh"] in (0.95, 0.35)
    assert dataset.protocol.get("resize_short_side", 448) == 448
    _assert_matches(dataset, fixture.expected[name])


def test_class_names_follow_the_protocols(tmp_path):
    make_voc(tmp_path)
    make_context(tmp_path)
    make_coco(tmp_path)
    voc, context = get_benchmark("voc", tmp_path), get_benchmark("context", tmp_path)
    assert voc.classes[11] == "table" and voc.classes[20] == "monitor"  # GroupViT's prompt names
    assert context.classes[1] == "airplane" and context.classes[59] == "wood" and context.protocol["bg_thresh"] == 0.35
    assert get_benchmark("coco-object", tmp_path).classes[12] == "stop sign"
    assert get_benchmark("coco-stuff", tmp_path).classes[145] == "sky-other"
    assert get_benchmark("voc20", tmp_path).classes[0] == "aeroplane"


def test_voc_label_saved_as_rgb_is_decoded_through_the_palette(tmp_path):
    fixture = make_voc(tmp_path, rgb_label_id="2007_000039")
    _assert_matches(get_benchmark("voc", tmp_path), fixture.expected["voc"])


def test_synthetic_accepts_the_corpus_or_its_eval_folder(tmp_path):
    fixture = make_synthetic(tmp_path)
    for root in (tmp_path, tmp_path / "eval"):
        dataset = get_benchmark("synthetic", root)
        assert dataset.classes == SYNTHETIC_CLASSES and not dataset.has_background
        _assert_matches(dataset, fixture.expected["synthetic"])


def test_imagenet_folder_maps_wnids_to_the_1000_class_indices(tmp_path):
    fixture = make_imagenet(tmp_path)
    dataset = get_classification_benchmark("imagenet", tmp_path)
    assert len(dataset.classes) == 1000 and len(dataset.wnids) == 1000
    assert dataset.classes[1] == "goldfish" and dataset.wnids[IMAGENET_WNIDS["n15075141"]] == "n15075141"
    assert len(dataset) == len(fixture.ids)
    for i in range(len(dataset)):
        image, target, sample_id = dataset[i]
        assert image.dtype == np.uint8 and target == int(fixture.expected["imagenet"][sample_id])


@pytest.mark.parametrize(("name", "expected"), [
    ("ade20k", "ade/ADEChallengeData2016/images/validation"),
    ("voc", "VOCdevkit/VOC2012/JPEGImages"),
    ("cityscapes", "cityscapes/leftImg8bit/val"),
    ("coco-object", "coco_stuff164k/images/val2017"),
    ("synthetic", "eval/classes.json"),
])
def test_missing_layout_names_the_expected_path_and_the_fix(tmp_path, name, expected):
    with pytest.raises(MixreorgError) as info:
        get_benchmark(name, tmp_path)
    assert str(tmp_path / expected) in str(info.value)
    fix = {"synthetic": "mixreorg data synth", "coco-object": "mixreorg data fetch coco"}
    assert fix.get(name, f"mixreorg data fetch {name}") in str(info.value)


def test_missing_label_or_split_file_is_named(tmp_path):
    make_voc(tmp_path)
    label = tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2007_000039.png"
    label.unlink()
    with pytest.raises(MixreorgError, match=str(label)):
        get_benchmark("voc", tmp_path)
    make_context(tmp_path)  # prepared labels but no split list: as if the preparation never ran
    (tmp_path / "VOCdevkit/VOC2010/ImageSets/SegmentationContext/val.txt").unlink()
    with pytest.raises(MixreorgError, match="SegmentationContext/val.txt"):
        get_benchmark("context59", tmp_path)
    with pytest.raises(MixreorgError, match="unknown benchmark"):
        get_benchmark("pascal", tmp_path)
    with pytest.raises(MixreorgError, match="imagenet/val"):
        get_classification_benchmark("imagenet", tmp_path)


def test_manifests_hold_one_file_per_dataset_and_consistent_classes():
    names = ["ade20k", "cc12m", "cc3m", "cityscapes", "coco", "context", "imagenet", "voc"]
    assert set(names) <= set(available_manifests()) and "checkpoints" not in available_manifests()
    for name in names:
        manifest = load_manifest(name)
        assert manifest["name"] == name and manifest["files"]
        for entry in manifest["files"]:
            assert entry["sha256"] is None or len(entry["sha256"]) == 64
            assert entry["md5"] is None or len(entry["md5"]) == 32
        for bench in (manifest.get("benchmarks") or {}).values():
            assert len(bench["classes"]) == bench["num_classes"]
            # CLIP's cleaned ImageNet names repeat 'missile' and 'sunglasses', as published
            assert len(set(bench["classes"])) == bench["num_classes"] - 2 * (name == "imagenet")
            assert "palette" not in bench or len(bench["palette"]) == bench["num_classes"]
    assert load_manifest("imagenet")["benchmarks"]["imagenet"]["wnids"] == sorted(
        load_manifest("imagenet")["benchmarks"]["imagenet"]["wnids"])


# ------------------------------------------------------------------------------------------------ fetch end to end
def _manifest_for(tmp_path: Path, dataset: str, archives: dict[str, Path], corrupt: str | None = None) -> Path:
    """The built-in manifest with the files' size and sha256 replaced by those of the test archives."""
    data = yaml.safe_load((manifest_dir() / f"{dataset}.yaml").read_text())
    for entry in data["files"]:
        path = archives[entry["name"]]
        entry.update(bytes=path.stat().st_size, md5=None, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
        if entry["name"] == corrupt:
            entry["sha256"] = "0" * 64
    out = tmp_path / f"{dataset}-{corrupt or 'ok'}.yaml"
    out.write_text(yaml.safe_dump(data))
    return out


def test_fetch_voc_downloads_checks_extracts_and_marks_complete(tmp_path):
    fixture = make_voc(tmp_path / "src")
    archive = pack_tar(tmp_path / "src", tmp_path / "www" / "VOCtrainval_11-May-2012.tar", "VOCdevkit")
    manifest = _manifest_for(tmp_path, "voc", {archive.name: archive})
    root, lines = tmp_path / "data", []
    with serve(tmp_path / "www") as server:
        fetch_benchmark_data("voc", root, mirror=server.base, manifest=manifest, log=lines.append)
        assert [r.path for r in server.requests] == ["/VOCtrainval_11-May-2012.tar"]
        assert is_fetched("voc20", root) and not (root / "downloads" / archive.name).exists()
        _assert_matches(get_benchmark("voc20", root), fixture.expected["voc20"])
        fetch_benchmark_data("voc", root, mirror=server.base, manifest=manifest, log=lines.append)
        assert len(server.requests) == 1 and "already complete" in lines[-1]  # nothing fetched twice


def test_fetch_rejects_wrong_checksum_or_size_and_marks_nothing(tmp_path):
    make_voc(tmp_path / "src")
    archive = pack_tar(tmp_path / "src", tmp_path / "www" / "VOCtrainval_11-May-2012.tar", "VOCdevkit")
    bad = _manifest_for(tmp_path, "voc", {archive.name: archive}, corrupt=archive.name)
    root = tmp_path / "data"
    with serve(tmp_path / "www") as server:
        with pytest.raises(MixreorgError, match="sha256"):
            fetch_benchmark_data("voc", root, mirror=server.base, manifest=bad, log=lambda _: None)
        with pytest.raises(MixreorgError, match="1,999,639,040"):  # the real manifest: the size already differs
            fetch_benchmark_data("voc", root, mirror=server.base, log=lambda _: None)
    assert not is_fetched("voc", root)
    assert not (root / "VOCdevkit").exists() and list((root / "downloads").iterdir()) == []
    with pytest.raises(MixreorgError, match="not the published"):  # the same check for a local --from file
        fetch_benchmark_data("voc", root, [archive], manifest=bad, log=lambda _: None)
    assert not is_fetched("voc", root)


def test_fetch_context_builds_60_and_59_labels_from_the_rle_json(tmp_path):
    fixture = make_context(tmp_path / "src", prepared=False)
    tar = pack_tar(tmp_path / "src", tmp_path / "dl" / "VOCtrainval_03-May-2010.tar", "VOCdevkit")
    json_file = tmp_path / "dl" / "trainval_merged.json"
    (tmp_path / "src/VOCdevkit/VOC2010/trainval_merged.json").rename(json_file)
    manifest = _manifest_for(tmp_path, "context", {tar.name: tar, json_file.name: json_file})
    root = tmp_path / "data"
    fetch_benchmark_data("context59", root, [tar, json_file], manifest=manifest, log=lambda _: None)
    assert is_fetched("context", root) and tar.exists()  # the user's own files are never deleted
    _assert_matches(get_benchmark("context", root), fixture.expected["context"])
    _assert_matches(get_benchmark("context59", root), fixture.expected["context59"])
    assert (root / "VOCdevkit/VOC2010/ImageSets/SegmentationContext/train.txt").read_text() == "2008_000007\n"


def test_fetch_coco_converts_val_maps_to_object_and_stuff_labels(tmp_path):
    fixture = make_coco(tmp_path / "src", prepared=False)
    src = tmp_path / "src" / "coco_stuff164k"
    images = pack_zip(src / "images", tmp_path / "dl" / "val2017.zip", "val2017")
    maps = pack_zip(src / "annotations", tmp_path / "dl" / "stuffthingmaps_trainval2017.zip", ".")
    manifest = _manifest_for(tmp_path, "coco", {images.name: images, maps.name: maps})
    root = tmp_path / "data"
    fetch_benchmark_data("coco", root, [images, maps], manifest=manifest, log=lambda _: None)
    _assert_matches(get_benchmark("coco-object", root), fixture.expected["coco-object"])
    _assert_matches(get_benchmark("coco-stuff", root), fixture.expected["coco-stuff"])
    assert not (root / "coco_stuff164k/annotations/train2017").exists()  # only val is extracted


def test_fetch_ade20k_from_the_official_zip_layout(tmp_path):
    fixture = make_ade20k(tmp_path / "src")
    archive = pack_zip(tmp_path / "src" / "ade", tmp_path / "dl" / "ADEChallengeData2016.zip", "ADEChallengeData2016")
    manifest = _manifest_for(tmp_path, "ade20k", {archive.name: archive})
    fetch_benchmark_data("ade20k", tmp_path / "data", [archive], manifest=manifest, log=lambda _: None)
    _assert_matches(get_benchmark("ade20k", tmp_path / "data"), fixture.expected["ade20k"])


def test_cityscapes_needs_from_and_prepares_train_ids_in_a_linked_folder(tmp_path):
    lines: list[str] = []
    with pytest.raises(MixreorgError, match="--from"):
        fetch_benchmark_data("cityscapes", tmp_path / "data", log=lines.append)
    assert any("gtFine_trainvaltest.zip" in line for line in lines)  # how to get it was printed
    fixture = make_cityscapes(tmp_path / "mine", prepared=False, folder_name="cs")
    fetch_benchmark_data("cityscapes", tmp_path / "data", [tmp_path / "mine" / "cs"], log=lambda _: None)
    assert (tmp_path / "data" / "cityscapes").is_symlink()
    assert (tmp_path / "mine/cs/gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png").is_file()
    _assert_matches(get_benchmark("cityscapes", tmp_path / "data"), fixture.expected["cityscapes"])


def test_imagenet_val_tar_is_sorted_into_wnid_folders_with_the_devkit(tmp_path):
    val_tar, devkit, truth = make_imagenet_archives(tmp_path / "dl")
    manifest = _manifest_for(tmp_path, "imagenet", {val_tar.name: val_tar, devkit.name: devkit})
    with pytest.raises(MixreorgError, match="needs ILSVRC2012_devkit_t12.tar.gz"):
        fetch_benchmark_data("imagenet", tmp_path / "data", [val_tar], manifest=manifest, log=lambda _: None)
    assert not is_fetched("imagenet", tmp_path / "data")
    fetch_benchmark_data("imagenet", tmp_path / "data", [val_tar, devkit], manifest=manifest, log=lambda _: None)
    for name, wnid in truth.items():
        assert (tmp_path / "data/imagenet/val" / wnid / name).is_file()
    dataset = get_classification_benchmark("imagenet", tmp_path / "data")
    assert sorted(dataset.classes[t] for _, t, _ in (dataset[i] for i in range(len(dataset)))) == sorted(
        ["goldfish", "toilet paper", "tench", "goldfish"])
