"""`mixreorg eval`: zero-shot segmentation benchmarks and ImageNet classification under named protocols."""

from __future__ import annotations

from pathlib import Path

import typer
from mixreorg.cli.options import method_option, model_option, pamr_option


def evaluate(
    ctx: typer.Context,
    dataset: str = typer.Option(
        ..., "--dataset", "-d",
        help="voc, voc20, context, context59, coco-object, coco-stuff, ade20k, cityscapes, synthetic, imagenet, "
        "or all (every set found under the data root).",
    ),
    checkpoint: str | None = typer.Option(
        None, "--checkpoint", "-c",
        help="Our folder, a run folder, an official GroupViT .pth, a transformers folder, or a released name.",
    ),
    model: str | None = model_option(),
    method: str | None = method_option(),
    data_root: Path = typer.Option(..., "--data-root", help="Folder holding the benchmarks (mmsegmentation layout)."),
    protocol: str | None = typer.Option(
        None, "--protocol", show_default=False,
        help="groupvit: NVlabs settings and per-dataset background thresholds (GroupViT-family papers); "
        "unified: TCL's 8-benchmark settings with one fixed background score; sclip: SCLIP's settings (short side "
        "336, windows 224/112, 80 templates, class names with synonyms, background probability threshold). "
        "[default: groupvit; sclip with --model]",
    ),
    pamr: bool = pamr_option(),
    multi_scale: bool = typer.Option(False, "--multi-scale", help="Average scales 0.5-1.75 (mmseg ratios)."),
    flip: bool = typer.Option(False, "--flip", help="Also average horizontally flipped inputs."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", help="Images per step and windows per forward pass."),
    gpus: int = typer.Option(
        1, "--gpus", help="Processes via torchrun: one per GPU (CPU processes with --device cpu)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    precision: str = typer.Option(
        "fp32", "--precision", help="fp32, bf16 (CPU or GPU) or fp16 (GPU): the image encoder's autocast dtype."
    ),
    out: Path = typer.Option(Path("results.json"), "--out", "-o", help="Results JSON (a markdown twin beside it)."),
    workers: int | None = typer.Option(
        None, "--workers", help="Data-loading processes per evaluating process. \\[default: the CPU cores, shared "
        "among the --gpus processes]"),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N images of each set (quick checks)."),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Named checkpoints' download folder (default $MIXREORG_CACHE or ~/.cache/mixreorg)."
    ),
) -> None:
    """Evaluate a checkpoint or a training-free method: mIoU (segmentation) or top-1/top-5 (imagenet), with every
    setting recorded."""
    from mixreorg.errors import MixreorgError
    from mixreorg.evaluation.report import console_table, write_report
    from mixreorg.evaluation.run import EvalRequest, run_evaluation
    from mixreorg.inference.outputs import check_output_dir

    if ctx.args:
        raise MixreorgError(f"unexpected arguments: {' '.join(ctx.args)}; see `mixreorg eval --help`")
    request = EvalRequest(
        dataset=dataset, checkpoint=checkpoint, model=model, method=method, pamr=pamr, data_root=str(data_root),
        protocol=protocol or ("sclip" if model else "groupvit"), multi_scale=multi_scale,
        flip=flip, batch_size=batch_size, gpus=gpus, device=device, precision=precision,
        workers=workers, limit=limit,
        cache_dir=str(cache_dir) if cache_dir else None,
    )
    check_output_dir(out.parent)  # fail now, not after the evaluation
    report = run_evaluation(request)
    for name, reason in report["skipped"].items():
        typer.echo(f"skipped {name}: {reason}", err=True)
    json_path, markdown_path = write_report(report, out)
    typer.echo(console_table(report["results"]))
    typer.echo(f"results: {json_path} and {markdown_path}")
