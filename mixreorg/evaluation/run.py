"""``mixreorg eval`` end to end: resolve the model (a checkpoint, or an open_clip model with a training-free method)
and the datasets, evaluate (here or over N processes started with torchrun), and return one report that records
every setting."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from mixreorg.errors import MixreorgError

SEGMENTATION_SETS = (
    "voc", "voc20", "context", "context59", "coco-object", "coco-stuff", "ade20k", "cityscapes", "synthetic",
)
CLASSIFICATION_SETS = ("imagenet",)
DATASET_CHOICES = SEGMENTATION_SETS + CLASSIFICATION_SETS + ("all",)


@dataclass
class EvalRequest:
    dataset: str
    checkpoint: str | None
    data_root: str
    protocol: str = "groupvit"
    model: str | None = None  # openclip:MODEL:TAG, instead of a checkpoint
    method: str | None = None  # a training-free method for ``model`` (default plain)
    pamr: bool = False
    multi_scale: bool = False
    flip: bool = False
    batch_size: int = 8
    gpus: int = 1
    device: str = "auto"
    precision: str = "fp32"
    workers: int | None = None  # decoding processes per evaluating process; None: default_workers
    limit: int | None = None
    cache_dir: str | None = None
    progress: bool = True
    # Filled in by the launcher for its workers: the resolved checkpoint path and the chosen sets.
    checkpoint_path: str | None = None
    datasets: list[str] | None = None


def default_workers(processes: int = 1) -> int:
    """Decoding processes per evaluating process: this machine's cores, shared among the processes."""
    return max(1, (os.cpu_count() or 1) // max(1, processes))


def _open(name: str, root: str):
    if name in CLASSIFICATION_SETS:
        from mixreorg.data.benchmarks import get_classification_benchmark

        return get_classification_benchmark(name, root)
    from mixreorg.data.benchmarks import get_benchmark

    nested = Path(root).expanduser() / "synthetic"
    if name == "synthetic" and nested.is_dir():  # a data root may hold the synthetic corpus beside the real sets
        try:
            return get_benchmark(name, nested)
        except MixreorgError:
            pass
    return get_benchmark(name, root)


def choose_datasets(request: EvalRequest) -> tuple[list[str], dict[str, str]]:
    """The sets to run and, for ``all``, the ones skipped with the reason (missing or wrong layout)."""
    if request.dataset not in DATASET_CHOICES:
        raise MixreorgError(f"unknown dataset '{request.dataset}'; choose one of: {', '.join(DATASET_CHOICES)}")
    if not Path(request.data_root).expanduser().is_dir():
        raise MixreorgError(f"data root {request.data_root} does not exist; pass --data-root DIR holding the sets")
    if request.dataset != "all":
        _open(request.dataset, request.data_root)  # fails here, with the expected file named, before any work
        return [request.dataset], {}
    chosen, skipped = [], {}
    for name in SEGMENTATION_SETS + CLASSIFICATION_SETS:
        if name in CLASSIFICATION_SETS and request.model:
            skipped[name] = "classification is evaluated for checkpoints only"
            continue
        try:
            _open(name, request.data_root)
            chosen.append(name)
        except MixreorgError as exc:
            skipped[name] = str(exc)
    if not chosen:
        raise MixreorgError(
            f"no benchmark found under {request.data_root}; fetch one with `mixreorg data fetch NAME --root DIR`"
        )
    return chosen, skipped


def pick_device(name: str, world_size: int, local_rank: int = 0) -> torch.device:
    from mixreorg.inference.predictor import resolve_device

    device = resolve_device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if world_size > count:
            raise MixreorgError(f"--gpus {world_size} asks for more GPUs than the {count} visible")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def load_backend(request: EvalRequest, device: torch.device):
    """(backend, model name, checkpoint path or None) for the request's checkpoint or open_clip model."""
    if request.model:
        from mixreorg.training_free.backend import TrainingFreeBackend

        backend = TrainingFreeBackend.from_spec(request.model, request.method or "plain", device)
        return backend, backend.name, None
    from mixreorg.inference.backend import as_backend
    from mixreorg.inference.checkpoints import resolve_checkpoint
    from mixreorg.inference.predictor import load_for_inference

    path = request.checkpoint_path or str(resolve_checkpoint(request.checkpoint, cache_dir=request.cache_dir))
    model, config = load_for_inference(path)
    name = config.model.name if config.method == "mixreorg" else config.method
    return as_backend(model).to(device), name, path


def evaluate_here(request: EvalRequest, rank: int = 0, world_size: int = 1, local_rank: int = 0) -> dict:
    """Run every chosen set in this process (one rank of ``world_size``); the report is complete on every rank."""
    from mixreorg.evaluation.classification import evaluate_classification
    from mixreorg.evaluation.protocols import resolve_protocol
    from mixreorg.evaluation.segmentation import evaluate_segmentation
    from mixreorg.utils.environment import device_name

    device = pick_device(request.device, world_size, local_rank)
    datasets, skipped = (request.datasets, {}) if request.datasets else choose_datasets(request)
    backend, model_name, path = load_backend(request, device)
    from mixreorg.inference.backend import GroupingBackend

    if not request.model and not isinstance(backend, GroupingBackend):  # a checkpoint of another method
        if request.dataset in CLASSIFICATION_SETS:
            raise MixreorgError(f"--dataset {request.dataset} is classification, evaluated for GroupViT/MixReorg "
                                f"checkpoints; {model_name} checkpoints are evaluated on the segmentation sets")
        skipped.update({name: "classification is evaluated for GroupViT/MixReorg checkpoints only"
                        for name in datasets if name in CLASSIFICATION_SETS})
        datasets = [name for name in datasets if name not in CLASSIFICATION_SETS]
    results = []
    workers = default_workers(world_size) if request.workers is None else request.workers
    common = dict(device=device, batch_size=request.batch_size, workers=workers, limit=request.limit,
                  rank=rank, world_size=world_size, progress=request.progress)
    for name in datasets:
        benchmark = _open(name, request.data_root)
        if name in CLASSIFICATION_SETS:
            result = evaluate_classification(backend.model, benchmark, **common)
        else:
            protocol = resolve_protocol(
                request.protocol,
                name,
                benchmark.has_background,
                backend.image_size,
                multi_scale=request.multi_scale,
                flip=request.flip,
                published_threshold=benchmark.protocol.get("bg_thresh"),
                pamr=request.pamr,
                settings=getattr(benchmark, "protocols", {}).get(request.protocol),
                mean=backend.mean,
                std=backend.std,
            )
            result = evaluate_segmentation(backend, benchmark, protocol, precision=request.precision, **common)
        results.append(result.as_dict())
    from mixreorg import __version__

    return {
        "mixreorg_version": __version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "checkpoint": request.checkpoint,
        "checkpoint_path": str(path) if path else None,
        "model": model_name,
        "method": (request.method or "plain") if request.model else None,
        "protocol": request.protocol,
        "pamr": request.pamr,
        "multi_scale": request.multi_scale,
        "flip": request.flip,
        "batch_size": request.batch_size,
        "device": device_name() if device.type == "cuda" else "cpu",
        "world_size": world_size,
        "precision": request.precision + (" (TF32 matmuls on CUDA)" if device.type == "cuda" else ""),
        "data_root": str(request.data_root),
        "limit": request.limit,
        "skipped": skipped,
        "results": results,
    }


def launch_distributed(request: EvalRequest) -> dict:
    """Start ``request.gpus`` processes with torchrun; rank 0 hands back the merged report."""
    from mixreorg.inference.checkpoints import resolve_checkpoint

    datasets, skipped = choose_datasets(request)
    # Download (if named) once here, so the ranks do not race for the same cache file.
    if request.model:
        from mixreorg.training_free.backend import TrainingFreeBackend

        TrainingFreeBackend.from_spec(request.model, request.method or "plain")  # weights into the Hub cache
        path = None
    else:
        path = str(resolve_checkpoint(request.checkpoint, cache_dir=request.cache_dir))
    with tempfile.TemporaryDirectory(prefix="mixreorg-eval-") as tmp:
        job = dataclasses.replace(request, checkpoint_path=path, datasets=datasets)
        request_file, report_file = Path(tmp) / "request.json", Path(tmp) / "report.json"
        request_file.write_text(json.dumps({"request": dataclasses.asdict(job), "report_path": str(report_file)}))
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={request.gpus}",
            "-m", "mixreorg.evaluation.worker", str(request_file),
        ]
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // request.gpus)))
        completed = subprocess.run(command, env=env, check=False)
        if completed.returncode != 0 or not report_file.is_file():
            raise MixreorgError(
                f"the distributed evaluation over {request.gpus} processes failed (exit {completed.returncode}); "
                "see the messages above"
            )
        report = json.loads(report_file.read_text())
    report["skipped"] = skipped
    return report


def check_model_choice(checkpoint: str | None, model: str | None, method: str | None) -> None:
    """Exactly one of a checkpoint and an open_clip model; a method only with a model; names checked early."""
    if bool(checkpoint) == bool(model):
        raise MixreorgError("give either --checkpoint (a GroupViT/MixReorg model) or --model (an open_clip model such "
                            "as openclip:ViT-B-16:openai for the training-free methods), not " +
                            ("both" if checkpoint else "neither"))
    if method and not model:
        raise MixreorgError(f"--method {method} applies to --model (an open_clip model, e.g. "
                            "openclip:ViT-B-16:openai); a checkpoint is segmented by its own grouping")
    if model:
        from mixreorg.training_free import get_method, parse_model_spec

        get_method(method or "plain")
        parse_model_spec(model)


def run_evaluation(request: EvalRequest) -> dict:
    from mixreorg.evaluation.protocols import PROTOCOL_NAMES

    check_model_choice(request.checkpoint, request.model, request.method)
    if request.model and request.dataset in CLASSIFICATION_SETS:
        raise MixreorgError(f"--dataset {request.dataset} is classification; the training-free methods are evaluated "
                            "on the segmentation sets (or --dataset all, which then skips it)")
    if request.protocol not in PROTOCOL_NAMES:
        raise MixreorgError(f"unknown protocol '{request.protocol}'; choose one of: {', '.join(PROTOCOL_NAMES)}")
    if request.gpus < 1:
        raise MixreorgError("--gpus must be at least 1")
    if request.batch_size < 1:
        raise MixreorgError("--batch-size must be at least 1")
    if request.workers is not None and request.workers < 0:
        raise MixreorgError("--workers must be 0 (decode in the evaluating process) or more")
    from mixreorg.inference.backend import check_precision
    from mixreorg.inference.predictor import resolve_device

    check_precision(request.precision, resolve_device(request.device))
    if request.gpus > 1:
        if resolve_device(request.device).type == "cuda" and request.gpus > torch.cuda.device_count():
            raise MixreorgError(
                f"--gpus {request.gpus} asks for more GPUs than the {torch.cuda.device_count()} visible; "
                "lower --gpus, or add --device cpu for CPU processes"
            )
        return launch_distributed(request)
    return evaluate_here(request)
