"""Inference: class-name prompts to text embeddings, dense per-class logits, the predictor object."""
