"""GroupViT's contrastive losses in the official code's form (spec 3.2-3.3): mean of both directions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mixreorg.losses.gather import gather_features, world


def image_text_contrastive(image: Tensor, text: Tensor, scale: Tensor, with_grad: bool = True) -> Tensor:
    """InfoNCE between [B, D] image and caption embeddings against the whole (global) batch.

    Returns 0.5 * (image->text + text->image); the papers write the sum, the official code the mean.
    """
    image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    rank, _ = world()
    all_image, all_text = gather_features(image, with_grad), gather_features(text, with_grad)
    labels = torch.arange(image.shape[0], device=image.device) + rank * image.shape[0]
    loss_image = F.cross_entropy(scale * image @ all_text.t(), labels)
    loss_text = F.cross_entropy(scale * text @ all_image.t(), labels)
    return 0.5 * (loss_image + loss_text)


def multi_label_contrastive(
    image: Tensor, prompts: Tensor, scale: Tensor, with_grad: bool = True, words: Tensor | None = None
) -> Tensor:
    """Image [B, D] against its K noun prompts [B, K, D] (spec 3.3, the code's soft-target form).

    image->prompts: cross-entropy with 1/K on each of the image's own prompts (a mean of logs, as the
    official code computes it, not the paper's log of a sum); prompts->image: plain cross-entropy.

    ``words`` [B, K] (ids of the prompts' words, -1 for caption padding) switches on same-word positives:
    a prompt of a word an image also has is a target for that image, in both directions, with the targets
    of each row spread evenly. GroupViT counts another image's "a photo of a dog" as a negative for every
    other dog picture, which a small vocabulary (the synthetic corpus) turns into contradictory targets.
    """
    batch, k, _ = prompts.shape
    image = F.normalize(image, dim=-1)
    prompts = F.normalize(prompts, dim=-1).reshape(batch * k, -1)
    rank, _ = world()
    all_image, all_prompts = gather_features(image, with_grad), gather_features(prompts, with_grad)
    own = torch.arange(batch, device=image.device) + rank * batch
    log_probs = F.log_softmax(scale * image @ all_prompts.t(), dim=-1)
    if words is not None:
        all_words = gather_features(words, with_grad=False)
        global_images = torch.arange(all_words.shape[0], device=image.device)
        # [B, B_global * K]: global prompt column c is a target for local image i.
        own_column = own[:, None] == global_images.repeat_interleave(k)
        image_targets = _shares_word(words, all_words.flatten()) | own_column
        # [B * K, B_global]: local prompt (j, c) is a target for global image i.
        own_image = own.repeat_interleave(k)[:, None] == global_images
        prompt_targets = _shares_word(all_words, words.flatten()).t() | own_image
        loss_image = _soft_cross_entropy(log_probs, image_targets)
        prompt_log_probs = F.log_softmax(scale * prompts @ all_image.t(), dim=-1)
        loss_prompts = _soft_cross_entropy(prompt_log_probs, prompt_targets)
        return 0.5 * (loss_image + loss_prompts)
    own_prompt_columns = own.unsqueeze(1) * k + torch.arange(k, device=image.device)
    loss_image = -log_probs.gather(1, own_prompt_columns).mean()
    loss_prompts = F.cross_entropy(scale * prompts @ all_image.t(), own.repeat_interleave(k))
    return 0.5 * (loss_image + loss_prompts)


def _shares_word(rows: Tensor, column_words: Tensor) -> Tensor:
    """[R, C]: row r's words [R, K] include column c's word (padding, -1, matches nothing)."""
    return (rows[:, :, None] == column_words[None, None]).any(1) & (column_words >= 0)[None]


def _soft_cross_entropy(log_probs: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy against targets spread evenly over each row's True entries."""
    targets = targets.to(log_probs.dtype)
    return -((log_probs * targets).sum(1) / targets.sum(1)).mean()
