"""Training-free open-vocabulary segmentation with a pretrained CLIP: MaskCLIP, SCLIP, ClearCLIP, NACLIP.

Any open_clip ViT (``openclip:ViT-B-16:openai``) with one of ``METHODS`` applied to its last block; the backend
plugs into the same ``eval``, ``segment`` and ``Predictor`` as GroupViT and MixReorg checkpoints:

    from mixreorg import Predictor

    predictor = Predictor.from_model("openclip:ViT-B-16:openai", method="naclip", protocol="sclip")
"""

from mixreorg.training_free.methods import METHODS, Method, get_method
from mixreorg.training_free.openclip import ModelSpec, is_model_spec, parse_model_spec

__all__ = ["METHODS", "Method", "ModelSpec", "TrainingFreeBackend", "get_method", "is_model_spec",
           "parse_model_spec"]


def __getattr__(name: str):
    if name == "TrainingFreeBackend":  # imported on first use: it pulls in torch and open_clip
        from mixreorg.training_free.backend import TrainingFreeBackend

        return TrainingFreeBackend
    raise AttributeError(f"module 'mixreorg.training_free' has no attribute {name!r}")
