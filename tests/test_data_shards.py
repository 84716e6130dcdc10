"""`data shard` from folders and tables, `data verify` on damaged shards, and the shard-spec resolver."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from mixreorg.cli.main import app
from PIL import Image
from typer.testing import CliRunner

from mixreorg.data.shards import shard_user_data, write_shards
from mixreorg.data.verify import read_manifest, resolve_shards, verify_shards
from mixreorg.errors import MixreorgError

MIXREORG = Path(sys.executable).with_name("mixreorg")


def _image_bytes(colour: tuple[int, int, int], fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), colour).save(buffer, format=fmt)
    return buffer.getvalue()


def _read_shards(folder: Path) -> list[dict]:
    samples = []
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}
        for key in sorted({name.split(".")[0] for name in members}):
            sample = {name.split(".", 1)[1]: data for name, data in members.items() if name.startswith(key + ".")}
            samples.append(dict(sample, key=key, shard=shard.name))
    return samples


@pytest.fixture()
def photo_folder(tmp_path) -> Path:
    root = tmp_path / "photos"
    (root / "b").mkdir(parents=True)
    (root / "a.jpg").write_bytes(_image_bytes((255, 0, 0)))
    (root / "a.txt").write_text("a red square\n")
    (root / "b" / "c.png").write_bytes(_image_bytes((0, 255, 0), "PNG"))
    (root / "b" / "c.txt").write_text("a green square")
    (root / "b" / "d.JPEG").write_bytes(_image_bytes((0, 0, 255)))
    (root / "b" / "d.txt").write_text("a blue square")
    (root / "e.jpg").write_bytes(_image_bytes((9, 9, 9)))  # no caption: skipped
    return root


def test_shard_folder_in_sorted_order(photo_folder, tmp_path):
    summary = shard_user_data(photo_folder, tmp_path / "out", shard_size=2)
    assert summary["samples"] == 3 and summary["shards"] == 2
    assert summary["skipped"] == {"without a same-name .txt caption": 1}
    samples = _read_shards(tmp_path / "out")
    assert [json.loads(s["json"])["source"] for s in samples] == ["a.jpg", "b/c.png", "b/d.JPEG"]
    assert [s["txt"].decode() for s in samples] == ["a red square", "a green square", "a blue square"]
    assert [s["shard"] for s in samples] == ["00000.tar", "00000.tar", "00001.tar"]
    assert "png" in samples[1] and "jpg" in samples[2]
    assert samples[0]["jpg"] == (photo_folder / "a.jpg").read_bytes()  # bytes kept as they were
    listed = read_manifest(tmp_path / "out" / "manifest.json")
    assert listed.sizes == [2, 1]
    assert listed.urls == [str(tmp_path / "out" / "00000.tar"), str(tmp_path / "out" / "00001.tar")]
    # deterministic: the same input gives the same bytes
    shard_user_data(photo_folder, tmp_path / "again", shard_size=2)
    assert (tmp_path / "out" / "00000.tar").read_bytes() == (tmp_path / "again" / "00000.tar").read_bytes()


def test_shard_csv_and_parquet(photo_folder, tmp_path):
    table = photo_folder / "pairs.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "caption", "extra"])
        writer.writerow(["b/c.png", 'green, "quoted", square', "x"])
        writer.writerow(["a.jpg", "red square", "y"])
        writer.writerow(["missing.jpg", "gone", "z"])
    summary = shard_user_data(table, tmp_path / "from_csv")
    assert summary["samples"] == 2 and summary["skipped"] == {"with a missing image file": 1}
    assert [s["txt"].decode() for s in _read_shards(tmp_path / "from_csv")] == ['green, "quoted", square', "red square"]

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"file": ["a.jpg", "b/d.JPEG"], "text": ["one", "two"]}), photo_folder / "pairs.parquet")
    summary = shard_user_data(photo_folder / "pairs.parquet", tmp_path / "from_parquet",
                              image_column="file", caption_column="text")
    assert summary["samples"] == 2
    assert [s["txt"].decode() for s in _read_shards(tmp_path / "from_parquet")] == ["one", "two"]


def test_shard_bad_inputs_raise_clear_errors(photo_folder, tmp_path):
    table = tmp_path / "no_caption.csv"
    table.write_text("path,text\na.jpg,hello\n")
    with pytest.raises(MixreorgError, match=r"has columns \['path', 'text'\], expected 'path' and 'caption'"):
        shard_user_data(table, tmp_path / "o1")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(MixreorgError, match="no images"):
        shard_user_data(empty, tmp_path / "o2")
    with pytest.raises(MixreorgError, match="does not exist"):
        shard_user_data(tmp_path / "nowhere", tmp_path / "o3")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(MixreorgError, match="cannot create"):
        shard_user_data(photo_folder, blocker / "out")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_cli_shard_errors(photo_folder, tmp_path):
    runner = CliRunner()
    table = tmp_path / "bad.csv"
    table.write_text("image,caption\nx.jpg,hi\n")
    result = runner.invoke(app, ["data", "shard", str(table), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and isinstance(result.exception, MixreorgError)
    assert "expected 'path' and 'caption'" in str(result.exception)
    args = ["data", "shard", str(photo_folder), "--out", str(tmp_path / "ok"), "--shard-size", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "wrote 3 samples in 2 shards" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run([str(MIXREORG), "data", "shard", str(empty), "--out", str(tmp_path / "o2")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and done.stderr.startswith("error: no images") and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def _samples(first: int, count: int) -> list[dict]:
    return [{"__key__": f"{i:06d}", "jpg": _image_bytes((i, 2 * i, 100)), "txt": f"sample {i}", "json": {"i": i}}
            for i in range(first, first + count)]


def test_verify_reports_truncated_shard_and_undecodable_image(tmp_path):
    shards = tmp_path / "shards"
    samples = _samples(0, 16)
    samples[7]["jpg"] = b"\xff\xd8 this is not a jpeg"
    samples[15]["jpg"] = b"GIF89a nor is this"  # the only sample of the last shard
    write_shards(samples, shards, shard_size=5)
    truncated = shards / "00002.tar"
    truncated.write_bytes(truncated.read_bytes()[:2600])
    result = CliRunner().invoke(app, ["data", "verify", str(shards)])
    assert result.exit_code == 0, result.output
    assert "bad shard (left out)" in result.output and "00002.tar" in result.output
    manifest = json.loads((shards / "manifest.json").read_text())
    assert [s["url"] for s in manifest["shards"]] == ["00000.tar", "00001.tar"]
    assert [s["num_samples"] for s in manifest["shards"]] == [5, 4] and manifest["total"] == 9
    assert [s["url"] for s in manifest["bad_shards"]] == ["00002.tar", "00003.tar"]
    assert manifest["bad_shards"][1]["reason"].startswith("no usable samples (first: UnidentifiedImageError")
    assert [(s["url"], s["key"]) for s in manifest["bad_samples"]] == [("00001.tar", "000007")]
    # a shard cut exactly at a member boundary is caught by its missing end-of-archive blocks
    clean = shards / "00000.tar"
    with tarfile.open(clean) as tar:
        end = max(m.offset_data + -(-m.size // 512) * 512 for m in tar.getmembers())
    clean.write_bytes(clean.read_bytes()[:end])
    report = verify_shards(f"{shards}/{{00000..00001}}.tar", out=tmp_path / "m.json")
    assert [s["url"] for s in report["bad_shards"]] == ["shards/00000.tar"] and report["total"] == 4


def test_verify_fails_when_nothing_is_usable(tmp_path):
    shards = tmp_path / "shards"
    write_shards(_samples(0, 3), shards, shard_size=5)
    (shards / "00000.tar").write_bytes(b"not a tar at all" * 10)
    with pytest.raises(MixreorgError, match="no usable samples"):
        verify_shards(str(shards))
    assert not (shards / "manifest.json").exists()
    done = subprocess.run([str(MIXREORG), "data", "verify", str(tmp_path / "missing")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr


def test_resolve_shards_specs(tmp_path):
    shards = tmp_path / "shards"
    write_shards(_samples(0, 12), shards, shard_size=4)
    folder = resolve_shards(str(shards))
    assert [Path(u).name for u in folder.urls] == ["00000.tar", "00001.tar", "00002.tar"] and folder.sizes is None
    brace = resolve_shards(f"{shards}/{{00000..00001}}.tar::{shards}/00002.tar")
    assert brace.urls == folder.urls
    assert resolve_shards(f"{shards}/*.tar").urls == folder.urls
    verify_shards(str(shards))
    listed = resolve_shards(f"{shards}/manifest.json::{shards}/manifest.json")
    assert listed.total == 24 and len(listed.urls) == 6
    assert resolve_shards("http://127.0.0.1:1/{000..002}.tar").urls[-1] == "http://127.0.0.1:1/002.tar"
    with pytest.raises(MixreorgError, match="do not exist"):
        resolve_shards(f"{shards}/{{00000..00005}}.tar")
    with pytest.raises(MixreorgError, match="not a readable shard manifest"):
        (tmp_path / "bad.json").write_text("{}")
        resolve_shards(str(tmp_path / "bad.json"))
