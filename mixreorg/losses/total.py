"""The total training loss: GroupViT's two contrastive losses, plus MixReorg's segmentation and restoration."""

from __future__ import annotations

from torch import Tensor

from mixreorg.config.schema import LossConfig
from mixreorg.losses.contrastive import image_text_contrastive, multi_label_contrastive
from mixreorg.losses.segmentation import mixed_segmentation_loss
from mixreorg.model.mixreorg import TrainOutputs


def _contrastive_pair(
    image: Tensor, out: TrainOutputs, cfg: LossConfig, words: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    itc = image_text_contrastive(image, out.text, out.logit_scale, cfg.gather_with_grad)
    if out.prompts is None or cfg.multi_label == 0:
        return itc, None
    if cfg.multi_label_positives == "own":
        words = None
    elif words is None:
        raise ValueError("loss.multi_label_positives=same_word needs the prompt word ids of the batch")
    return itc, multi_label_contrastive(image, out.prompts, out.multi_label_logit_scale, cfg.gather_with_grad, words)


def compute_losses(
    out: TrainOutputs, cfg: LossConfig, group_size: int = 1, words: Tensor | None = None
) -> dict[str, Tensor]:
    """Weighted terms and their sum under ``loss``; every key ending in ``_loss`` is a logged term, and the
    model's diagnostics (segments per image, restored cosine) ride along for the log.

    ``words`` [B, K] are the prompt word ids from the loader (used when ``multi_label_positives=same_word``).

    GroupViT: contrastive + multi-label on the original branch (paper's L_o). MixReorg adds the mixed
    segmentation loss (L_seg) and the same two contrastive losses on the restored branch (L_rc).
    """
    losses: dict[str, Tensor] = {}
    itc, multi_label = _contrastive_pair(out.image, out, cfg, words)
    losses["contrastive_loss"] = cfg.contrastive_weight * itc
    if multi_label is not None:
        losses["multi_label_loss"] = cfg.multi_label_weight * multi_label
    if out.mixed_segments is not None and cfg.segmentation_weight:
        seg = mixed_segmentation_loss(
            out.mixed_segments,
            out.mixed_assignment,
            out.mixed_labels,
            out.text,
            out.segmentation_logit_scale,
            group_size,
            cfg.segmentation_texts,
            cfg.gather_with_grad,
        )
        losses["segmentation_loss"] = cfg.segmentation_weight * seg
    if out.restored is not None and cfg.restoration_weight:
        restored_itc, restored_ml = _contrastive_pair(out.restored, out, cfg, words)
        restoration = restored_itc if restored_ml is None else restored_itc + restored_ml
        losses["restoration_loss"] = cfg.restoration_weight * restoration
    losses["loss"] = sum(losses.values())
    losses.update(out.diagnostics)  # logged beside the losses, never summed into them
    return losses
