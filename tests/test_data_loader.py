"""The training loader: exact epochs over ranks x workers, exact resume, clear layout errors, corrupt images."""

from __future__ import annotations

import functools
import http.server
import io
import threading
from collections import Counter

import pytest
import torch
from PIL import Image

from mixreorg.data.loader import build_train_loader
from mixreorg.data.nouns import word_id
from mixreorg.data.shards import write_shards
from mixreorg.data.verify import write_manifest
from mixreorg.errors import MixreorgError
from mixreorg.model import tokenize

CONTEXT = 16


def _jpeg(i: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 32), ((37 * i) % 256, (11 * i) % 256, 90)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _caption(i: int) -> str:
    return f"photo number {i} of a red star on sand"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """8 shards x 10 samples whose captions say which sample they are."""
    root = tmp_path_factory.mktemp("loader_shards")
    samples = [{"__key__": f"{i:06d}", "jpg": _jpeg(i), "txt": _caption(i)} for i in range(80)]
    entries = write_shards(samples, root, shard_size=10)
    write_manifest(root / "manifest.json", entries)
    return root


@functools.lru_cache(maxsize=1)
def _caption_ids() -> dict[tuple, int]:
    tokens = tokenize([_caption(i) for i in range(80)], CONTEXT)
    return {tuple(row.tolist()): i for i, row in enumerate(tokens)}


def _ids(texts: torch.Tensor) -> list[int]:
    return [_caption_ids()[tuple(row.tolist())] for row in texts[:, 0]]


def _loader(spec, **kw):
    options = dict(batch_size=5, workers=2, image_size=24, context_length=CONTEXT, multi_label=0,
                   augmentation="light", crop_scale_min=0.5, shuffle_buffer=20, seed=3)
    options.update(kw)
    return build_train_loader(str(spec), **options)


def test_two_ranks_two_workers_see_every_sample_once_per_epoch(shards):
    torch.set_num_threads(1)
    seen = Counter()
    orders = []
    for rank in range(2):
        loader = _loader(shards / "manifest.json", rank=rank, world_size=2)
        assert loader.steps_per_epoch == 8 == len(loader)
        batches = list(loader)
        assert len(batches) == 8
        for images, texts, words in batches:
            assert images.shape == (5, 3, 24, 24) and images.dtype == torch.uint8  # normalised by the trainer
            assert images.is_contiguous(memory_format=torch.channels_last)
            assert texts.shape == (5, 1, CONTEXT) and texts.dtype == torch.long
            assert words.shape == (5, 0)
            seen.update(_ids(texts))
        orders.append([i for _, texts, _ in batches for i in _ids(texts)])
    assert sorted(seen) == list(range(80)) and set(seen.values()) == {1}
    # the next epoch reshuffles shards and samples
    next_loader = _loader(shards / "manifest.json", rank=0, world_size=2, epoch=1)
    next_epoch = [i for _, texts, _ in next_loader for i in _ids(texts)]
    assert sorted(next_epoch) != sorted(orders[0]) or next_epoch != orders[0]


def test_resume_replays_the_tail_of_the_epoch_exactly(shards):
    torch.set_num_threads(1)
    common = dict(rank=1, world_size=2, workers=2, augmentation="groupvit", multi_label=3, epoch=2)
    full = list(_loader(shards / "manifest.json", **common))
    for start in (3, 4):
        if start == 3:
            resumed = _loader(shards / "manifest.json", start_batch=start, **common)
        else:  # the same through set_epoch on a loader built for another epoch
            resumed = _loader(shards / "manifest.json", **dict(common, epoch=0))
            resumed.set_epoch(2, start_batch=start)
        assert len(resumed) == len(full) - start
        tail = list(resumed)
        assert len(tail) == len(full) - start
        for (images, texts, words), (want_images, want_texts, want_words) in zip(tail, full[start:], strict=True):
            assert torch.equal(texts, want_texts) and torch.equal(words, want_words)
            assert torch.equal(images, want_images)
    assert full[0][1].shape == (5, 4, CONTEXT)  # caption + 3 noun prompts
    assert full[0][2].shape == (5, 3) and full[0][2].dtype == torch.long  # the prompts' word ids
    nouns = {word_id(word): word for word in ("photo", "number", "star", "sand")}  # four nouns, so no padding
    for _, _, words in full:
        assert set(words.flatten().tolist()) <= set(nouns)
        assert all(len(set(row)) == 3 for row in words.tolist())  # drawn without replacement
    again = list(_loader(shards / "manifest.json", **common))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(again, full, strict=True))
    with pytest.raises(MixreorgError, match="outside the epoch"):
        resumed.set_epoch(3, start_batch=len(full) + 1)


def test_too_few_shards_for_workers_and_ranks_is_an_error(shards):
    spec = f"{shards}/{{00000..00002}}.tar"
    with pytest.raises(MixreorgError, match=r"3 shards cannot feed 2 workers x 2 ranks = 4 readers"):
        _loader(spec, num_samples=30, rank=0, world_size=2)
    resampled = _loader(spec, num_samples=30, rank=0, world_size=2, resampled=True, workers=0)
    assert resampled.steps_per_epoch == 3 and len(list(resampled)) == 3
    with pytest.raises(MixreorgError, match="number of training samples is unknown"):
        _loader(spec)


def test_corrupt_images_are_counted_and_replaced(tmp_path):
    samples = [{"__key__": f"{i:06d}", "jpg": _jpeg(i), "txt": _caption(i)} for i in range(12)]
    samples[4]["jpg"] = b"\xff\xd8 broken"
    entries = write_shards(samples, tmp_path, shard_size=6)
    write_manifest(tmp_path / "manifest.json", entries)
    loader = _loader(tmp_path / "manifest.json", workers=0, batch_size=4, shuffle_buffer=0)
    batches = list(loader)
    assert len(batches) == 3 and all(images.shape[0] == 4 for images, *_ in batches)
    skipped = loader.skipped()
    assert skipped["undecodable_images"] == 1 and skipped["unreadable_shards"] == skipped["samples_missing"] == 0
    assert skipped["samples_read"] == 12  # the broken one included
    assert 4 not in [i for _, texts, _ in batches for i in _ids(texts)]


def test_streams_shards_over_http_and_pipe(shards):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shards))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        spec = f"http://127.0.0.1:{server.server_address[1]}/{{00000..00007}}.tar"
        seen = [i for _, texts, _ in _loader(spec, num_samples=80, workers=0, batch_size=8) for i in _ids(texts)]
    finally:
        server.shutdown()
    assert sorted(seen) == list(range(80))
    piped = _loader(f"pipe:cat {shards}/{{00000..00007}}.tar", num_samples=80, workers=0, batch_size=8)
    assert sorted(i for _, texts, _ in piped for i in _ids(texts)) == list(range(80))
