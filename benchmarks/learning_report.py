"""Tables and the seed-backed verdict of the learning benchmark (bench_learning.py writes the records).

Each variant's runs are summarised as mean +- sd over seeds. A comparison of two variants gives the difference of
their means with a 95% Welch interval (unequal variances, Welch-Satterthwaite degrees of freedom); a difference
is called one only when that interval excludes zero.
"""

from __future__ import annotations

import math
import statistics

from scipy import stats

# (key in a run's record, column title, digits): naming, then grouping (learning_groups.py).
NAMING = (("mIoU", "mIoU", 1), ("objects", "objects IoU", 1), ("backgrounds", "backgrounds IoU", 1))
GROUPING = (
    ("segments_per_image", "segments per image", 2),
    ("object_region_iou", "object regions IoU", 1),
    ("background_region_iou", "background regions IoU", 1),
    ("object_background_cosine", "object-bg token cosine", 2),
)
VERDICT_KEYS = (("objects", "objects IoU"), ("object_region_iou", "object regions IoU"), ("mIoU", "mIoU"),
                ("segments_per_image", "segments per image"))


def metric(run: dict, key: str) -> float | None:
    """A run's value of ``key``: a naming score, or a grouping score under run["grouping"]."""
    if key in run:
        return run[key]
    return run.get("grouping", {}).get(key)


def mean_sd(values: list[float], digits: int = 1) -> str:
    if not values:
        return "-"
    if len(values) < 2:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} +- {statistics.stdev(values):.{digits}f}"


def welch_interval(a: list[float], b: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its ``level`` Welch interval (needs two or more values on each side)."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    difference = statistics.fmean(a) - statistics.fmean(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return difference, difference, difference
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.5 + level / 2, df) * se
    return difference, difference - half, difference + half


def _values(entry: dict, key: str) -> list[float]:
    return [v for v in (metric(run, key) for run in entry["runs"]) if v is not None]


def verdict_rows(results: dict, pairs: list[tuple[str, str]]) -> list[str]:
    """Markdown rows 'a - b' per verdict metric: difference [95% interval], and whether the interval excludes 0."""
    lines = []
    for a, b in pairs:
        if a not in results or b not in results:
            continue
        cells = []
        for key, _ in VERDICT_KEYS:
            va, vb = _values(results[a], key), _values(results[b], key)
            if len(va) < 2 or len(vb) < 2:
                cells.append("-")
                continue
            difference, low, high = welch_interval(va, vb)
            digits = 2 if key == "segments_per_image" else 1
            bold = "**" if low > 0 or high < 0 else ""
            cells.append(f"{bold}{difference:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]{bold}")
        lines.append(f"| {a} - {b} | {len(results[a]['runs'])} / {len(results[b]['runs'])} | {' | '.join(cells)} |")
    return lines


def curve_table(results: dict) -> list[str]:
    """Objects mIoU at each periodic evaluation (mean +- sd over seeds), for the runs that have them."""
    curves = {name: [run["curve"] for run in entry["runs"] if run.get("curve")] for name, entry in results.items()}
    curves = {name: runs for name, runs in curves.items() if runs}
    if not curves:
        return []
    steps = sorted({int(step) for runs in curves.values() for curve in runs for step in curve})
    lines = ["", "Objects mIoU on the evaluation set during training (mean +- sd over seeds):", "",
             "| model | " + " | ".join(f"step {step}" for step in steps) + " |", "|---|" + "---|" * len(steps)]
    for name, runs in curves.items():
        cells = [mean_sd([curve[str(step)] for curve in runs if str(step) in curve]) for step in steps]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines


def write_report(record: dict) -> str:
    """The markdown report of a results record: naming and grouping per variant, then the verdict."""
    lines = [
        f"# Learning benchmark, {record['world']} world ({record['device']})",
        "",
        f"`{record['command']}`",
        "",
        f"{record['steps']} steps of batch {record['batch_size']} per run; synthetic eval set ({record['eval_images']} "
        f"held-out images), {record['protocol']}. mean +- sd over seeds. objects / backgrounds: mean IoU of "
        "those classes (named right). Grouping, names aside: segments per image (the pixels' winning groups), each "
        "true region's best-segment IoU, and the mean cosine of object and background patch tokens where stage 1 "
        "ends (learning_groups.py).",
        *(["", record["note"]] if record.get("note") else []),
        "",
        "| model | runs | minutes per run | " + " | ".join(title for _, title, _ in NAMING + GROUPING) + " |",
        "|---|---|---|" + "---|" * (len(NAMING) + len(GROUPING)),
    ]
    for name, scores in record.get("grouping_floors", {}).items():
        cells = ["-"] * len(NAMING) + [mean_sd([scores[k]], d) if k in scores else "-" for k, _, d in GROUPING]
        lines.append(f"| {name} | 1 | - | {' | '.join(cells)} |")
    for name, entry in record["results"].items():
        minutes = [r["seconds"] / 60 for r in entry["runs"] if "seconds" in r]
        cells = [mean_sd(_values(entry, key), digits) for key, _, digits in NAMING + GROUPING]
        lines.append(f"| {name} | {len(entry['runs'])} | {mean_sd(minutes)} | {' | '.join(cells)} |")
    lines += curve_table(record["results"])
    verdict = verdict_rows(record["results"], [tuple(pair) for pair in record.get("comparisons", [])])
    if verdict:
        lines += [
            "",
            "Differences of means with their 95% Welch interval; **bold** where the interval excludes zero (a "
            "difference the seeds cannot overturn).",
            "",
            "| comparison | runs | " + " | ".join(title for _, title in VERDICT_KEYS) + " |",
            "|---|---|" + "---|" * len(VERDICT_KEYS),
            *verdict,
        ]
    return "\n".join(lines) + "\n"
