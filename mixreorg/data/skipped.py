"""What the training loader skipped, by kind: counted once per epoch in every DataLoader worker, totalled in
shared memory, read by the training loop for its log, ``metrics.jsonl`` and ``status.json``."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Mapping

log = logging.getLogger("mixreorg.data.loader")

# Kinds of skipped data and how a log line names one and several of them.
KINDS = {
    "undecodable_images": ("undecodable image", "undecodable images"),
    # image-mask data: a mask that does not decode, has another size than its image, or a sample with no mask
    "unusable_masks": ("sample with unusable masks", "samples with unusable masks"),
    "incomplete_samples": ("sample without an image or a caption", "samples without an image or a caption"),
    "unreadable_shards": ("unreadable shard", "unreadable shards"),
    "empty_shards": ("empty shard", "empty shards"),
    "short_shards": ("shard shorter than its manifest says", "shards shorter than their manifest says"),
}
# Samples that went into batches, and those a manifest promised that empty, short or unreadable shards lacked.
COUNTS = ("samples_read", *KINDS, "samples_missing")
WARNINGS_PER_KIND = 3  # per loader (epoch); the totals come in the epoch summary


def unusable(counts: Mapping[str, int]) -> int:
    """Samples lost to bad data: undecodable or incomplete ones, and those missing from bad shards."""
    lost = ("undecodable_images", "unusable_masks", "incomplete_samples", "samples_missing")
    return sum(counts.get(kind, 0) for kind in lost)


def unusable_fraction(counts: Mapping[str, int]) -> float:
    lost = unusable(counts)
    seen = counts.get("samples_read", 0) + counts.get("incomplete_samples", 0) + counts.get("samples_missing", 0)
    return lost / seen if seen else 0.0


def describe(counts: Mapping[str, int]) -> str:
    """'3 undecodable images, 1 empty shard, 16 samples the manifest lists missing', or '' for nothing."""
    parts = [f"{counts[k]} {names[counts[k] > 1]}" for k, names in KINDS.items() if counts.get(k)]
    if counts.get("samples_missing"):
        parts.append(f"{counts['samples_missing']} samples the manifest lists missing")
    return ", ".join(parts)


def add_counts(total: Mapping[str, int], more: Mapping[str, int]) -> dict[str, int]:
    return {k: int(total.get(k, 0)) + int(more.get(k, 0)) for k in COUNTS}


class SkipCounters:
    """Counts shared by the workers of one loader (shared memory, inherited or pickled into each worker)."""

    def __init__(self) -> None:
        self._values = multiprocessing.Array("q", len(COUNTS))
        self._warned = multiprocessing.Array("i", len(KINDS))

    def add(self, kind: str, amount: int = 1, why: str = "") -> None:
        with self._values.get_lock():
            self._values[COUNTS.index(kind)] += amount
            if kind in KINDS and why:
                index = list(KINDS).index(kind)
                self._warned[index] += 1
                if self._warned[index] <= WARNINGS_PER_KIND:
                    more = " (further ones are counted, not shown)" if self._warned[index] == WARNINGS_PER_KIND else ""
                    log.warning("skipped: %s%s", why, more)

    def snapshot(self) -> dict[str, int]:
        with self._values.get_lock():
            return dict(zip(COUNTS, self._values[:], strict=True))


class ShardTally:
    """One worker's view of one epoch: each shard and each bad sample is counted once, however often a
    worker's later passes (which top up the epoch's last batches) read it again."""

    def __init__(self, counters: SkipCounters, declared: Mapping[str, int]) -> None:
        self.counters, self.declared = counters, declared
        self._shards: set[str] = set()
        self._samples: set[tuple[str, str]] = set()

    def batch_read(self, samples: int) -> None:
        """Samples that went into a batch (an undecodable one included: it is replaced there)."""
        self.counters.add("samples_read", samples)

    def bad_sample(self, kind: str, url: str, key: str, why: str) -> None:
        if (url, key) not in self._samples:
            self._samples.add((url, key))
            self.counters.add(kind, 1, f"{kind.replace('_', ' ')[:-1]} {key} in {url}: {why}")

    def shard_read(self, url: str, samples: int, present: int, error: BaseException | None) -> None:
        """Called after a shard was read to its end (or to the error that stopped it): ``samples`` usable ones
        of the ``present`` ones it held (the rest were incomplete and counted as such)."""
        if url in self._shards:
            return
        self._shards.add(url)
        declared = self.declared.get(url)
        missing = max(0, declared - present) if declared is not None else 0
        if missing:
            self.counters.add("samples_missing", missing)
        promised = f" of the {declared} its manifest lists" if declared is not None else ""
        if error is not None:
            why = f"unreadable shard {url} after {samples} samples{promised}: {error!r}"
            self.counters.add("unreadable_shards", 1, why)
        elif samples == 0:
            self.counters.add("empty_shards", 1, f"empty shard {url}: no sample with an image and a caption{promised}")
        elif missing:
            self.counters.add("short_shards", 1, f"shard {url} gave {samples} samples{promised}")
