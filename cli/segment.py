"""`mixreorg segment`: open-vocabulary segmentation of your own images (masks, pictures, JSON)."""

from __future__ import annotations

from pathlib import Path

import typer
from mixreorg.cli.options import method_option, model_option, pamr_option


def segment(
    inputs: list[str] = typer.Argument(..., help="Images, folders (their image files) or glob patterns."),
    labels: str = typer.Option("", "--labels", "-l", help="Comma-separated labels, e.g. 'cat,dog,sky'."),
    labels_file: Path | None = typer.Option(
        None, "--labels-file", help="Text file with one label per line; synonyms after commas on its line "
        "('person, person in shirt') are averaged into it."),
    checkpoint: str | None = typer.Option(
        None, "--checkpoint", "-c",
        help="Checkpoint folder or file (ours, official GroupViT .pth, transformers folder), a released name such "
        "as group_vit_gcc_yfcc_30e, or a Hugging Face Hub model such as nvidia/groupvit-gcc-yfcc (both downloaded "
        "once and cached).",
    ),
    model: str | None = model_option(),
    method: str | None = method_option(),
    out: Path = typer.Option(Path("segments"), "--out", "-o", help="Output folder."),
    background_threshold: float | None = typer.Option(
        None, "--background-threshold",
        help="Label pixels 'background' where no label scores at least this (0-1; GroupViT uses 0.95 on VOC, "
        "the sclip protocol 0.1). "
        "Off by default: every pixel gets one of your labels.",
    ),
    protocol: str | None = typer.Option(
        None, "--protocol", show_default=False,
        help="Evaluation protocol whose settings are used, as `mixreorg eval` applies them to this model: groupvit "
        "(short side 448, window 448, stride 224 for models trained at 224 px; 2x/1x/0.5x the training size for "
        "the small presets), unified, or sclip (short side 336, window 224, stride 112, 80 templates; the "
        "training-free methods' protocol). [default: groupvit; sclip with --model]",
    ),
    pamr: bool = pamr_option(),
    size: int | None = typer.Option(None, "--size", help="Short side images are resized to (default: the protocol's)."),
    crop: int | None = typer.Option(None, "--crop", help="Sliding-window size (default: the protocol's)."),
    stride: int | None = typer.Option(None, "--stride", help="Sliding-window step (default: half the window)."),
    templates_file: Path | None = typer.Option(
        None, "--templates", help="Prompt templates, one per line with {} for the label (default: the protocol's)."
    ),
    precision: str = typer.Option(
        "fp32", "--precision", help="fp32, bf16 (CPU or GPU) or fp16 (GPU): the image encoder's autocast dtype."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    batch_size: int = typer.Option(4, "--batch-size", "-b", help="Images per step and windows per forward pass."),
    formats: str = typer.Option("mask,overlay,json", "--format", help="Outputs to write: mask (png), overlay, json."),
    points: str | None = typer.Option(
        None, "--points", help="Promptable masks (Unpair-Seg checkpoints): one mask per point, 'x,y;x,y' in the "
        "image's pixels. Labels, if given, name each mask."),
    boxes: str | None = typer.Option(
        None, "--boxes", help="Promptable masks (Unpair-Seg checkpoints): one mask per box, 'x1,y1,x2,y2;...' in "
        "the image's pixels."),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Released checkpoints' download folder (default $MIXREORG_CACHE or "
        "~/.cache/mixreorg; Hub models use the Hugging Face cache)."
    ),
) -> None:
    """Segment images into the given labels with a checkpoint or a training-free method: per image an indexed mask
    PNG, a picture and a JSON record."""
    from mixreorg.errors import MixreorgError
    from mixreorg.evaluation.run import check_model_choice
    from mixreorg.inference.inputs import (
        check_background_threshold,
        expand_inputs,
        label_groups,
        read_labels_file,
        read_templates_file,
    )
    from mixreorg.inference.outputs import check_output_dir, parse_formats, prompt_files, segment_files
    from mixreorg.inference.predictor import Predictor
    from mixreorg.inference.visual_prompts import parse_boxes, parse_points

    check_model_choice(checkpoint, model, method)
    prompted = points is not None or boxes is not None
    point_list = parse_points(points) if points is not None else []
    box_list = parse_boxes(boxes) if boxes is not None else []
    if prompted and (model or background_threshold is not None):
        raise MixreorgError("--points/--boxes take a promptable checkpoint (Unpair-Seg) and no --model or "
                            "--background-threshold (pixels outside every mask are background)")
    given: list = labels.split(",") if labels.strip() else []
    if labels_file is not None:
        given += read_labels_file(labels_file)
    if not given and not prompted:
        raise MixreorgError("no labels given; pass --labels 'cat,dog,sky' or --labels-file FILE")
    groups = label_groups(given, reserve_background=background_threshold is not None) if given else []
    check_background_threshold(background_threshold)
    templates = read_templates_file(templates_file) if templates_file is not None else None
    chosen = parse_formats(formats)
    files, problems = expand_inputs(inputs)
    if not files:
        raise MixreorgError("no images to segment: " + "; ".join(problems))
    new_folder = not out.exists()
    check_output_dir(out)
    options = dict(device=device, protocol=protocol or ("sclip" if model else "groupvit"), size=size, crop=crop,
                   stride=stride, templates=templates, precision=precision, batch_size=batch_size, pamr=pamr)
    if model:
        predictor = Predictor.from_model(model, method or "plain", **options)
    else:
        predictor = Predictor.from_checkpoint(checkpoint, cache_dir=cache_dir, **options)
    if groups:
        predictor.set_labels(groups)
    if prompted and not hasattr(predictor.backend, "prompt_masks"):
        raise MixreorgError(f"--points/--boxes need a promptable checkpoint (Unpair-Seg); {checkpoint} segments by "
                            "labels only")
    settings = predictor.protocol(background_threshold)
    typer.echo(f"settings: protocol {settings.name}, short side {settings.short_side}, window {settings.crop}, "
               f"stride {settings.stride}, {precision}, {len(settings.templates)} template(s)"
               + (", PAMR" if settings.pamr else ""), err=True)
    for problem in problems:
        typer.secho(f"skipped {problem}", err=True, fg=typer.colors.YELLOW)
    failures = len(problems)
    outcomes = (prompt_files(predictor, files, out, chosen, point_list, box_list) if prompted else
                segment_files(predictor, files, out, chosen, background_threshold, batch=batch_size))
    for outcome in outcomes:
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
