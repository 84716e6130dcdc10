"""Unpair-Seg against GroupViT and MixReorg on the synthetic world, and Unpair-Seg's CPU latency against GroupViT.

    python benchmarks/bench_unpairseg.py                          # 3 seeds: results/unpairseg_cpu.{json,md}
    python benchmarks/bench_unpairseg.py --smoke --out /tmp/x     # a tiny setting: checks the script end to end

The paper's claim tested here: mask supervision closes most of the gap that text-only grouping leaves. Per seed, on
the same corpus (image-caption pairs and a disjoint image-mask split, both from ``mixreorg data synth``):

- GroupViT (``tiny_groupvit``) and MixReorg (``tiny``) trained ``--steps`` steps on the captions;
- Unpair-Seg on that seed's GroupViT as its frozen backbone: stage 1 (``unpairseg_tiny_masks``, ``--mask-steps``) on
  the image-mask pairs, stage 2 (``unpairseg_tiny_align``, ``--align-steps``) on the captions. Scored after stage 1
  too (the adapter still the identity: the backbone's own region embeddings);
- GroupViT again with Unpair-Seg's whole CPU time (its backbone's steps plus as many more as its two stages took,
  at GroupViT's measured speed): the equal-budget comparison;
- Unpair-Seg's two stages on that seed's MixReorg instead (``unpairseg_on_mixreorg``): masks from image-mask pairs,
  names from the better text-supervised backbone.

Scores: mIoU on the world's evaluation set under the ``groupvit`` protocol, object and background classes apart;
class-agnostic mask quality on held-out image-mask pairs (another seed's mask split): for every true instance mask,
the IoU of the best predicted mask (Unpair-Seg: the automatic masks of its inference grid, score threshold and
overlap suppression, on the whole image at the model's size; GroupViT/MixReorg: their segments, each pixel's
winning group at the protocol's scale), its mean and the share of masks found at IoU >= 0.5 (recall), objects and
backgrounds apart. Latency (``--threads`` 2, median of ``--repeats``): ``Predictor.predict`` on a 448 x 448 image
and one 448 px window's dense scores, for Unpair-Seg as the paper builds it (ConvNeXt-L backbone, 10 decoder layers,
a 20 x 20 grid; random weights, nothing downloaded) and with our GroupViT-S/16 as backbone, against GroupViT-S/16.

Every training goes through the real ``mixreorg train`` command (bench_learning.py's ``train_run``), one thread
each, ``--jobs`` seeds at once. GroupViT and MixReorg are bench_learning.py's runs of the same world and settings, so
the seeded verdict's runs (benchmarks/results/learning_appearance_cpu) are reused and its rows and these agree.
Runs and their scores are kept under ``--work`` (shared with bench_learning.py) and reused, so a rerun re-scores
nothing it has scored and retrains nothing. Differences are paired by seed (Unpair-Seg's backbone is that seed's
GroupViT): mean and 95% t interval of the per-seed differences.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results"
LABELS = ["cat", "dog", "sky"]
ROWS = ("groupvit", "mixreorg", "unpairseg_stage1", "unpairseg", "groupvit_budget", "unpairseg_on_mixreorg")
DIFFERENCES = (("unpairseg", "groupvit"), ("unpairseg", "mixreorg"), ("unpairseg", "groupvit_budget"),
               ("unpairseg", "unpairseg_stage1"), ("groupvit_budget", "groupvit"),
               ("unpairseg_on_mixreorg", "mixreorg"), ("unpairseg_on_mixreorg", "unpairseg"))


def masks_corpus(work: Path, args: argparse.Namespace, size: int, seed: int) -> Path:
    """``size`` image-mask pairs of the world (the ``masks`` split of a corpus whose other splits go unused)."""
    from mixreorg.data.synthetic import generate_corpus

    folder = work / "unpairseg" / f"masks_{args.world}_{args.image_size}px_{size}_seed{seed}"
    if not (folder / "synth.json").is_file():
        generate_corpus(folder, train_size=1, eval_size=0, mask_size=size, image_size=args.image_size, seed=seed,
                        shard_size=500, world=args.world, workers=args.threads)
    return folder


def naming(model_dir: Path, data: Path) -> dict:
    from mixreorg.checkpoint import load_model
    from mixreorg.data.benchmarks import get_benchmark
    from mixreorg.evaluation.protocols import resolve_protocol
    from mixreorg.evaluation.segmentation import evaluate_segmentation
    from mixreorg.inference.backend import as_backend

    model, _ = load_model(model_dir)
    backend = as_backend(model)
    benchmark = get_benchmark("synthetic", data)
    protocol = resolve_protocol("groupvit", "synthetic", benchmark.has_background, backend.image_size,
                                mean=backend.mean, std=backend.std)
    result = evaluate_segmentation(backend, benchmark, protocol, torch.device("cpu"), batch_size=8, workers=0,
                                   progress=False)
    metrics = result.metrics
    return {"mIoU": metrics["miou"], "objects": metrics["objects_miou"], "backgrounds": metrics["backgrounds_miou"]}


def held_out(folder: Path) -> list[tuple[np.ndarray, list[np.ndarray], list[bool]]]:
    """(image, true masks, is-object flags) of every held-out image-mask pair."""
    import io

    import webdataset as wds
    from PIL import Image

    from mixreorg.data.masks.records import decode_masks, read_record

    pairs = []
    for url in sorted((folder / "masks").glob("*.tar")):
        for sample in wds.tarfile_to_samples()([{"url": str(url)}]):
            image = np.asarray(Image.open(io.BytesIO(sample["jpg"])).convert("RGB"))
            record = read_record(sample["json"])
            masks = decode_masks(record, image.shape[:2])
            pairs.append((image, masks, [bool(a["is_object"]) for a in record["annotations"]]))
    return pairs


def best_ious(predicted: np.ndarray, truth: list[np.ndarray]) -> list[float]:
    """For each true mask, the IoU of the best of the [K, H, W] predicted masks (0 without any)."""
    if not len(predicted):
        return [0.0] * len(truth)
    flat = predicted.reshape(len(predicted), -1).astype(np.float32)
    out = []
    for mask in truth:
        target = mask.reshape(-1).astype(np.float32)
        inter = flat @ target
        union = flat.sum(1) + target.sum() - inter
        out.append(float((inter / np.maximum(union, 1)).max()))
    return out


def unpairseg_masks(model, image: np.ndarray) -> np.ndarray:
    """[K, H, W] automatic masks of the whole image at the model's size (its inference settings)."""
    import torch.nn.functional as F

    size, settings = model.image_size, model.cfg.inference
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float()
    pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
    with torch.no_grad():
        feats = model.features(model.preprocess(pixels))
        masks = model.automatic_masks(feats, settings.grid, settings.score, settings.overlap, settings.chunk)[0]
        if not len(masks.scores):
            return np.zeros((0, *image.shape[:2]), bool)
        logits = F.interpolate(masks.logits[None], size=image.shape[:2], mode="bilinear", align_corners=False)[0]
    return (logits > 0).numpy()


def mask_map(model) -> Callable[[np.ndarray], np.ndarray]:
    """Unpair-Seg's automatic masks as an [H, W] segment map: each pixel in the first (best-scored) mask covering it,
    0 where none does."""

    def view(image: np.ndarray) -> np.ndarray:
        segments = np.zeros(image.shape[:2], np.int64)
        for number, mask in enumerate(unpairseg_masks(model, image), 1):
            segments[mask & (segments == 0)] = number
        return segments

    return view


def figure(folders: dict[str, Path], data: Path, path: Path) -> None:
    """Held-out pictures, their true regions, and each row's segments or masks (one seed)."""
    from learning_groups import group_figure, segments_of

    from mixreorg.checkpoint import load_model
    from mixreorg.data.benchmarks import get_benchmark

    views = {}
    for row in ("groupvit", "mixreorg", "unpairseg", "unpairseg_on_mixreorg"):
        model, config = load_model(folders[row] / "model")
        views[row.replace("_on_", " on ")] = mask_map(model) if config.method == "unpairseg" else segments_of(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    group_figure(views, get_benchmark("synthetic", data), path)


def mask_quality(model_dir: Path, pairs: list) -> dict:
    from learning_groups import model_view

    from mixreorg.checkpoint import load_model

    model, config = load_model(model_dir)
    objects, backgrounds, counts = [], [], []
    for image, truth, is_object in pairs:
        if config.method == "unpairseg":
            predicted = unpairseg_masks(model, image)
        else:
            segments = model_view(model, image)[0]
            predicted = np.stack([segments == s for s in np.unique(segments)])
        counts.append(len(predicted))
        for iou, obj in zip(best_ious(predicted, truth), is_object, strict=True):
            (objects if obj else backgrounds).append(iou)
    return {"object_iou": 100 * statistics.fmean(objects), "object_recall": 100 * statistics.fmean(
        [iou >= 0.5 for iou in objects]), "background_iou": 100 * statistics.fmean(backgrounds),
        "background_recall": 100 * statistics.fmean([iou >= 0.5 for iou in backgrounds]),
        "masks_per_image": statistics.fmean(counts)}


def one_seed(seed: int, data: Path, masks: Path, pairs: list, args: argparse.Namespace) -> dict:
    """Every row of one seed. GroupViT and MixReorg are bench_learning.py's runs of the same settings (the seeded
    verdict's, reused when they exist); Unpair-Seg's two stages train on that GroupViT, frozen."""
    from bench_learning import run_folder, train_run, variant_overrides, variant_preset

    work = Path(args.work)

    def learning_run(variant: str, steps: int) -> tuple[Path, float]:
        run = run_folder(args.world, "tiny", variant, seed, steps, args.learning_set, work)
        timing = train_run(run, variant_preset(variant, "tiny"),
                           variant_overrides(variant, seed, steps, args.learning_set), data, 1)
        return run, timing["cpu_seconds"]

    def unpairseg_run(backbone: str) -> tuple[Path, float, Path, float]:
        """Both stages on that seed's ``backbone`` run: (stage-1 run, its CPU seconds, stage-2 run, its seconds)."""
        runs = work / "unpairseg" / f"seed{seed}"
        suffix = "" if backbone == "groupvit" else f"_{backbone}"  # the GroupViT runs keep their first names
        masks_run, align_run = runs / f"masks{suffix}", runs / f"align{suffix}"
        common = [*args.unpairseg_set, f"train.seed={seed}", "train.save_every=100000"]
        masks_seconds = train_run(masks_run, "unpairseg_tiny_masks", [
            *common, f"unpairseg.model.backbone=checkpoint:{folders[backbone] / 'model'}",
            f"train.max_steps={args.mask_steps}"], masks, 1, manifest="masks")["cpu_seconds"]
        align_seconds = train_run(align_run, "unpairseg_tiny_align", [
            *common, f"unpairseg.align.masks_checkpoint={masks_run}", f"train.max_steps={args.align_steps}"],
            data, 1)["cpu_seconds"]
        return masks_run, masks_seconds, align_run, align_seconds

    folders, seconds = {}, {}
    folders["groupvit"], seconds["groupvit"] = learning_run("groupvit", args.steps)
    folders["mixreorg"], seconds["mixreorg"] = learning_run("mixreorg", args.steps)
    folders["unpairseg_stage1"], stage1, folders["unpairseg"], stage2 = unpairseg_run("groupvit")
    seconds["unpairseg_stage1"] = seconds["groupvit"] + stage1
    seconds["unpairseg"] = seconds["unpairseg_stage1"] + stage2
    _, stage1, folders["unpairseg_on_mixreorg"], stage2 = unpairseg_run("mixreorg")
    seconds["unpairseg_on_mixreorg"] = seconds["mixreorg"] + stage1 + stage2
    # GroupViT given Unpair-Seg's whole CPU time, at GroupViT's own measured speed.
    budget = round(seconds["unpairseg"] / seconds["groupvit"] * args.steps)
    folders["groupvit_budget"], seconds["groupvit_budget"] = learning_run("groupvit", budget)
    out = {}
    for row in ROWS:
        model = folders[row] / "model"
        cached = folders[row] / f"bench_unpairseg_{data.name}_{len(pairs)}.json"  # rescoring without retraining
        if not cached.is_file():
            cached.write_text(json.dumps({**naming(model, data), **mask_quality(model, pairs)}))
        out[row] = {**json.loads(cached.read_text()), "train_seconds": seconds[row]}
        if row == "groupvit_budget":
            out[row]["steps"] = budget
    if seed == 0:
        figure(folders, data, Path(args.out) / f"{args.name}_masks.png")
    return out


def timed(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 1)


def latency(args: argparse.Namespace) -> dict:
    """Milliseconds per 448 px image (Predictor.predict) and per window, random weights."""
    from mixreorg.config import load_config
    from mixreorg.evaluation.protocols import IMAGES, resolve_protocol
    from mixreorg.inference.backend import GroupingBackend
    from mixreorg.inference.predictor import Predictor
    from mixreorg.model import build_model
    from mixreorg.unpairseg.backbones import GroupingBackbone, build_backbone
    from mixreorg.unpairseg.model import UnpairSegModel

    torch.set_num_threads(args.threads)
    size = args.latency_size
    torch.manual_seed(0)
    groupvit_cfg = load_config("tiny_groupvit" if args.smoke else "groupvit_vits16")
    groupvit = build_model(groupvit_cfg).eval()
    paper = load_config("unpairseg_convnext_large_masks").unpairseg
    paper.model.image_size, paper.inference.grid = size, args.latency_grid
    if args.smoke:
        paper.model.decoder_layers, paper.model.pixel_dim, paper.model.mask_dim = 2, 32, 32
        paper.model.mlp_dim, paper.model.heads, paper.model.adapter_dim = 64, 2, 32
    models = {"groupvit": GroupingBackend(groupvit)}
    backbone = GroupingBackbone(groupvit, [])
    backbone.requires_grad_(False)
    models["unpairseg (groupvit backbone)"] = UnpairSegModel(paper, backbone, groupvit_cfg.model).eval()
    if not args.smoke:
        convnext, _ = build_backbone(paper.model.backbone, [], pretrained=False)  # the architecture only
        models["unpairseg (convnext-l, as the paper)"] = UnpairSegModel(paper, convnext, None).eval()
    image = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    out = {}
    for name, model in models.items():
        predictor = Predictor(model, device="cpu", size=size, crop=size)
        predictor.set_labels(LABELS)
        protocol = resolve_protocol("groupvit", IMAGES, False, predictor.backend.image_size, short_side=size,
                                    crop=size, mean=predictor.backend.mean, std=predictor.backend.std)
        scorer = predictor.backend.crop_scorer(predictor._embeddings, protocol)
        window = torch.randn(1, 3, size, size)
        with torch.no_grad():
            out[name] = {"predict_ms": timed(lambda: predictor.predict(image), 1, args.repeats),  # noqa: B023
                         "window_ms": timed(lambda: scorer(window), 1, args.repeats)}  # noqa: B023
    base = out["groupvit"]["predict_ms"]
    for record in out.values():
        record["vs_groupvit"] = round(record["predict_ms"] / base, 2)
    return {"threads": args.threads, "size": size, "grid": args.latency_grid, "models": out}


def mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.1f}"
    return f"{statistics.fmean(values):.1f} +- {statistics.stdev(values):.1f}"


def paired(seeds: list[dict], a: str, b: str, key: str) -> str:
    from scipy import stats

    differences = [seed[a][key] - seed[b][key] for seed in seeds]
    mean, sd = statistics.fmean(differences), statistics.stdev(differences)
    half = stats.t.ppf(0.975, len(differences) - 1) * sd / len(differences) ** 0.5
    star = "*" if mean - half > 0 or mean + half < 0 else ""
    return f"{mean:+.1f} [{mean - half:+.1f}, {mean + half:+.1f}]{star}"


def report(record: dict) -> str:
    seeds = record["seeds"]
    rows = [row for row in ROWS if all(row in seed for seed in seeds)]

    def cell(row: str, key: str) -> str:
        return mean_sd([seed[row][key] for seed in seeds])

    lines = [
        f"# Unpair-Seg vs GroupViT and MixReorg on the synthetic world ({len(seeds)} seeds)", "",
        f"{record['settings']['note']}", "",
        "## Naming: mIoU on the evaluation set (groupvit protocol), mean +- sd over seeds", "",
        "| method | mIoU | objects | backgrounds | training CPU s |", "|---|---|---|---|---|",
        *(f"| {row} | {cell(row, 'mIoU')} | {cell(row, 'objects')} | {cell(row, 'backgrounds')} | "
          f"{cell(row, 'train_seconds')} |" for row in rows), "",
        "## Class-agnostic masks on held-out image-mask pairs: best-mask IoU and recall at IoU 0.5", "",
        "| method | object IoU | object recall | background IoU | background recall | masks per image |",
        "|---|---|---|---|---|---|",
        *(f"| {row} | {cell(row, 'object_iou')} | {cell(row, 'object_recall')} | {cell(row, 'background_iou')} | "
          f"{cell(row, 'background_recall')} | {cell(row, 'masks_per_image')} |" for row in rows), "",
    ]
    if len(seeds) > 1:
        lines += ["## Differences, paired by seed: mean [95% t interval]; * where the interval excludes 0", "",
                  "| difference | mIoU | objects | backgrounds | object IoU | object recall |",
                  "|---|---|---|---|---|---|",
                  *(f"| {a} - {b} | " + " | ".join(paired(seeds, a, b, key) for key in
                                                  ("mIoU", "objects", "backgrounds", "object_iou", "object_recall"))
                    + " |" for a, b in DIFFERENCES if a in rows and b in rows), ""]
    if record.get("latency"):
        timing = record["latency"]
        threads = f"{timing['threads']} thread{'s' if timing['threads'] > 1 else ''}"
        lines += [f"## Latency per {timing['size']} px image on {threads} "
                  f"(Unpair-Seg: a {timing['grid']} x {timing['grid']} grid), ms", "",
                  "| model | Predictor.predict | one window | vs GroupViT |", "|---|---|---|---|",
                  *(f"| {name} | {r['predict_ms']} | {r['window_ms']} | {r['vs_groupvit']}x |"
                    for name, r in timing["models"].items()), ""]
    lines += [f"Settings: {json.dumps({k: v for k, v in record['settings'].items() if k != 'note'})}", ""]
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="seeds at once, one thread each")
    parser.add_argument("--world", default="appearance", choices=("appearance", "shapes"))
    parser.add_argument("--steps", type=int, default=1500, help="GroupViT and MixReorg steps (the backbone's too)")
    parser.add_argument("--mask-steps", type=int, default=1000, help="Unpair-Seg stage-1 steps")
    parser.add_argument("--align-steps", type=int, default=300, help="Unpair-Seg stage-2 steps")
    parser.add_argument("--train-size", type=int, default=20000, help="image-caption pairs")
    parser.add_argument("--mask-size", type=int, default=4000, help="image-mask pairs")
    parser.add_argument("--eval-size", type=int, default=300, help="evaluation images and held-out mask pairs")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--latency-size", type=int, default=448)
    parser.add_argument("--latency-grid", type=int, default=20)
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for the Unpair-Seg runs")
    parser.add_argument("--learning-set", nargs="*", default=["train.torch_compile=true"], metavar="KEY=VALUE",
                        help="bench_learning.py's --set for the GroupViT and MixReorg runs (default: the verdict's)")
    parser.add_argument("--work", default=str(HERE / "work"), help="bench_learning.py's work folder, shared")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--name", default="unpairseg_cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and steps: checks the script runs")
    args = parser.parse_args(argv)
    args.unpairseg_set = list(args.set)
    if args.smoke:
        args.seeds, args.steps, args.mask_steps, args.align_steps, args.jobs = 1, 2, 2, 2, 1
        args.train_size, args.mask_size, args.eval_size, args.image_size = 16, 16, 2, 64
        args.repeats, args.latency_size, args.latency_grid, args.threads = 1, 64, 4, 1
        args.learning_set = ["train.batch_size=4", "data.workers=0"]
        args.unpairseg_set += ["train.batch_size=4", "data.workers=0"]
        args.unpairseg_set += ["unpairseg.model.pixel_dim=32", "unpairseg.model.mask_dim=32", "unpairseg.model.heads=2",
                               "unpairseg.model.mlp_dim=64", "unpairseg.model.decoder_layers=2",
                               "unpairseg.model.adapter_dim=32", "unpairseg.inference.grid=4",
                               "unpairseg.align.grid=4"]
    return args


def main(argv: list[str] | None = None) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from bench_learning import corpus

    args = parse(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    data = corpus(args.world, args.train_size, args.eval_size, args.image_size, work)
    masks = masks_corpus(work, args, args.mask_size, 0)
    pairs = held_out(masks_corpus(work, args, args.eval_size, 1))
    start = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        seeds = list(pool.map(lambda seed: one_seed(seed, data, masks, pairs, args), range(args.seeds)))
    note = (f"{args.steps} steps of GroupViT/MixReorg (bench_learning.py's runs, --set {' '.join(args.learning_set)})"
            f"; Unpair-Seg: that GroupViT frozen, {args.mask_steps} stage-1 and {args.align_steps} stage-2 steps; "
            "groupvit_budget: GroupViT trained for Unpair-Seg's total CPU seconds (backbone included) at its own "
            f"speed. {args.jobs} seed(s) at once, one thread per training.")
    record = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.processor() or "cpu",
        "settings": {**{k: v for k, v in vars(args).items() if k not in ("out", "work")}, "note": note},
        "seconds": round(time.perf_counter() - start, 1), "seeds": seeds,
        "latency": None if args.no_latency else latency(args),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / f"{args.name}.md").write_text(report(record))
    print(report(record))
    return record


if __name__ == "__main__":
    main()
