"""Pretraining: the distributed loop, optimizer and schedule, checkpoints, logging.

Entry points: ``mixreorg.training.launch.train`` (what ``mixreorg train`` calls: validate, then train here or
start torchrun), ``mixreorg.training.loop.run_training`` (one rank's run), ``python -m mixreorg.training.worker``
(what torchrun starts), and ``mixreorg.training.trainer.Trainer`` (one optimizer step on given batches).
"""
