"""``python -m mixreorg.training.worker``: what torchrun starts on every rank (plain argparse, no typer).

    python -m mixreorg.training.worker --config tiny --data shards/ --out runs/a [--resume auto] [key=value ...]
"""

from __future__ import annotations

import argparse
import os
import sys

from mixreorg.errors import MixreorgError
from mixreorg.training.distributed import CollectiveError
from mixreorg.training.launch import resolve_run_config
from mixreorg.training.loop import run_training


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mixreorg.training.worker", description=__doc__)
    parser.add_argument("--config", required=True, help="preset name or YAML file")
    parser.add_argument("--data", default="", help="shards, folder, brace pattern or manifest.json")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--resume", default=None, help="'auto' or a checkpoint path")
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))
    try:
        try:
            cfg, data = resolve_run_config(args.config, args.data, args.overrides)
        except MixreorgError as exc:
            raise CollectiveError(str(exc)) from exc
        result = run_training(cfg, data, args.out, args.resume)
    except MixreorgError as exc:
        # Bad input fails every rank alike (one line is enough); later failures may be rank-specific.
        if rank == 0:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        elif not isinstance(exc, CollectiveError):
            print(f"error: [rank {rank}] {exc}", file=sys.stderr, flush=True)
        return 2
    if result.stopped_by:
        return 143 if result.stopped_by == "SIGTERM" else 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
