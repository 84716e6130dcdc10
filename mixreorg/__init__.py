"""MixReorg and GroupViT: open-world semantic segmentation learned from image-text pairs.

    from mixreorg import Predictor
"""

__version__ = "0.1.0"
__all__ = ["Predictor", "__version__"]


def __getattr__(name: str):
    # Imported on first use, so `import mixreorg` (and the CLI's start) does not load torch.
    if name == "Predictor":
        from mixreorg.inference.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'mixreorg' has no attribute {name!r}")
