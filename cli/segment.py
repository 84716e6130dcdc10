"""`mixreorg segment`: open-vocabulary segmentation of your own images (masks, overlays, JSON)."""

from __future__ import annotations

from pathlib import Path

import typer


def segment(
    inputs: list[str] = typer.Argument(..., help="Images, folders (their image files) or glob patterns."),
    labels: str = typer.Option("", "--labels", "-l", help="Comma-separated labels, e.g. 'cat,dog,sky'."),
    labels_file: Path | None = typer.Option(None, "--labels-file", help="Text file with one label per line."),
    checkpoint: str = typer.Option(
        ..., "--checkpoint", "-c",
        help="Checkpoint folder or file (ours, official GroupViT .pth, transformers folder) or a released name "
        "such as group_vit_gcc_yfcc_30e (downloaded once into the cache).",
    ),
    out: Path = typer.Option(Path("segments"), "--out", "-o", help="Output folder."),
    background_threshold: float | None = typer.Option(
        None, "--background-threshold",
        help="Label pixels 'background' where no label scores at least this (0-1; GroupViT uses 0.95 on VOC). "
        "Off by default: every pixel gets one of your labels.",
    ),
    size: int = typer.Option(448, "--size", help="Short side the image is resized to (long side at most 2048)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    formats: str = typer.Option("png,overlay,json", "--format", help="Outputs to write: png, overlay, json."),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Named checkpoints' download folder (default $MIXREORG_CACHE or ~/.cache/mixreorg)."
    ),
) -> None:
    """Segment images into the given labels: per image an indexed mask PNG, an overlay with legend, a JSON."""
    from mixreorg.errors import MixreorgError
    from mixreorg.inference.predictor import (
        Predictor,
        check_background_threshold,
        expand_inputs,
        parse_labels,
        read_labels_file,
    )
    from mixreorg.inference.visualize import check_output_dir, parse_formats, segment_files

    given = labels.split(",") if labels.strip() else []
    if labels_file is not None:
        given += read_labels_file(labels_file)
    if not given:
        raise MixreorgError("no labels given; pass --labels 'cat,dog,sky' or --labels-file FILE")
    names = parse_labels(given, reserve_background=background_threshold is not None)
    check_background_threshold(background_threshold)
    chosen = parse_formats(formats)
    files, problems = expand_inputs(inputs)
    if not files:
        raise MixreorgError("no images to segment: " + "; ".join(problems))
    new_folder = not out.exists()
    check_output_dir(out)
    predictor = Predictor.from_checkpoint(checkpoint, device=device, size=size, cache_dir=cache_dir)
    predictor.set_labels(names)
    for problem in problems:
        typer.secho(f"skipped {problem}", err=True, fg=typer.colors.YELLOW)
    failures = len(problems)
    for outcome in segment_files(predictor, files, out, chosen, background_threshold):
        if outcome.ok:
            typer.echo(outcome.message)
        else:
            failures += 1
            typer.secho(outcome.message, err=True, fg=typer.colors.YELLOW)
    if failures:
        if new_folder and not any(out.iterdir()):
            out.rmdir()  # every input failed: leave no empty folder behind
        typer.secho(f"error: {failures} of {len(files) + len(problems)} inputs could not be segmented", err=True,
                    fg=typer.colors.RED)
        raise typer.Exit(1)
