"""Inference: class-name prompts to text embeddings, dense per-class logits, the predictor object."""

from mixreorg.inference.dense import DenseOutput, dense_logits, upsample_assignment, with_background
from mixreorg.inference.prompts import class_embeddings

__all__ = [
    "DenseOutput",
    "class_embeddings",
    "dense_logits",
    "upsample_assignment",
    "with_background",
]
