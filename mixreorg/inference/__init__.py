"""Inference: class-name prompts to text embeddings, dense per-class logits, the predictor object."""

from mixreorg.inference.dense import DenseOutput, dense_logits, upsample_assignment, with_background
from mixreorg.inference.prompts import SEGMENTATION_TEMPLATES, class_embeddings

__all__ = [
    "SEGMENTATION_TEMPLATES",
    "DenseOutput",
    "class_embeddings",
    "dense_logits",
    "upsample_assignment",
    "with_background",
]
