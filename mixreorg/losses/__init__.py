"""Training losses: image-text contrastive, multi-label contrastive, mixed segmentation, restoration."""
