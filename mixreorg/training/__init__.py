"""Pretraining: the distributed loop, optimizer and schedule, checkpoints, logging."""
