"""The search for a learnable regime: one seed per setting, a quick look before the seeded benchmark.

Each run trains one preset with overrides on a variant of the appearance world (its animals' sizes and counts),
then scores it on the first 200 held-out images: objects and backgrounds mIoU (`groupvit` protocol), the grouping
measure (segments per image, best-segment IoU of object and background regions; learning_groups.py) and two
naming probes (is the image embedding's top animal one of the animals present; is the best-matching segment of an
animal region named that animal). What it found, and the seeded verdict that followed, are in
benchmarks/README.md; the rows are benchmarks/results/regime_search_cpu.jsonl.

    python benchmarks/tools/regime_search.py corpus WORK/w2 --radius 0.4 0.7 --radius-of-three 0.35 0.5 \
        --counts 0.4 0.45 0.15
    python benchmarks/tools/regime_search.py run WORK/w2 --preset tiny_groupvit --steps 1500 --seed 0 \
        --name groupvit_w2 model.projection.num_layers=1
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from learning_groups import model_view, object_ids  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results" / "regime_search_cpu.jsonl"
EVAL_IMAGES = 200


def make_corpus(out: Path, radius, radius_of_three, counts) -> None:
    """The appearance world with other animal sizes and counts (one process: the change is to module settings)."""
    from mixreorg.data.synthetic import appearance, generate_corpus

    appearance.RADIUS, appearance.RADIUS_OF_THREE = tuple(radius), tuple(radius_of_three)
    appearance.COUNT_PROBABILITIES = tuple(counts)
    generate_corpus(out, train_size=20000, eval_size=300, image_size=96, seed=0, world="appearance")
    (out / "variant.json").write_text(json.dumps(
        {"radius": radius, "radius_of_three": radius_of_three, "counts": counts}) + "\n")


def naming_probes(model, benchmark) -> dict:
    """Image level: the image embedding's top animal is present. Segment level: the segment that best matches an
    animal's region is named that animal (argmax cosine over all classes), and how pure that segment is."""
    import torch
    import torch.nn.functional as F

    from mixreorg.inference.prompts import class_embeddings

    objects = sorted(object_ids(benchmark))
    names = class_embeddings(model, list(benchmark.classes))
    image_hits, segment_hits, purity, wrong = [], [], [], Counter()
    for image, label, _ in benchmark:
        segments, _ = model_view(model, image)
        with torch.no_grad():
            from mixreorg.evaluation.protocols import IMAGENET_MEAN, IMAGENET_STD
            from mixreorg.evaluation.sliding import prepare

            side = 2 * model.cfg.vision.image_size
            pixels = prepare(torch.as_tensor(np.array(image)), (side, side), IMAGENET_MEAN, IMAGENET_STD)[None]
            out = model.image_encoder(pixels)
            segment_names = (F.normalize(model.segment_embeddings(out).float(), dim=-1)[0] @ names.T).argmax(-1)
            pooled = F.normalize(model.image_projector(out.pooled).float(), dim=-1)[0]
        present = set(np.unique(label).tolist())
        image_hits.append(objects[int((pooled @ names[objects].T).argmax())] in present)
        for class_id in present & set(objects):
            region = label == class_id
            ids, overlap = np.unique(segments[region], return_counts=True)
            ious = [o / ((segments == s).sum() + region.sum() - o) for s, o in zip(ids, overlap, strict=True)]
            best = ids[int(np.argmax(ious))]
            named = int(segment_names[best])
            segment_hits.append(named == class_id)
            purity.append(overlap[int(np.argmax(ious))] / (segments == best).sum())
            if named != class_id:
                wrong["a background" if named not in objects else "another animal"] += 1
    return {"image_top_animal_present": statistics.fmean(image_hits),
            "best_segment_named_right": statistics.fmean(segment_hits),
            "best_segment_purity": statistics.fmean(purity), "misnamed_as": dict(wrong)}


def run(corpus: Path, preset: str, steps: int, seed: int, name: str, overrides: list[str], work: Path) -> dict:
    import torch

    from mixreorg.checkpoint import load_model
    from mixreorg.data.benchmarks import get_benchmark
    from mixreorg.evaluation.grouping import best_segment_iou, segment_count
    from mixreorg.evaluation.protocols import resolve_protocol
    from mixreorg.evaluation.segmentation import evaluate_segmentation
    from mixreorg.training.launch import train

    torch.set_num_threads(1)
    folder = work / name
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    train(preset, str(corpus / "train" / "manifest.json"), folder, overrides=[
        *overrides, f"train.seed={seed}", f"train.max_steps={steps}", f"train.save_every={steps}", "data.workers=0"])
    minutes = (time.perf_counter() - start) / 60
    model, _ = load_model(folder / "model")
    benchmark = get_benchmark("synthetic", corpus)
    benchmark.samples = benchmark.samples[:EVAL_IMAGES]
    protocol = resolve_protocol("groupvit", "synthetic", False, model.cfg.vision.image_size)
    metrics = evaluate_segmentation(model.eval(), benchmark, protocol, torch.device("cpu"), workers=0,
                                    progress=False).metrics
    ids, counts, regions = object_ids(benchmark), [], {True: [], False: []}
    for image, label, _ in benchmark:
        segments, _ = model_view(model, image)
        counts.append(segment_count(segments, label))
        for class_id, iou in best_segment_iou(segments, label).items():
            regions[class_id in ids].append(100 * iou)
    return {"name": name, "corpus": json.loads((corpus / "variant.json").read_text()), "preset": preset,
            "steps": steps, "seed": seed, "overrides": overrides, "mIoU": metrics["miou"],
            "objects": metrics["objects_miou"], "backgrounds": metrics["backgrounds_miou"],
            "object_regions": statistics.fmean(regions[True]), "background_regions": statistics.fmean(regions[False]),
            "segments_per_image": statistics.fmean(counts), "minutes": minutes, **naming_probes(model, benchmark)}


def report() -> str:
    """regime_search_cpu.md from the rows: the setting of each run and what it scored."""
    lines = [
        "# The regime search (one seed per row)",
        "",
        "`python benchmarks/tools/regime_search.py run CORPUS --preset P --steps N --seed S --name NAME OVERRIDES`, "
        f"on a corpus from `... corpus` (animal radius as a fraction of half the image side); first {EVAL_IMAGES} "
        "held-out images, `groupvit` protocol. objects / backgrounds: mIoU of those classes; regions: each true "
        "region's best-segment IoU. minutes: wall time on the 2-core box while other runs shared it (not a speed).",
        "",
        "| run | animal radius | preset | steps | seed | overrides | objects | object regions | segments per image "
        "| backgrounds | mIoU | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for line in RESULTS.read_text().splitlines():
        r = json.loads(line)
        radius = "-".join(str(v) for v in r["corpus"]["radius"])
        lines.append(
            f"| {r['name']} | {radius} | {r['preset']} | {r['steps']} | {r['seed']} | {' '.join(r['overrides'])} | "
            f"{r['objects']:.1f} | {r['object_regions']:.1f} | {r['segments_per_image']:.2f} | "
            f"{r['backgrounds']:.1f} | {r['mIoU']:.1f} | {r['minutes']:.0f} |"
        )
    return "\n".join(lines) + "\n"


# The rows that vary one thing from the chosen setting (animal radius 0.4-0.7, linear projector, 1500 steps,
# width 128): (panel title, x label, [(series, [(x, row name), ...])]).
TRENDS = [
    ("training steps", "steps", [
        ("GroupViT", [(1500, "gv_p1_w2"), (1500, "gv_p1_w2_s1"), (1500, "gv_p1_w2_s2"), (3000, "gv_p1_w2_3k")]),
        ("MixReorg", [(1500, "mr_p1_w2_segdetach"), (3000, "mr_p1_w2_sd_3k")]),
    ]),
    ("encoder width (GroupViT)", "width", [
        ("GroupViT", [(128, "gv_p1_w2"), (128, "gv_p1_w2_s1"), (128, "gv_p1_w2_s2"), (192, "gv_p1_w2_w192")]),
    ]),
    ("animal size (GroupViT)", "largest radius, fraction of half the side", [
        ("GroupViT", [(0.55, "gv_proj1"), (0.7, "gv_p1_w2"), (0.7, "gv_p1_w2_s1"), (0.7, "gv_p1_w2_s2"),
                      (0.85, "gv_p1_w3")]),
    ]),
]


def trends_figure(path: Path) -> None:
    """Objects mIoU and object-region IoU against steps, width and animal size, with the issue's targets."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = {r["name"]: r for r in map(json.loads, RESULTS.read_text().splitlines())}
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    for axis, (title, xlabel, series) in zip(fig.subplots(1, len(TRENDS)), TRENDS, strict=True):
        for number, (label, points) in enumerate(series):
            points = [(x, rows[name]) for x, name in points if name in rows]
            for key, marker, what in (("objects", "o", "objects mIoU"), ("object_regions", "s", "object regions")):
                axis.scatter([x for x, _ in points], [r[key] for _, r in points], marker=marker, color=f"C{number}",
                             label=f"{label}: {what}", facecolors="none" if key == "objects" else f"C{number}")
        axis.axhline(40, color="grey", linestyle=":", linewidth=1)
        axis.axhline(50, color="grey", linestyle="--", linewidth=1)
        axis.set(title=title, xlabel=xlabel, ylim=(0, 60))
        axis.legend(fontsize=7)
    fig.axes[0].set_ylabel("IoU (targets: objects 40 dotted, regions 50 dashed)")
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    corpus = commands.add_parser("corpus", help="write a variant of the appearance world")
    corpus.add_argument("out", type=Path)
    corpus.add_argument("--radius", type=float, nargs=2, default=[0.4, 0.7])
    corpus.add_argument("--radius-of-three", type=float, nargs=2, default=[0.35, 0.5])
    corpus.add_argument("--counts", type=float, nargs=3, default=[0.4, 0.45, 0.15])
    one = commands.add_parser("run", help="train one setting and score it")
    one.add_argument("corpus", type=Path)
    one.add_argument("--preset", default="tiny_groupvit")
    one.add_argument("--steps", type=int, default=1500)
    one.add_argument("--seed", type=int, default=0)
    one.add_argument("--name", required=True)
    one.add_argument("--work", type=Path, default=Path("benchmarks/work/regime_search"))
    one.add_argument("overrides", nargs="*")
    commands.add_parser("report", help="write regime_search_cpu.md and _trends.png from the rows")
    args = parser.parse_args()
    if args.command == "report":
        RESULTS.with_suffix(".md").write_text(report())
        trends_figure(RESULTS.with_name(RESULTS.stem + "_trends.png"))
        return
    if args.command == "corpus":
        make_corpus(args.out, args.radius, args.radius_of_three, args.counts)
        return
    record = run(args.corpus, args.preset, args.steps, args.seed, args.name, args.overrides, args.work)
    with open(RESULTS, "a") as results:
        results.write(json.dumps(record) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
