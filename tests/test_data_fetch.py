"""`mixreorg data fetch` for image-text pairs (real img2dataset against 127.0.0.1) and the resumable downloader."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from local_http import serve
from PIL import Image

from mixreorg.data.download import download_file, extract_archive
from mixreorg.data.fetch_pairs import convert_url_list, fetch_pairs, read_summary
from mixreorg.errors import MixreorgError

CAPTIONS = ['a red "star", on sand', "two dogs\nin the snow", "plain", "café au lait", "x", "y", "broken", "gone"]
FAST = {"processes": 1, "threads": 2, "image_size": 32, "shard_size": 5, "timeout": 5}


@pytest.fixture(scope="module")
def www(tmp_path_factory):
    """Six decodable JPEGs, one file that is not an image, and a name that does not exist (404)."""
    folder = tmp_path_factory.mktemp("www")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(folder / f"img{i}.jpg")
    (folder / "bad.jpg").write_text("this is not an image")
    with serve(folder) as server:
        yield server


@pytest.fixture(scope="module")
def dead_list_fetch(www, tmp_path_factory):
    """The CLI on a list whose every URL is a 404, started in the background so its img2dataset run (two spawned
    interpreters) overlaps the in-process runs of the next test instead of adding to the suite's time."""
    folder = tmp_path_factory.mktemp("dead")
    url_list = _pairs_csv(folder / "dead.csv", www, ["missing1.jpg", "missing2.jpg"])
    args = [str(Path(sys.executable).parent / "mixreorg"), "data", "fetch", "urls", "--url-list", str(url_list),
            "--out", str(folder / "out"), "--processes", "1", "--threads", "2", "--image-size", "32"]
    with open(folder / "stdout", "w") as out, open(folder / "stderr", "w") as err:
        process = subprocess.Popen(args, stdout=out, stderr=err)
    yield process, folder
    if process.poll() is None:
        process.kill()


def _pairs_csv(path: Path, server, names: list[str]) -> Path:
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["caption", "url"])  # header in the other order on purpose
        writer.writerows([caption, server.url(name)] for caption, name in zip(CAPTIONS, names, strict=False))
    return path


def _tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}


@pytest.mark.slow  # three img2dataset runs in all (each spawns two interpreters that import torch)
def test_fetch_writes_shards_summarises_failures_and_resumes(tmp_path, www, dead_list_fetch):
    names = [f"img{i}.jpg" for i in range(6)] + ["bad.jpg", "missing.jpg"]
    url_list = _pairs_csv(tmp_path / "pairs.csv", www, names)
    out, lines = tmp_path / "shards", []
    summary = fetch_pairs("urls", out, url_list, log=lines.append, **FAST)

    assert sorted(p.name for p in out.glob("*.tar")) == ["00000.tar", "00001.tar"]
    assert (summary.shards, summary.count, summary.successes) == (2, 8, 6)
    assert (summary.failed_to_download, summary.failed_to_resize) == (1, 1)
    assert any("404" in reason for reason in summary.reasons) and any("decod" in r for r in summary.reasons)
    assert "6 of 8 images" in lines[-3] and any("404" in line for line in lines)
    members = _tar_members(out / "00000.tar")
    assert sorted(k.rsplit(".", 1)[1] for k in members) == ["jpg"] * 5 + ["json"] * 5 + ["txt"] * 5
    texts = sorted(v.decode() for k, v in members.items() if k.endswith(".txt"))
    assert texts == sorted(CAPTIONS[:5])  # quotes, commas and newlines survive the csv -> parquet step
    jpg = next(v for k, v in members.items() if k.endswith(".jpg"))
    assert max(Image.open(io.BytesIO(jpg)).size) <= 60  # never upscaled

    # Interrupt the second shard as a kill would: its stats never written, its tar cut short.
    first = (out / "00000.tar").stat().st_mtime_ns
    (out / "00001_stats.json").unlink()
    (out / "00001.tar").write_bytes((out / "00001.tar").read_bytes()[:700])
    www.requests.clear()
    again = fetch_pairs("urls", out, url_list, log=lambda _: None, **FAST)
    # The background fetch of `dead_list_fetch` shares the server: count only this list's requests.
    ours = sorted(r.path for r in www.requests if r.path.lstrip("/") in names)
    assert ours == ["/bad.jpg", "/img5.jpg", "/missing.jpg"]  # only shard 1
    assert (out / "00000.tar").stat().st_mtime_ns == first
    assert len(_tar_members(out / "00001.tar")) == 3 and again.successes == 6 and again.shards == 2

    with pytest.raises(MixreorgError, match="shard_size=5"):  # resuming with another shard size would mix lists
        fetch_pairs("urls", out, url_list, log=lambda _: None, **{**FAST, "shard_size": 4})


@pytest.mark.slow
def test_zero_successes_is_an_error_with_one_line_from_the_cli(dead_list_fetch):
    process, folder = dead_list_fetch
    assert process.wait(timeout=300) != 0
    stderr = (folder / "stderr").read_text()
    assert stderr.strip().splitlines()[-1].startswith("error: no image could be fetched")
    assert "404" in stderr.strip().splitlines()[-1] and "Traceback" not in stderr
    assert "0 of 2 images" in (folder / "stdout").read_text()  # the summary is printed before the error
    assert read_summary(folder / "out").count == 2  # the stats stay for inspection


def test_url_lists_in_every_layout_become_the_same_parquet(tmp_path):
    rows = [("http://h/a.jpg", "a\tcat with a tab"), ("http://h/b.jpg", 'b "quoted"'), ("http://h/c.jpg", "")]
    cc12m = tmp_path / "cc12m.tsv"  # no header, url<TAB>caption, tabs inside captions left unquoted
    cc12m.write_text("".join(f"{u}\t{c}\n" for u, c in rows))
    cc3m = tmp_path / "Train_GCC-training.tsv.gz"  # no header, caption<TAB>url
    cc3m.write_bytes(gzip.compress("".join(f"{c}\t{u}\n" for u, c in rows).encode()))
    csv_file = tmp_path / "mine.csv"
    csv_file.write_text('id,URL,text\n1,http://h/a.jpg,"a\tcat with a tab"\n2,http://h/b.jpg,"b ""quoted"""\n'
                        "3,http://h/c.jpg,\n4,,no url is skipped\n")
    parquet = tmp_path / "mine.parquet"
    pq.write_table(pa.table({"caption": [c for _, c in rows], "url": [u for u, _ in rows], "n": [1, 2, 3]}), parquet)
    for source, columns in ((cc12m, ["url", "caption"]), (cc3m, ["caption", "url"]), (cc12m, None),
                            (csv_file, None), (parquet, None)):
        target = tmp_path / "out.parquet"
        assert convert_url_list(source, target, headerless_columns=columns) == 3
        table = pq.read_table(target)
        assert list(zip(table["url"].to_pylist(), table["caption"].to_pylist(), strict=True)) == rows, source


def test_url_list_without_url_and_caption_columns_is_refused(tmp_path):
    bad = tmp_path / "list.csv"
    bad.write_text("path,label\nimg.jpg,cat\n")
    with pytest.raises(MixreorgError, match="no url and caption columns.*'path', 'label'"):
        fetch_pairs("urls", tmp_path / "out", bad, log=lambda _: None)
    assert not list((tmp_path / "out").glob("*.tar"))
    with pytest.raises(MixreorgError, match="needs --url-list"):
        fetch_pairs("urls", tmp_path / "out2", log=lambda _: None)
    with pytest.raises(MixreorgError, match="resize-mode"):
        fetch_pairs("cc12m", tmp_path / "out3", bad, resize_mode="stretch", log=lambda _: None)


def test_the_cc12m_list_comes_from_the_manifest_url_and_cc3m_asks_for_it(tmp_path):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "cc12m.tsv").write_text("")  # stands in for the 2.6 GB list, served under its real name
    with serve(tmp_path / "www") as server:
        with pytest.raises(MixreorgError, match="holds no URLs"):
            fetch_pairs("cc12m", tmp_path / "out", mirror=server.base, log=lambda _: None)
        assert [r.path for r in server.requests] == ["/cc12m.tsv"]
    assert (tmp_path / "out" / "_list" / "cc12m.tsv").is_file()
    with pytest.raises(MixreorgError, match="no public URL.*Train_GCC-training.tsv"):
        fetch_pairs("cc3m", tmp_path / "out3", log=lambda _: None)


def test_cli_bad_input_prints_one_error_line_and_exits_nonzero(tmp_path):
    bad = tmp_path / "list.tsv"
    bad.write_text("just some words\tand more\n")
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    exe = str(Path(sys.executable).parent / "mixreorg")
    for args, needle in (
        (["data", "fetch", "urls", "--url-list", str(bad), "--out", str(tmp_path / "o")], "no url and caption"),
        (["data", "fetch", "cc3m", "--out", str(not_a_folder)], "is a file"),
        (["data", "fetch", "voc", "--out", str(tmp_path)], "takes --root"),
        (["data", "fetch", "pascal", "--root", str(tmp_path)], "unknown dataset 'pascal'"),
    ):
        result = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)
        assert result.returncode != 0, args
        last = result.stderr.strip().splitlines()[-1]  # any progress bar was cleared before it
        assert last.startswith("error: ") and needle in last, result.stderr
        assert result.stderr.count("error:") == 1 and "Traceback" not in result.stderr


# ------------------------------------------------------------------------------------------------ downloader
@pytest.fixture()
def blob(tmp_path):
    data = np.random.default_rng(1).bytes(300_000)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "blob.bin").write_bytes(data)
    return data, hashlib.sha256(data).hexdigest()


def test_download_resumes_a_partial_file_with_a_range_request(tmp_path, blob):
    data, sha = blob
    dest = tmp_path / "dl" / "blob.bin"
    dest.parent.mkdir()
    (dest.parent / "blob.bin.part").write_bytes(data[:123_456])
    with serve(tmp_path / "www") as server:
        download_file(server.url("blob.bin"), dest, size=len(data), sha256=sha)
        assert [(r.range, r.status, r.sent) for r in server.requests] == [("bytes=123456-", 206, len(data) - 123_456)]
    assert dest.read_bytes() == data and not (dest.parent / "blob.bin.part").exists()


def test_a_dropped_connection_keeps_the_part_and_the_next_call_finishes(tmp_path, blob):
    data, sha = blob
    dest = tmp_path / "blob.bin"
    with serve(tmp_path / "www") as server:
        server.cut_after = 100_000
        with pytest.raises(MixreorgError, match="stopped at 100,000 bytes.*resume"):
            download_file(server.url("blob.bin"), dest, size=len(data), sha256=sha)
        assert not dest.exists() and (tmp_path / "blob.bin.part").stat().st_size == 100_000
        server.cut_after, server.ranges = None, False  # a server without Range support: start over
        download_file(server.url("blob.bin"), dest, size=len(data), sha256=sha)
        assert server.requests[-1].status == 200
    assert dest.read_bytes() == data


def test_checksum_mismatch_deletes_the_download_and_keeps_no_file(tmp_path, blob):
    data, _ = blob
    dest = tmp_path / "blob.bin"
    with serve(tmp_path / "www") as server:
        with pytest.raises(MixreorgError, match="sha256"):
            download_file(server.url("blob.bin"), dest, size=len(data), sha256="f" * 64)
        with pytest.raises(MixreorgError, match="HTTP 404"):
            download_file(server.url("nothing.bin"), dest)
    assert list(tmp_path.glob("blob.bin*")) == []


def test_extraction_is_staged_filtered_and_refuses_unsafe_paths(tmp_path):
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tf:
        for name in ("keep/x.txt", "skip/y.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tf.addfile(info, io.BytesIO(b"1"))
    extract_archive(archive, tmp_path / "out", members="keep/")
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*")) == ["keep", "keep/x.txt"]
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tf:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"1"))
    with pytest.raises(MixreorgError, match="unsafe path"):
        extract_archive(evil, tmp_path / "out2")
    assert not (tmp_path / "escape.txt").exists() and list((tmp_path / "out2").iterdir()) == []


def test_summary_reads_img2dataset_stats(tmp_path):
    for shard, (ok, bad) in enumerate([(3, 1), (0, 2)]):
        stats = {"count": ok + bad, "successes": ok, "failed_to_download": bad, "failed_to_resize": 0,
                 "status_dict": {"success": ok, "HTTP Error 404: File not found": bad}}
        (tmp_path / f"{shard:05d}_stats.json").write_text(json.dumps(stats))
    summary = read_summary(tmp_path, expected_shards=3)
    assert (summary.count, summary.successes, summary.reasons) == (6, 3, {"HTTP Error 404: File not found": 3})
    assert "rerun" in summary.lines()[-1]
