"""Training losses: image-text contrastive, multi-label contrastive, mixed segmentation, restoration."""

from mixreorg.losses.contrastive import image_text_contrastive, multi_label_contrastive
from mixreorg.losses.gather import gather_features, world
from mixreorg.losses.segmentation import mixed_segmentation_loss
from mixreorg.losses.total import compute_losses

__all__ = [
    "compute_losses",
    "gather_features",
    "image_text_contrastive",
    "mixed_segmentation_loss",
    "multi_label_contrastive",
    "world",
]
