"""`mixreorg convert`: move checkpoints between our format, the official GroupViT release and transformers."""

from __future__ import annotations

from pathlib import Path

import typer


def convert(
    src: str = typer.Argument(
        ..., help="Checkpoint to read: our folder, a run folder, an official GroupViT .pth, a transformers folder, a "
        "released name (group_vit_gcc_yfcc_30e) or a Hugging Face Hub model (nvidia/groupvit-gcc-yfcc)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write (created atomically)."),
    source_format: str = typer.Option(
        "auto", "--from", help="Source format: auto, ours, official (NVlabs .pth) or hf (transformers)."
    ),
    target_format: str = typer.Option("ours", "--to", help="Target format: ours or hf (transformers GroupViTModel)."),
    preset: str = typer.Option(
        "",
        "--preset",
        help="Preset for the settings the weights do not fix (training, data, heads if unknown); "
        "default groupvit_vits16, or mixreorg_vits16 for weights with a contextual layer.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace --out if it already exists."),
) -> None:
    """Convert a checkpoint into our format (safetensors + config.yaml) or export it for transformers."""
    from mixreorg.checkpoint import convert_checkpoint
    from mixreorg.inference.checkpoints import resolve_checkpoint

    path = resolve_checkpoint(src)  # a name or Hub id: downloaded once into its cache
    report = convert_checkpoint(path, out, source_format, target_format, preset or None, overwrite=force)
    for note in report.notes:
        typer.echo(f"note: {note}")
    if report.config.method != "mixreorg":
        section = report.config.unpairseg
        typer.echo(f"converted {report.source_format} -> {report.target_format}: {report.out} ({report.config.method} "
                   f"stage {section.stage}, backbone {section.model.backbone})")
        return
    vision = report.config.model.vision
    typer.echo(
        f"converted {report.source_format} -> {report.target_format}: {report.out} "
        f"(width {vision.width}, depths {vision.depths}, groups {vision.num_output_groups}, "
        f"contextual layers {vision.contextual_layers})"
    )
