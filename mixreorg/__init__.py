"""MixReorg and GroupViT: open-world semantic segmentation learned from image-text pairs."""

__version__ = "0.1.0"
