"""Optional zero-shot evaluation every ``train.eval_every`` steps, sharded over every rank.

Each rank scores every world_size-th image and the evaluation package sums the counts over ranks, so all
ranks finish together (no rank idles at a collective into a time-out, the open_clip failure mode) and every
rank gets the same numbers. The protocol is the evaluation package's default (GroupViT's, single scale).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from mixreorg.config.schema import TrainConfig
from mixreorg.training.distributed import DistEnv

EVAL_BATCH = 8


def _evaluation_api():
    """The evaluation package's entry points, or None in a build without it."""
    try:
        from mixreorg.evaluation.classification import evaluate_classification
        from mixreorg.evaluation.protocols import resolve_protocol
        from mixreorg.evaluation.segmentation import evaluate_segmentation
    except ImportError:
        return None
    return evaluate_segmentation, evaluate_classification, resolve_protocol


def open_eval_benchmark(name: str, data_root: str):
    """The benchmark named by ``train.eval_dataset`` (raises a one-line error if it is not under the root)."""
    from mixreorg.data.benchmarks import CLASSIFICATION_BENCHMARKS, get_benchmark, get_classification_benchmark

    if name in CLASSIFICATION_BENCHMARKS:
        return get_classification_benchmark(name, data_root)
    return get_benchmark(name, data_root)


class PeriodicEval:
    def __init__(self, cfg: TrainConfig, env: DistEnv, device: torch.device) -> None:
        self.cfg, self.env, self.device = cfg, env, device
        self.api = _evaluation_api() if cfg.eval_every > 0 and cfg.eval_dataset else None
        self.benchmark = None
        if cfg.eval_every > 0 and cfg.eval_dataset:
            if self.api is None:
                warnings.warn(
                    "train.eval_every is set but this build has no mixreorg.evaluation; "
                    "training continues without periodic evaluation",
                    stacklevel=2,
                )
            else:
                self.benchmark = open_eval_benchmark(cfg.eval_dataset, cfg.eval_data_root)

    def due(self, step: int) -> bool:
        return self.benchmark is not None and step % self.cfg.eval_every == 0

    def run(self, model: nn.Module) -> dict[str, float]:
        """Headline metrics (mIoU / pixel accuracy, or top-1 / top-5) of ``model``; it is left in train mode."""
        from mixreorg.data.benchmarks import ClassificationBenchmark

        evaluate_segmentation, evaluate_classification, resolve_protocol = self.api
        common = dict(device=self.device, batch_size=EVAL_BATCH, workers=0, rank=self.env.rank,
                      world_size=self.env.world_size, progress=False)  # fmt: skip
        try:
            if isinstance(self.benchmark, ClassificationBenchmark):
                metrics = evaluate_classification(model, self.benchmark, **common).metrics
            else:
                from mixreorg.inference.backend import as_backend

                backend = as_backend(model)  # the model's own normalisation and size (GroupViT's, or its backbone's)
                protocol = resolve_protocol(
                    "groupvit",
                    self.cfg.eval_dataset,
                    self.benchmark.has_background,
                    backend.image_size,
                    published_threshold=self.benchmark.protocol.get("bg_thresh"),
                    mean=backend.mean,
                    std=backend.std,
                )
                metrics = evaluate_segmentation(model, self.benchmark, protocol, **common).metrics
        finally:
            model.train()
        return {f"{self.cfg.eval_dataset}/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
