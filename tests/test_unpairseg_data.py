"""Unpair-Seg's data: the synthetic image-mask split, the stage-1 loader (prompts, resuming, unusable masks counted),
SA-1B (links file over loopback HTTP, local tars) and COCO (instances, panoptic) into shards, and re-captioning
through a tiny random transformers model."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from local_http import serve  # noqa: E402

from mixreorg.data.loader import build_train_loader  # noqa: E402
from mixreorg.data.masks.coco import convert_coco  # noqa: E402
from mixreorg.data.masks.records import annotation, decode_masks, mask_record, read_record  # noqa: E402
from mixreorg.data.masks.sa1b import convert_sa1b  # noqa: E402
from mixreorg.data.shards import write_shards  # noqa: E402
from mixreorg.data.synthetic import generate_corpus, get_world, sample_rng  # noqa: E402
from mixreorg.data.synthetic.corpus import scene_masks  # noqa: E402
from mixreorg.data.verify import write_manifest  # noqa: E402
from mixreorg.errors import MixreorgError  # noqa: E402
from mixreorg.unpairseg.data import MaskBatchStream  # noqa: E402
from mixreorg.unpairseg.prompts import POINT  # noqa: E402


def _samples(folder: Path) -> list[dict]:
    import webdataset as wds

    out = []
    for url in sorted(folder.glob("*.tar")):
        out += list(wds.tarfile_to_samples()([{"url": str(url)}]))
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("masks") / "synth"
    generate_corpus(root, train_size=8, eval_size=0, image_size=64, shard_size=8, mask_size=24)
    return root


def test_the_mask_split_leaves_the_other_splits_byte_identical_and_holds_exact_instance_masks(corpus, tmp_path):
    generate_corpus(tmp_path / "plain", train_size=8, eval_size=0, image_size=64, shard_size=8)
    for name in ("train/00000.tar", "train/manifest.json"):
        assert hashlib.sha256((corpus / name).read_bytes()).digest() == \
            hashlib.sha256((tmp_path / "plain" / name).read_bytes()).digest()
    world = get_world("appearance")
    samples = _samples(corpus / "masks")
    assert len(samples) == 24 and not any("txt" in s for s in samples)
    train_images = {s["jpg"] for s in _samples(corpus / "train")}
    for index, sample in enumerate(samples):
        assert sample["jpg"] not in train_images
        record = read_record(sample["json"])
        masks = decode_masks(record, (64, 64))
        _, labels, _, meta, instances = world.draw(sample_rng(0, "masks", index), 64)
        expected, names = scene_masks(labels, instances, meta)
        assert [a["category"] for a in record["annotations"]] == names
        assert all(np.array_equal(a, b) for a, b in zip(masks, expected, strict=True))
        assert np.array_equal(np.sum(masks, axis=0), np.ones((64, 64)))  # every pixel in exactly one mask
        assert [a["is_object"] for a in record["annotations"]] == [n in world.objects for n in names]


def _loader(data: str, start_batch: int = 0, workers: int = 0, shuffle: int = 8):
    return build_train_loader(data, batch_size=4, workers=workers, seed=3, image_size=64, multi_label=0,
                              shuffle_buffer=shuffle, start_batch=start_batch, stream=MaskBatchStream,
                              options={"grid": 4, "box_probability": 0.5, "scale_range": (0.8, 1.2)})


def test_mask_batches_hold_prompts_on_their_targets_and_replay_exactly_after_a_resume(corpus):
    data = str(corpus / "masks" / "manifest.json")
    batches = list(_loader(data))
    assert len(batches) == 6
    images, masks, boxes, kinds, targets = batches[0]
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.uint8
    assert masks.shape[:2] == (4, int(targets.max()) + 1) and masks.shape[2:] == (16, 16)
    assert boxes.shape == (4, 16, 4) and kinds.shape == targets.shape == (4, 16)
    for b in range(4):
        for p in range(16):
            target = masks[b, targets[b, p]].float() / 255
            x1, y1, x2, y2 = boxes[b, p].tolist()
            if kinds[b, p] == POINT:
                assert target[int(y1 // 4), int(x1 // 4)] > 0.5
            else:
                rows, cols = torch.nonzero(target > 0.5, as_tuple=True)
                assert [x1, y1, x2, y2] == [4 * cols.min(), 4 * rows.min(), 4 * cols.max() + 4, 4 * rows.max() + 4]
    resumed = list(_loader(data, start_batch=2))
    for a, b in zip(batches[2:], resumed, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _jpeg(seed: int, size: tuple[int, int] = (48, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _halves(height: int = 48, width: int = 40) -> list[np.ndarray]:
    top = np.zeros((height, width), bool)
    top[: height // 2] = True
    return [top, ~top]


def test_unusable_masks_are_counted_and_replaced(tmp_path):
    good = mask_record(_halves(), 0, "a.jpg")
    wrong_size = mask_record(_halves(24, 40), 1, "b.jpg")
    broken = json.loads(json.dumps(good))
    broken["annotations"][0]["segmentation"]["counts"] = "!!not-rle"
    empty = {**good, "annotations": []}
    rows = [("good0", _jpeg(0), good), ("size", _jpeg(1), wrong_size), ("good1", _jpeg(0), good),
            ("broken", _jpeg(2), broken), ("good2", _jpeg(0), good), ("empty", _jpeg(3), empty),
            ("good3", _jpeg(0), good), ("image", b"not a jpeg", good)]  # a good sample in every batch of 4
    samples = [{"__key__": key, "jpg": image, "json": record} for key, image, record in rows]
    shards = write_shards(samples, tmp_path / "bad", 10)
    write_manifest(tmp_path / "bad" / "manifest.json", shards)
    loader = _loader(str(tmp_path / "bad" / "manifest.json"), shuffle=0)
    batches = list(loader)
    assert len(batches) == 2 and all(b[0].shape[0] == 4 for b in batches)
    counts = loader.skipped()
    assert counts["unusable_masks"] == 3 and counts["undecodable_images"] == 1


def _sa1b_tar(path: Path, pairs: list[tuple[str, bytes | None, dict | None]]) -> Path:
    with tarfile.open(path, "w") as archive:
        for stem, image, record in pairs:
            for suffix, data in ((".jpg", image), (".json", json.dumps(record).encode() if record else None)):
                if data is not None:
                    info = tarfile.TarInfo(stem + suffix)
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    return path


def _sa1b_record(stem: str, masks: list[np.ndarray]) -> dict:
    record = mask_record(masks, stem, f"{stem}.jpg")
    for entry in record["annotations"]:
        entry.update(predicted_iou=0.9, stability_score=0.95, point_coords=[[1.0, 2.0]])
    return record


def test_sa1b_from_the_links_file_downloads_checks_and_shards_its_tars(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    bad = _sa1b_record("sa_3", _halves())
    bad["annotations"][1]["segmentation"]["size"] = [10, 10]
    _sa1b_tar(served / "sa_000000.tar", [("sa_1", _jpeg(1), _sa1b_record("sa_1", _halves())),
                                         ("sa_2", _jpeg(2), None), ("sa_3", _jpeg(3), bad)])
    _sa1b_tar(served / "sa_000001.tar", [("sa_4", _jpeg(4, (400, 300)), _sa1b_record("sa_4", _halves(400, 300)))])
    with serve(served) as server:
        links = tmp_path / "sa1b_links.txt"
        links.write_text("file_name\tcdn_link\n" + "".join(f"sa_00000{i}.tar\t{server.url(f'sa_00000{i}.tar')}\n"
                                                         for i in (0, 1)))
        summary = convert_sa1b([links], tmp_path / "shards", download_dir=tmp_path / "tars", max_side=200)
    assert summary["samples"] == 2 and summary["tars"] == 2
    assert summary["skipped"] == {"images or mask files without their pair": 1,
                                  "images whose masks do not decode or do not fit the image": 1}
    assert sorted(p.name for p in (tmp_path / "tars").iterdir()) == ["sa_000000.tar", "sa_000001.tar"]
    samples = {s["__key__"]: s for s in _samples(tmp_path / "shards")}
    assert samples["sa_1"]["jpg"] == _jpeg(1)  # small JPEGs keep their bytes, and SA-1B's fields
    assert json.loads(samples["sa_1"]["json"])["annotations"][0]["predicted_iou"] == 0.9
    resized = Image.open(io.BytesIO(samples["sa_4"]["jpg"]))
    assert resized.size == (150, 200)
    masks = decode_masks(read_record(samples["sa_4"]["json"]), (200, 150))
    assert [int(m.sum()) for m in masks] == [100 * 150, 100 * 150]
    again = convert_sa1b([tmp_path / "tars"], tmp_path / "local", max_side=0)  # local tars, as they are
    assert again["samples"] == 2
    with pytest.raises(MixreorgError, match="no usable image with masks"):
        convert_sa1b([_sa1b_tar(tmp_path / "none.tar", [("sa_9", b"junk", None)])], tmp_path / "empty")
    assert not (tmp_path / "empty").exists()


def test_coco_instances_and_panoptic_become_class_agnostic_masks(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for index in range(3):
        (images / f"{index:012d}.jpg").write_bytes(_jpeg(index))
    square = [[4.0, 4.0, 20.0, 4.0, 20.0, 20.0, 4.0, 20.0]]
    from pycocotools import mask as mask_utils

    crowd = mask_utils.encode(np.asfortranarray(_halves()[1].astype(np.uint8)))
    instances = {
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "height": 48, "width": 40} for i in range(3)],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 0, "category_id": 1, "segmentation": square, "iscrowd": 0},
            {"id": 2, "image_id": 0, "category_id": 2, "iscrowd": 1,
             "segmentation": {"size": [48, 40], "counts": crowd["counts"].decode()}},
            {"id": 3, "image_id": 1, "category_id": 1, "segmentation": square, "iscrowd": 0},
        ],
    }
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    summary = convert_coco(tmp_path / "instances.json", images, tmp_path / "inst")
    assert summary["samples"] == 2 and summary["skipped"] == {"images without any mask": 1}
    samples = {s["__key__"]: s for s in _samples(tmp_path / "inst")}
    record = read_record(samples["000000000000"]["json"])
    masks = decode_masks(record, (48, 40))
    assert [a["category"] for a in record["annotations"]] == ["cat", "dog"]
    assert int(masks[0].sum()) == 16 * 16 and np.array_equal(masks[1], _halves()[1])

    pngs = tmp_path / "panoptic"
    pngs.mkdir()
    ids = np.zeros((48, 40, 3), np.uint8)
    ids[:24, :, 0] = 7
    ids[24:, :, 1] = 1  # id 256
    Image.fromarray(ids).save(pngs / "000000000000.png")
    panoptic = {"images": instances["images"][:1], "categories": instances["categories"],
                "annotations": [{"image_id": 0, "file_name": "000000000000.png",
                                 "segments_info": [{"id": 7, "category_id": 1}, {"id": 256, "category_id": 2}]}]}
    (tmp_path / "panoptic.json").write_text(json.dumps(panoptic))
    with pytest.raises(MixreorgError, match="panoptic file; pass its PNG folder with --panoptic-masks"):
        convert_coco(tmp_path / "panoptic.json", images, tmp_path / "pan")
    convert_coco(tmp_path / "panoptic.json", images, tmp_path / "pan", panoptic_masks=pngs)
    record = read_record(_samples(tmp_path / "pan")[0]["json"])
    assert [a["category"] for a in record["annotations"]] == ["cat", "dog"]
    assert all(np.array_equal(a, b) for a, b in zip(decode_masks(record, (48, 40)), _halves(), strict=True))


def test_records_refuse_masks_that_do_not_fit():
    good = mask_record(_halves(), 0, "a.jpg")
    with pytest.raises(ValueError, match="record is for a 48x40 image, the image is 40x48"):
        decode_masks(good, (40, 48))
    assert annotation(_halves()[0], 3)["bbox"] == [0, 0, 40, 24]


def _tiny_blip(folder: Path) -> Path:
    """A random BLIP captioner built from a config, with a word-level vocabulary written here (nothing downloaded).
    Its output layer is biased away from the special tokens, so it writes words."""
    transformers = pytest.importorskip("transformers")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "zebra", "tiger", "on", "grass", "sand", "sky"]
    text = dict(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, encoder_hidden_size=32, max_position_embeddings=40, bos_token_id=2,
                sep_token_id=3, pad_token_id=0)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)
    torch.manual_seed(0)
    model = transformers.BlipForConditionalGeneration(transformers.BlipConfig(text_config=text,
                                                                             vision_config=vision))
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[[0, 1, 2, 3, 4]] = -1e4  # words until max_new_tokens
    processor = transformers.BlipProcessor(transformers.BlipImageProcessor(size={"height": 32, "width": 32}),
                                           transformers.BertTokenizer(vocab={w: i for i, w in enumerate(words)}))
    model.save_pretrained(folder / "blip")
    processor.save_pretrained(folder / "blip")
    return folder / "blip"


def test_recaption_adds_the_models_captions_as_a_field_and_keeps_everything_else(corpus, tmp_path):
    import transformers

    from mixreorg.data.recaption import recaption_shards

    model = _tiny_blip(tmp_path / "model")
    summary = recaption_shards(str(corpus / "train" / "manifest.json"), tmp_path / "re", str(model), batch_size=3,
                               device="cpu", max_new_tokens=5)
    assert summary == {"out": str(tmp_path / "re"), "shards": 1, "field": "recaption.txt", "samples": 8,
                       "recaptioned": 8, "undecodable": 0}
    before, after = _samples(corpus / "train"), _samples(tmp_path / "re")
    processor = transformers.AutoProcessor.from_pretrained(model)
    blip = transformers.AutoModelForImageTextToText.from_pretrained(model).eval()
    for old, new in zip(before, after, strict=True):
        assert {k: v for k, v in new.items() if k not in ("recaption.txt", "__url__", "__local_path__")} == \
            {k: v for k, v in old.items() if k not in ("__url__", "__local_path__")}
        image = Image.open(io.BytesIO(old["jpg"])).convert("RGB")
        tokens = blip.generate(**processor(images=[image], return_tensors="pt"), max_new_tokens=5, do_sample=False)
        expected = " ".join(processor.batch_decode(tokens, skip_special_tokens=True)[0].split())
        assert new["recaption.txt"].decode() == expected and expected
    with pytest.raises(MixreorgError, match="cannot load the image-to-text model"):
        recaption_shards(str(corpus / "train" / "manifest.json"), tmp_path / "x", str(tmp_path / "nothing"))
    assert not (tmp_path / "x").exists()
