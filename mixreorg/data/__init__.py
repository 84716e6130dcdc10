"""Data: web-scale image-text shards, the synthetic corpus, the training loader and the benchmark datasets."""
