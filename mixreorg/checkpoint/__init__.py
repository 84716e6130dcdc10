"""Checkpoint formats: ours (safetensors + config), the official GroupViT release, Hugging Face transformers."""
