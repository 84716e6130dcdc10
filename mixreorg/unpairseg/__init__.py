"""Unpair-Seg (Wang et al., 2024): open-vocabulary segmentation from unpaired image-mask and image-text data.

Stage 1 (``masks``) trains a promptable mask generator on a frozen vision-language backbone from image-mask pairs;
stage 2 (``align``) trains a multi-scale feature adapter so that masks' region embeddings meet the text embeddings
of the caption entities they are matched to. The shared stages reach this package through ``method.UnpairSegMethod``
(training), ``model.build_unpairseg`` (checkpoints) and ``backend.UnpairSegBackend`` (eval, segment, Predictor).
This file imports nothing: the config schema reads ``config`` from here.
"""
