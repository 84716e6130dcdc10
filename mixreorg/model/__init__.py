"""Model code: pure nn.Modules built from ``ModelConfig``; no file or network I/O here."""

from mixreorg.model.build import build_model
from mixreorg.model.mixreorg import MixReorgModel, TrainOutputs, combine_assignments
from mixreorg.model.tokenizer import get_tokenizer, tokenize
from mixreorg.model.vision_encoder import VisionEncoder, VisionOutput

__all__ = [
    "MixReorgModel",
    "TrainOutputs",
    "VisionEncoder",
    "VisionOutput",
    "build_model",
    "combine_assignments",
    "get_tokenizer",
    "tokenize",
]
