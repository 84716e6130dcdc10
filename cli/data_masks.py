"""`mixreorg data sa1b|coco-masks|recaption`: Unpair-Seg's data (the work is in mixreorg.data.masks and
mixreorg.data.recaption)."""

from __future__ import annotations

from pathlib import Path

import typer


def _report(summary: dict, what: str) -> None:
    skipped = "".join(f"; skipped {n} {why}" for why, n in sorted(summary["skipped"].items()))
    typer.echo(f"wrote {summary['samples']} {what} in {summary['shards']} shards to {summary['out']}{skipped}")
    typer.echo(f"train with: --data {summary['out']}/manifest.json")


def sa1b(
    inputs: list[Path] = typer.Argument(..., help="Meta's SA-1B links file (file_name<TAB>cdn_link), or downloaded "
                                        "sa_*.tar files, or folders of them."),
    out: Path = typer.Option(..., "--out", help="Folder to create for the shards (must not exist or be empty)."),
    download_dir: Path | None = typer.Option(
        None, "--download-dir", help="Where the links file's tars are downloaded and kept (resumable). "
        "[default: OUT's parent/sa1b_tars]"),
    limit_tars: int = typer.Option(0, "--limit-tars", help="Only the first N tars (each ~11k images, ~11 GB); 0: all."),
    max_side: int = typer.Option(1024, "--max-side", help="Scale larger images (and their masks) down to this long "
                                 "side; 0 keeps them as they are."),
    shard_size: int = typer.Option(1000, "--shard-size", help="Images per shard."),
) -> None:
    """SA-1B's image-mask pairs (JPEG + per-image JSON with COCO RLE masks) into shards for Unpair-Seg stage 1."""
    from mixreorg.data.masks.sa1b import convert_sa1b

    _report(convert_sa1b(inputs, out, download_dir, limit_tars, max_side, shard_size), "SA-1B images with masks")


def coco_masks(
    annotations: Path = typer.Option(..., "--annotations", help="instances_*.json or panoptic_*.json."),
    images: Path = typer.Option(..., "--images", help="The image folder, e.g. train2017."),
    out: Path = typer.Option(..., "--out", help="Folder to create for the shards (must not exist or be empty)."),
    panoptic_masks: Path | None = typer.Option(None, "--panoptic-masks", help="The panoptic PNG folder (panoptic "
                                               "annotations)."),
    limit: int = typer.Option(0, "--limit", help="Only the first N images; 0: all."),
    max_side: int = typer.Option(1024, "--max-side", help="Scale larger images (and masks) down to this long side."),
    shard_size: int = typer.Option(1000, "--shard-size", help="Images per shard."),
) -> None:
    """COCO instance or panoptic masks into class-agnostic image-mask shards for Unpair-Seg stage 1."""
    from mixreorg.data.masks.coco import convert_coco

    _report(convert_coco(annotations, images, out, panoptic_masks, limit, max_side, shard_size),
            "COCO images with masks")


def recaption(
    data: str = typer.Argument(..., help="Image-text shards: manifest.json, folder, brace pattern or glob."),
    out: Path = typer.Option(..., "--out", help="Folder to create for the copied shards (must not exist or be empty)."),
    model: str = typer.Option(..., "--model", help="A transformers image-to-text model: a Hub id such as "
                              "Salesforce/blip-image-captioning-large, or a folder."),
    field: str = typer.Option("recaption", "--field", help="The new captions go to FIELD.txt beside the original txt."),
    prompt: str = typer.Option("", "--prompt", help="Text prompt for models that take one (e.g. 'Describe the "
                               "image in detail.')."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", help="Images per generate call."),
    max_new_tokens: int = typer.Option(40, "--max-new-tokens", help="Longest caption, in tokens."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
) -> None:
    """Re-caption image-text shards with a vision-language model (Unpair-Seg's stage 2 takes entities from them)."""
    from mixreorg.data.recaption import recaption_shards

    summary = recaption_shards(data, out, model, field, batch_size, device, max_new_tokens, prompt)
    undecodable = f"; {summary['undecodable']} undecodable images kept without one" if summary["undecodable"] else ""
    typer.echo(f"wrote {summary['recaptioned']} new captions ({summary['field']}) into {summary['shards']} shards in "
               f"{out}{undecodable}")
    typer.echo(f"train stage 2 with: --data {out}/manifest.json unpairseg.align.caption_field={summary['field']}")
