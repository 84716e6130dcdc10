"""Results files: one JSON record with every setting, and a markdown table for humans."""

from __future__ import annotations

import json
import math
from pathlib import Path

from mixreorg.utils.io import atomic_write_text


def _fmt(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def summary_rows(results: list[dict]) -> list[list[str]]:
    rows = []
    for result in results:
        metrics = result["metrics"]
        if result["task"] == "segmentation" and "objects_miou" in metrics:  # a synthetic world: objects apart
            first, second = ("mIoU", metrics["miou"]), ("objects mIoU", metrics["objects_miou"])
        elif result["task"] == "segmentation":
            first, second = ("mIoU", metrics["miou"]), ("pixel acc", metrics["pixel_accuracy"])
        else:
            first, second = ("top-1", metrics["top1"]), ("top-5", metrics["top5"])
        rows.append(
            [
                result["dataset"],
                result["settings"].get("name", "zero-shot"),
                f"{first[0]} {_fmt(first[1])}",
                f"{second[0]} {_fmt(second[1])}",
                str(result["num_images"]),
                f"{result['images_per_second']:.2f}",
            ]
        )
    return rows


def markdown_table(results: list[dict]) -> str:
    header = ["dataset", "protocol", "score", "second score", "images", "images/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows(results)]
    return "\n".join(lines)


def markdown_report(report: dict) -> str:
    """The summary table, the run's settings, and every dataset's per-class IoU."""
    subject = report["checkpoint"] or f"{report['model']} ({report.get('method')})"
    parts = [f"# mixreorg eval: {subject}", "", markdown_table(report["results"]), ""]
    parts.append(
        f"protocol `{report['protocol']}`, PAMR {report.get('pamr', False)}, multi-scale {report['multi_scale']}, "
        f"flip {report['flip']}, "
        f"device {report['device']} x{report['world_size']}, mixreorg {report['mixreorg_version']}, "
        f"{report['created']}"
    )
    if report.get("limit"):
        parts.append(f"\n**partial run**: only the first {report['limit']} images of each set")
    for name, reason in report.get("skipped", {}).items():
        parts.append(f"\nskipped {name}: {reason}")
    for result in report["results"]:
        settings = result["settings"]
        details = ", ".join(f"{key}={value}" for key, value in settings.items() if key not in ("templates",))
        parts += ["", f"## {result['dataset']}", "", details]
        if result["task"] == "segmentation":
            parts += ["", "| class | IoU |", "|---|---|"]
            parts += [f"| {name} | {_fmt(iou)} |" for name, iou in result["metrics"]["per_class_iou"].items()]
    return "\n".join(parts) + "\n"


def _json_safe(value):
    """NaN (a metric with nothing to average) becomes null: strict JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def write_report(report: dict, out: str | Path) -> tuple[Path, Path]:
    """``out`` (JSON) and ``out`` with .md, both written atomically."""
    out = Path(out)
    markdown = out.with_suffix(".md")
    atomic_write_text(out, json.dumps(_json_safe(report), indent=1, allow_nan=False) + "\n")
    atomic_write_text(markdown, markdown_report(report))
    return out, markdown


def console_table(results: list[dict]) -> str:
    header = ["dataset", "protocol", "score", "second score", "images", "images/s"]
    rows = [header] + summary_rows(results)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)
