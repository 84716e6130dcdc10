"""Options that several commands share, defined once so that their names and help stay the same everywhere."""

from __future__ import annotations

import typer


def model_option():
    return typer.Option(
        None, "--model",
        help="Instead of a checkpoint: an open_clip model for the training-free methods, openclip:MODEL:TAG "
        "(e.g. openclip:ViT-B-16:openai; weights via the Hugging Face cache).",
    )


def method_option():
    return typer.Option(
        None, "--method",
        help="Training-free method for --model: plain, maskclip, sclip, clearclip or naclip. [default: plain]",
    )


def pamr_option():
    return typer.Option(False, "--pamr/--no-pamr",
                        help="Refine the scores with PAMR, where the protocol's lineage applies it.")
