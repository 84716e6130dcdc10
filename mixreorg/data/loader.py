"""The training loader: webdataset shards -> (images, texts, prompt words) batches that are deterministic and resumable.

Each rank reads its own shards (split by rank, then by DataLoader worker, explicitly: no environment lookups),
batches are formed from raw tar samples before anything is decoded, and every random choice (shard order,
shuffle buffer, crops, erased boxes, prompt words) is seeded from (seed, epoch, rank, worker, batch). So the
stream is a pure function of those numbers, and ``start_batch=n`` replays batches n, n+1, ... of the uninterrupted
epoch after skipping the first n raw batches without decoding them. Images leave the workers as uint8 (a quarter
of the bytes of float) and are normalised by the consumer on its device (timm's PrefetchLoader idea).

Steps per epoch follow open_clip: ``ceil(num_samples / (batch * world))`` batches per rank, rounded up to a
multiple of the workers, and every worker yields exactly its share. A worker that runs out of shards starts
over on them in a new order, so every rank runs the same number of steps (DDP never waits on a missing batch).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import itertools
import math
import random
import signal
from collections.abc import Iterable, Iterator

import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mixreorg.data.nouns import make_word_prompts, word_id
from mixreorg.data.skipped import ShardTally, SkipCounters
from mixreorg.data.transforms import TrainAugmentation, build_train_transform, pixel_batch
from mixreorg.data.verify import IMAGE_KEYS, TEXT_KEYS, resolve_shards
from mixreorg.errors import MixreorgError
from mixreorg.model import tokenize

# images [B, 3, S, S] uint8 (channels-last memory; the trainer normalises them on its device with
# transforms.normalize_pixels), texts [B, 1 + K, L] (caption then K noun prompts), prompt word ids [B, K] (-1: padding)
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from any tuple, identical in every process (unlike ``hash``)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclasses.dataclass(frozen=True)
class StreamSpec:
    """Everything that determines one rank's batches; pickled into each DataLoader worker."""

    urls: tuple[str, ...]
    batch_size: int
    rank: int
    world_size: int
    workers: int
    seed: int
    epoch: int
    batches_per_worker: int
    start_batch: int
    resampled: bool
    shuffle_buffer: int
    image_size: int
    augmentation: str
    crop_scale_min: float
    context_length: int
    multi_label: int
    declared: tuple[int, ...] = ()  # each shard's sample count from the manifest (empty: unknown)
    # Settings of another method's batches, as (name, value) pairs its stream class reads (see ``stream``).
    options: tuple[tuple[str, object], ...] = ()

    @property
    def readers(self) -> int:
        return max(self.workers, 1)


@dataclasses.dataclass(frozen=True)
class WorkerFailure:
    """A MixreorgError met inside a worker, sent on as a value: the main process raises it as one line
    (torch would re-raise it with the worker's traceback folded into the message)."""

    message: str


class ShardBatchStream(IterableDataset):
    """One rank's batches; inside DataLoader worker ``i`` it plays logical worker ``(i + start_batch) % workers``.

    Another method's batches come from a subclass: it names the fields a usable sample has besides its image
    (``fields``) and forms batches from raw samples in ``_collate``; reading, sharding, shuffling, seeding and
    skip accounting stay here."""

    fields: tuple[str, ...] = TEXT_KEYS  # a sample is usable when it has an image and one of these (a caption)

    def __init__(self, spec: StreamSpec, counters: SkipCounters) -> None:
        self.spec, self.counters = spec, counters

    def __iter__(self) -> Iterator[Batch | WorkerFailure]:
        try:
            yield from self._batches()
        except MixreorgError as exc:
            yield WorkerFailure(str(exc))

    def _batches(self) -> Iterator[Batch]:
        spec = self.spec
        tally = ShardTally(self.counters, dict(zip(spec.urls, spec.declared, strict=True)) if spec.declared else {})
        info = get_worker_info()
        # DataLoader hands out batches round-robin from worker 0, so after skipping n batches the worker that
        # must deliver batch n is the one in position 0: rotate the roles by n.
        logical = ((info.id if info else 0) + spec.start_batch) % spec.readers
        skip = max(0, -(-(spec.start_batch - logical) // spec.readers))
        batches = _chunks(self._raw_samples(logical, tally), spec.batch_size)
        for _ in range(skip):
            next(batches)
        transform = build_train_transform(spec.augmentation, spec.image_size, spec.crop_scale_min)
        for index in range(skip, spec.batches_per_worker):
            seed = derive_seed(spec.seed, spec.epoch, spec.rank, logical, index)
            yield self._collate(next(batches), seed, transform, tally)

    def _raw_samples(self, logical: int, tally: ShardTally) -> Iterator[dict]:
        """This reader's endless stream of undecoded samples that have an image and a caption.

        Epoch mode reads its shards in passes (the first pass is the epoch proper; later ones only top up
        the last batches) and flushes the shuffle buffer at the end of each pass, so no sample of a pass
        is held back while another pass's samples are served.
        """
        spec = self.spec
        produced = [0]

        def read(urls: Iterable[str]) -> Iterator[dict]:
            for url in urls:  # shard by shard, so that what is skipped is known per shard
                for sample in _shard_samples(url, tally, self.fields):
                    produced[0] += 1
                    yield sample

        def shuffled(samples: Iterator[dict], *key: int) -> Iterator[dict]:
            if spec.shuffle_buffer <= 1:
                return samples
            rng = random.Random(derive_seed("buffer", spec.seed, spec.epoch, spec.rank, logical, *key))
            return wds.shuffle(spec.shuffle_buffer, min(spec.shuffle_buffer, 1000), rng=rng)(samples)

        def nothing_usable() -> MixreorgError:
            return MixreorgError(
                f"rank {spec.rank} worker {logical} read no usable sample from its shards "
                f"(e.g. {spec.urls[0]}); check them with 'mixreorg data verify'"
            )

        if spec.resampled:
            rng = random.Random(derive_seed("resample", spec.seed, spec.epoch, spec.rank, logical))

            def draws() -> Iterator[str]:
                silent = 0  # shards in a row that gave nothing: all of them bad would spin forever
                while silent <= 2 * len(spec.urls) + 10:
                    before = produced[0]
                    yield rng.choice(spec.urls)
                    silent = silent + 1 if produced[0] == before else 0
                raise nothing_usable()

            yield from shuffled(read(draws()))
            return
        order = list(spec.urls)
        random.Random(derive_seed("shards", spec.seed, spec.epoch)).shuffle(order)
        mine = order[spec.rank :: spec.world_size][logical :: spec.readers]
        for repeat in itertools.count():
            if repeat:
                random.Random(derive_seed("repeat", spec.seed, spec.epoch, spec.rank, logical, repeat)).shuffle(mine)
            before = produced[0]
            yield from shuffled(read(mine), repeat)
            if produced[0] == before:
                raise nothing_usable()

    def _decode(self, sample: dict, tally: ShardTally) -> tuple[Image.Image, str] | None:
        rgb = decode_image(sample, tally)
        if rgb is None:
            return None
        text = next(sample[k] for k in self.fields if k in sample)
        return rgb, text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)

    def _collate(self, raw: list[dict], seed: int, transform: TrainAugmentation, tally: ShardTally) -> Batch:
        spec = self.spec
        decoded = [self._decode(sample, tally) for sample in raw]
        tally.batch_read(len(raw))
        decoded = fill_bad(decoded, raw)  # an undecodable image takes the place of a good one of the batch
        prompt_rng = random.Random(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            # made in shared memory inside a worker, as torch's own collate does, so that handing the batch
            # to the main process does not copy it again
            out = pixel_batch(len(raw), spec.image_size, shared=get_worker_info() is not None)
            images = transform.batch([image for image, _ in decoded], out=out)
        captions = [caption for _, caption in decoded]
        tokens = torch.empty((len(raw), 1 + spec.multi_label, spec.context_length), dtype=torch.long)
        words = torch.empty((len(raw), spec.multi_label), dtype=torch.long)
        tokens[:, 0] = tokenize(captions, spec.context_length)
        for row, caption in enumerate(captions if spec.multi_label else []):
            for column, (word, prompt) in enumerate(make_word_prompts(caption, prompt_rng, spec.multi_label)):
                tokens[row, column + 1] = _prompt_tokens(prompt, spec.context_length)
                words[row, column] = word_id(word)
        return images, tokens, words


def decode_image(sample: dict, tally: ShardTally) -> Image.Image | None:
    """The sample's RGB image, or None (counted in ``tally``) when its bytes do not decode."""
    data = next(sample[k] for k in IMAGE_KEYS if k in sample)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image if image.mode == "RGB" else image.convert("RGB")
    except Exception as exn:  # PIL raises OSError, SyntaxError, ValueError... for bad bytes
        tally.bad_sample("undecodable_images", str(sample.get("__url__")), str(sample.get("__key__")), str(exn))
        return None


def fill_bad(decoded: list, raw: list[dict], what: str = "image") -> list:
    """A batch's decoded samples with each undecodable one (None) replaced by a good one of the same batch, so batch
    sizes and the raw sample -> batch mapping stay fixed, which keeps resuming exact."""
    good = [d for d in decoded if d is not None]
    if not good:
        raise MixreorgError(
            f"no {what} of a whole batch of {len(raw)} could be decoded (first: {raw[0].get('__url__')}); "
            "check the shards with 'mixreorg data verify'"
        )
    return [d if d is not None else good[i % len(good)] for i, d in enumerate(decoded)]


@functools.lru_cache(maxsize=16384)
def _prompt_tokens(prompt: str, context_length: int) -> torch.Tensor:
    """Noun prompts repeat (80 templates x common words): tokenizing each string once saves most of the cost."""
    return tokenize([prompt], context_length)[0]


def _shard_samples(url: str, tally: ShardTally, fields: tuple[str, ...] = TEXT_KEYS) -> Iterator[dict]:
    """The samples of one shard that have an image and one of ``fields``; what the shard lacks goes to ``tally``."""
    errors: list[BaseException] = []

    def skip_rest(exn: BaseException) -> bool:
        errors.append(exn)
        return True  # webdataset's handler protocol: go on (past a read error the shard simply ends)

    samples = present = 0
    for sample in wds.tarfile_to_samples(handler=skip_rest)([{"url": url}]):
        present += 1
        if any(k in sample for k in IMAGE_KEYS) and any(k in sample for k in fields):
            samples += 1
            yield sample
        else:
            missing = "caption" if fields == TEXT_KEYS else " or ".join(fields)
            tally.bad_sample("incomplete_samples", url, sample.get("__key__", "?"), f"image or {missing} missing")
    tally.shard_read(url, samples, present, errors[0] if errors else None)


def _chunks(samples: Iterator[dict], size: int) -> Iterator[list[dict]]:
    while True:
        yield [next(samples) for _ in range(size)]


class TrainLoader:
    """Iterable over one epoch of ``Batch`` (images, texts, prompt word ids) for this rank.

    ``steps_per_epoch`` is the full epoch; ``len(loader)`` counts what is left after ``start_batch``.
    ``set_epoch(e, start_batch)`` moves to another epoch without rebuilding (workers start fresh per epoch).
    """

    def __init__(self, spec: StreamSpec, num_samples: int, stream: type[ShardBatchStream] = ShardBatchStream) -> None:
        self.spec, self.num_samples, self.stream = spec, num_samples, stream
        self.counters = SkipCounters()

    @property
    def steps_per_epoch(self) -> int:
        return self.spec.batches_per_worker * self.spec.readers

    def __len__(self) -> int:
        return self.steps_per_epoch - self.spec.start_batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        _check_start(start_batch, self.steps_per_epoch)
        self.spec = dataclasses.replace(self.spec, epoch=epoch, start_batch=start_batch)

    def skipped(self) -> dict[str, int]:
        """What the workers skipped so far, by kind (``data.skipped.COUNTS``): an undecodable image is replaced
        by another image of its batch; the rest of an unreadable shard is skipped."""
        return self.counters.snapshot()

    def __iter__(self) -> BatchIterator:
        loader = DataLoader(
            self.stream(self.spec, self.counters),
            batch_size=None,
            shuffle=False,
            num_workers=self.spec.workers,
            persistent_workers=False,
            worker_init_fn=_ignore_stop_signals,
        )
        return BatchIterator(iter(loader))


class BatchIterator:
    """The batches of one epoch. Any error, and ``close()``, stops the worker processes at once.

    The workers ignore SIGTERM (see ``_ignore_stop_signals``), so they must never be left to Python's exit:
    torch skips its worker shutdown while the interpreter exits, and multiprocessing then waits forever for
    workers that ignore the SIGTERM it sends them. So the training loop closes this iterator on every path.
    """

    def __init__(self, iterator: Iterator) -> None:
        self._iterator = iterator

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> Batch:
        try:
            item = next(self._iterator)
        except StopIteration:
            raise
        except BaseException:
            self.close()
            raise
        if isinstance(item, WorkerFailure):
            self.close()
            raise MixreorgError(item.message)
        return item

    def close(self) -> None:
        # torch's own shutdown: a stop message to every worker, a join with a timeout. A worker stuck
        # past that timeout ignores the SIGTERM torch then sends, so it gets SIGKILL.
        workers = list(getattr(self._iterator, "_workers", ()))
        shutdown = getattr(self._iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        for worker in workers:
            if worker.is_alive():
                worker.kill()
                worker.join(timeout=5)


def _check_start(start_batch: int, steps: int) -> None:
    if not 0 <= start_batch <= steps:
        raise MixreorgError(f"start_batch {start_batch} is outside the epoch's {steps} steps")


def _ignore_stop_signals(_worker_id: int) -> None:
    # torchrun and SLURM signal the whole process group on preemption. Workers must outlive the signal so the
    # training process can finish its step and write a checkpoint; they end when their parent does.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_train_loader(
    spec: str,
    *,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    workers: int = 4,
    seed: int = 0,
    epoch: int = 0,
    image_size: int = 224,
    context_length: int = 77,
    multi_label: int = 3,
    augmentation: str = "groupvit",
    crop_scale_min: float = 0.08,
    shuffle_buffer: int = 10000,
    resampled: bool = False,
    num_samples: int = 0,
    start_batch: int = 0,
    stream: type[ShardBatchStream] = ShardBatchStream,
    options: dict | None = None,
) -> TrainLoader:
    """The training loader for this rank over the shards in ``spec`` (paths, folders, brace patterns, globs,
    URLs, ``pipe:`` commands or ``data verify`` manifests, joined with ``::``).

    ``num_samples`` sizes the epoch (0 = the manifest's total). In epoch mode (``resampled=False``) there must
    be at least ``max(workers, 1) * world_size`` shards. ``stream`` forms the batches (image-caption batches by
    default; another method's subclass reads its ``options``).
    """
    shards = resolve_shards(spec)
    if num_samples <= 0:
        if shards.total is None:
            raise MixreorgError(
                "the number of training samples is unknown: pass data.train_num_samples, or give a manifest "
                "written by 'mixreorg data verify' (or 'data shard' / 'data synth') as the training data"
            )
        num_samples = shards.total
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size or workers < 0:
        raise MixreorgError(
            f"invalid loader layout: batch {batch_size}, rank {rank} of {world_size}, {workers} workers"
        )
    readers = max(workers, 1)
    if not resampled and len(shards.urls) < readers * world_size:
        raise MixreorgError(
            f"{len(shards.urls)} shards cannot feed {readers} workers x {world_size} ranks = {readers * world_size} "
            "readers in epoch mode; use at least that many shards (re-shard with a smaller --shard-size), "
            "fewer data.workers, or data.resampled: true"
        )
    num_batches = math.ceil(num_samples / (batch_size * world_size))
    layout = StreamSpec(
        urls=tuple(shards.urls), declared=tuple(shards.sizes or ()),
        batch_size=batch_size, rank=rank, world_size=world_size, workers=workers,
        seed=seed, epoch=epoch, batches_per_worker=math.ceil(num_batches / readers), start_batch=start_batch,
        resampled=resampled, shuffle_buffer=shuffle_buffer, image_size=image_size, augmentation=augmentation,
        crop_scale_min=crop_scale_min, context_length=context_length, multi_label=multi_label,
        options=tuple(sorted((options or {}).items())),
    )
    build_train_transform(augmentation, image_size, crop_scale_min)  # fail here, not inside a worker
    loader = TrainLoader(layout, num_samples, stream)
    _check_start(start_batch, loader.steps_per_epoch)
    return loader
