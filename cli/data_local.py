"""`mixreorg data synth|shard|verify`: local corpora and shard checks (the work is in mixreorg.data)."""

from __future__ import annotations

from pathlib import Path

import typer


def synth(
    out: Path = typer.Option(..., "--out", help="Folder to create (must not exist or be empty)."),
    train_size: int = typer.Option(10000, help="Training image-caption pairs."),
    eval_size: int = typer.Option(500, help="Evaluation images with exact label maps."),
    image_size: int = typer.Option(96, help="Image side in pixels."),
    seed: int = typer.Option(0, help="Seed; the same seed gives byte-identical output."),
    shard_size: int = typer.Option(1000, help="Training samples per webdataset shard."),
    world: str = typer.Option(
        "appearance", help="appearance: animals known by their coats (what tiny models learn); shapes: outlines "
        "(the hard variant, byte-identical to earlier releases for a seed)."
    ),
    workers: int = typer.Option(1, help="Processes drawing training images (the output is the same for any number)."),
    mask_size: int | None = typer.Option(
        None, help="Image-mask pairs (every object's and background's exact mask, no caption; other images than the "
        "training pairs) written to OUT/masks for Unpair-Seg's first stage; 0 writes none. [default: a fifth of "
        "--train-size]"),
) -> None:
    """Draw the synthetic corpus: objects on textured backgrounds with captions, a labelled eval set, and image-mask
    pairs."""
    from mixreorg.data.synthetic import generate_corpus

    mask_size = train_size // 5 if mask_size is None else mask_size
    summary = generate_corpus(out, train_size, eval_size, image_size, seed, shard_size, world, workers, mask_size)
    masks = f", {mask_size} image-mask pairs to {out}/masks (manifest {out}/masks/manifest.json)" if mask_size else ""
    typer.echo(
        f"wrote {summary['train_samples']} training pairs of the {world} world in {summary['train_shards']} shards "
        f"to {out}/train "
        f"(manifest {out}/train/manifest.json){masks} and {summary['eval_images']} labelled images to {out}/eval "
        f"in {summary['seconds']:.1f}s ({summary['images_per_second']:.0f} images/s)"
    )


def shard(
    src: Path = typer.Argument(..., help="Folder of images with same-name .txt captions, or a .csv/.tsv/.parquet."),
    out: Path = typer.Option(..., "--out", help="Folder to create for the shards (must not exist or be empty)."),
    shard_size: int = typer.Option(1000, help="Samples per shard."),
    image_column: str = typer.Option("path", help="Table column with image paths (relative to the table)."),
    caption_column: str = typer.Option("caption", help="Table column with captions."),
) -> None:
    """Pack your own image-caption pairs into webdataset shards with a manifest."""
    from mixreorg.data.shards import shard_user_data

    summary = shard_user_data(src, out, shard_size, image_column, caption_column)
    skipped = "".join(f"; skipped {n} {why}" for why, n in summary["skipped"].items())
    typer.echo(f"wrote {summary['samples']} samples in {summary['shards']} shards to {out}{skipped}")
    typer.echo(f"train with: --data {out}/manifest.json")


def verify(
    shards: str = typer.Argument(..., help="Shard folder, path, brace pattern (dir/{00000..00009}.tar) or glob."),
    out: Path | None = typer.Option(
        None, "--out", help="Manifest to write (default: manifest.json in the shards' folder)."
    ),
    workers: int = typer.Option(1, help="Processes checking shards in parallel."),
) -> None:
    """Count samples per shard, find truncated shards and undecodable images, and write the manifest."""
    from mixreorg.data.verify import verify_shards

    report = verify_shards(shards, out, workers)
    typer.echo(f"{len(report['shards'])} good shards with {report['total']} usable samples")
    for bad in report["bad_shards"]:
        typer.echo(f"bad shard (left out): {bad['url']}: {bad['reason']} ({bad['readable_samples']} samples read)")
    if report["bad_samples"]:
        first = report["bad_samples"][0]
        typer.echo(
            f"{len(report['bad_samples'])} samples skipped (undecodable or incomplete), "
            f"first: {first['key']} in {first['url']}: {first['reason']}"
        )
    typer.echo(f"manifest: {report['manifest']}")
