"""The run's account of skipped training data: per epoch and in total, summed over ranks, kept in checkpoints,
and ``data.max_bad_fraction``, past which the run stops."""

from __future__ import annotations

from mixreorg.data.skipped import COUNTS, add_counts, describe, unusable, unusable_fraction
from mixreorg.training.distributed import CollectiveError, DistEnv, all_gather_objects

# Below this many samples a fraction says little (3 bad images of the first 16 are not 19% of a corpus):
# the limit is then checked only at the end of an epoch.
MIN_SAMPLES_FOR_LIMIT = 1000


def _sum_over_ranks(counts: dict[str, int], env: DistEnv) -> dict[str, int]:
    total = dict.fromkeys(COUNTS, 0)
    for part in all_gather_objects(counts, env):
        total = add_counts(total, part)
    return total


class SkippedData:
    """``done`` covers finished epochs (and, after a resume, the interrupted epoch's part before the checkpoint);
    the loader of the current epoch counts the rest. Every method is collective: all ranks call it together."""

    def __init__(self, env: DistEnv, max_fraction: float, done: dict[str, int]) -> None:
        self.env, self.max_fraction = env, max_fraction
        self.done = add_counts({}, done)
        self.loader = None  # the current epoch's TrainLoader

    def _current(self) -> dict[str, int]:
        return self.loader.skipped() if self.loader is not None else dict.fromkeys(COUNTS, 0)

    def totals(self) -> dict[str, int]:
        """The whole run so far, all ranks."""
        return add_counts(self.done, _sum_over_ranks(self._current(), self.env))

    def check(self, step: int, *, epoch_end: bool = False) -> None:
        """Stop the run (on every rank alike) when more than ``max_fraction`` of what was read was unusable."""
        if self.max_fraction >= 1.0:
            return
        counts = self.totals()
        seen = counts["samples_read"] + counts["incomplete_samples"] + counts["samples_missing"]
        if (epoch_end or seen >= MIN_SAMPLES_FOR_LIMIT) and unusable_fraction(counts) > self.max_fraction:
            raise CollectiveError(
                f"stopped at step {step}: {unusable(counts)} of {seen} samples read so far were unusable "
                f"({unusable_fraction(counts):.1%}: {describe(counts)}), more than data.max_bad_fraction="
                f"{self.max_fraction}; check the shards with 'mixreorg data verify' and train on the manifest it "
                "writes, or raise data.max_bad_fraction"
            )

    def end_epoch(self, epoch: int, complete: bool) -> tuple[dict[str, int], str]:
        """Fold the current loader into ``done``; returns its counts and the log line for them."""
        counts = _sum_over_ranks(self._current(), self.env)
        self.done = add_counts(self.done, counts)
        self.loader = None
        which = f"epoch {epoch}" if complete else f"epoch {epoch} (part)"
        skipped = f"skipped {describe(counts)}" if describe(counts) else "none skipped"
        return counts, f"{which}: {counts['samples_read']} samples read; {skipped}"


def run_summary(counts: dict[str, int]) -> str:
    skipped = describe(counts)
    return f"skipped data over the run: {skipped}" if skipped else "no training data was skipped"
