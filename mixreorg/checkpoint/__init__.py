"""Checkpoint formats: ours (safetensors + config), the official GroupViT release, Hugging Face transformers.

Use ``load_model`` to read any of them, ``save_pretrained`` to write ours, ``convert_checkpoint`` for
format changes, and the ``*_training_checkpoint`` functions for resumable training state.
"""

from mixreorg.checkpoint.load import ConversionReport, convert_checkpoint, load_model, read_checkpoint
from mixreorg.checkpoint.ours import load_pretrained, save_pretrained
from mixreorg.checkpoint.safe_pickle import safe_torch_load
from mixreorg.checkpoint.state import unwrap_model
from mixreorg.checkpoint.training import find_latest, load_training_checkpoint, save_training_checkpoint

__all__ = [
    "ConversionReport",
    "convert_checkpoint",
    "find_latest",
    "load_model",
    "load_pretrained",
    "load_training_checkpoint",
    "read_checkpoint",
    "safe_torch_load",
    "save_pretrained",
    "save_training_checkpoint",
    "unwrap_model",
]
