"""The frozen vision-language model behind Unpair-Seg: multi-scale features, dense features, the text tower.

``unpairseg.model.backbone`` names it: ``openclip:MODEL:TAG`` (any open_clip model; ConvNeXt towers as the paper's
``convnext_large_d_320``, or ViTs) or ``checkpoint:PATH`` (one of our GroupViT/MixReorg checkpoints, so the method
runs offline on the synthetic world). Every backbone gives

- ``levels``: four feature maps at strides 4, 8, 16, 32 (what the pixel decoder fuses);
- ``dense``: a feature map whose mask-pooled average, passed through ``embed_regions``, is the region's embedding in
  the joint image-text space (ConvNeXt: the last stage before CLIP's head, pooled then headed, as FC-CLIP and the
  released Unpair-Seg code do; ViTs: the projected patch tokens; GroupViT: each patch's mixture of its segments'
  projected embeddings);
- ``embed_names`` / ``encode_texts``: the text tower, and its ``logit_scale``.

Nothing here is trained: the model keeps these modules frozen and in eval mode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from mixreorg.errors import MixreorgError

STRIDES = (4, 8, 16, 32)
OPENCLIP, CHECKPOINT = "openclip:", "checkpoint:"
EXAMPLES = "openclip:convnext_large_d_320:laion2b_s29b_b131k_ft_soup or checkpoint:runs/tiny/model"


@dataclass
class BackboneOutput:
    levels: list[Tensor]  # [B, C_i, H / s, W / s] for s in STRIDES
    dense: Tensor  # [B, C_d, h, w]


def resize_to_strides(maps: Sequence[Tensor], size: tuple[int, int]) -> list[Tensor]:
    """Single-stride maps (a ViT's blocks) -> one map per stride of STRIDES, bilinear (no parameters)."""
    out = []
    for feature, stride in zip(maps, STRIDES, strict=True):
        target = (max(1, size[0] // stride), max(1, size[1] // stride))
        out.append(feature if tuple(feature.shape[-2:]) == target else
                   F.interpolate(feature, size=target, mode="bilinear", align_corners=False))
    return out


def pick_layers(depth: int, chosen: Sequence[int]) -> list[int]:
    """Four block indices (0-based) of a ``depth``-block tower: ``chosen`` (1-based) or evenly spaced to the last."""
    if chosen:
        if len(chosen) != 4 or not all(1 <= layer <= depth for layer in chosen):
            raise MixreorgError(f"unpairseg.model.vit_layers needs four block numbers between 1 and {depth}, "
                                f"got {list(chosen)}")
        return [layer - 1 for layer in chosen]
    return [max(0, round(depth * (k + 1) / 4) - 1) for k in range(4)]


def _grid_map(tokens: Tensor, grid: tuple[int, int]) -> Tensor:
    """[B, h*w, C] patch tokens -> [B, C, h, w]."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)


class OpenClipConvNeXt(nn.Module):
    """An open_clip model whose image tower is timm's ConvNeXt (``convnext_*`` configs)."""

    def __init__(self, clip: nn.Module, tokenizer) -> None:
        super().__init__()
        self.clip, self.tokenizer = clip, tokenizer
        self.channels = [int(info["num_chs"]) for info in clip.visual.trunk.feature_info if
                         str(info["module"]).startswith("stages")]
        self.dense_dim = self.channels[-1]

    def forward(self, images: Tensor) -> BackboneOutput:
        trunk = self.clip.visual.trunk
        x = trunk.stem(images)
        levels = []
        for stage in trunk.stages:
            x = stage(x)
            levels.append(x)
        return BackboneOutput(levels=levels, dense=trunk.norm_pre(x))

    def embed_regions(self, pooled: Tensor) -> Tensor:
        """[..., C_d] pooled features -> [..., D]: the trunk's head (norm) and CLIP's projection head."""
        shape = pooled.shape
        x = self.clip.visual.trunk.head(pooled.reshape(-1, shape[-1], 1, 1))
        return self.clip.visual.head(x).reshape(*shape[:-1], -1)


class OpenClipViT(nn.Module):
    """An open_clip VisionTransformer tower: four blocks' patch tokens as the levels, projected tokens as dense."""

    def __init__(self, clip: nn.Module, tokenizer, layers: Sequence[int]) -> None:
        super().__init__()
        self.clip, self.tokenizer = clip, tokenizer
        visual = clip.visual
        self.layers = pick_layers(len(visual.transformer.resblocks), layers)
        self.channels = [int(visual.transformer.width)] * 4
        self.dense_dim = int(visual.proj.shape[1]) if visual.proj is not None else int(visual.transformer.width)

    def forward(self, images: Tensor) -> BackboneOutput:
        from mixreorg.training_free.dense import embed

        visual = self.clip.visual
        x, grid = embed(visual, images)
        batch_first = getattr(visual.transformer, "batch_first", True)
        x = x if batch_first else x.transpose(0, 1)
        outputs = {}
        for index, block in enumerate(visual.transformer.resblocks):
            x = block(x)
            if index in self.layers:
                tokens = x if batch_first else x.transpose(0, 1)
                outputs[index] = _grid_map(tokens[:, 1:], grid)
        maps = [outputs[index] for index in self.layers]
        tokens = x if batch_first else x.transpose(0, 1)
        dense = tokens if getattr(visual, "final_ln_after_pool", False) else visual.ln_post(tokens)
        if visual.proj is not None:
            dense = dense @ visual.proj
        return BackboneOutput(levels=resize_to_strides(maps, images.shape[-2:]), dense=_grid_map(dense[:, 1:], grid))

    def embed_regions(self, pooled: Tensor) -> Tensor:
        return pooled  # the tokens are projected already (a linear map commutes with the pooling)


class OpenClipText:
    """open_clip's text tower: CLIP's zero-shot recipe (normalise each prompt's embedding, average, normalise), and
    the image tower's own normalisation."""

    def pixel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) in pixel units (0-255)."""
        config = getattr(self.clip.visual, "preprocess_cfg", None) or {}
        mean = config.get("mean", (0.48145466, 0.4578275, 0.40821073))  # CLIP's, open_clip's default
        std = config.get("std", (0.26862954, 0.26130258, 0.27577711))
        return tuple(255.0 * float(v) for v in mean), tuple(255.0 * float(v) for v in std)

    def encode_texts(self, texts: list[str]) -> Tensor:
        device = next(self.clip.parameters()).device
        return self.clip.encode_text(self.tokenizer(texts).to(device)).float()

    def embed_names(self, names: Sequence[str], templates: Sequence[str]) -> Tensor:
        from mixreorg.training_free.backend import template_embeddings

        return template_embeddings(self.encode_texts, names, templates)

    def logit_scale(self) -> float:
        return float(self.clip.logit_scale.exp()) if hasattr(self.clip, "logit_scale") else 100.0


class ConvNeXtBackbone(OpenClipText, OpenClipConvNeXt):
    pass


class ViTBackbone(OpenClipText, OpenClipViT):
    pass


class GroupingBackbone(nn.Module):
    """One of our GroupViT/MixReorg models: the first stage's blocks as the levels (its patch tokens, before any
    grouping), and per patch the soft mixture of its final segments' projected embeddings as dense features."""

    def __init__(self, model: nn.Module, layers: Sequence[int]) -> None:
        super().__init__()
        self.model = model
        vision = model.cfg.vision
        self.layers = pick_layers(vision.depths[0], layers)
        self.channels = [int(vision.width)] * 4
        self.dense_dim = int(model.cfg.projection.embed_dim)

    def forward(self, images: Tensor) -> BackboneOutput:
        from mixreorg.model.mixreorg import combine_assignments

        encoder = self.model.image_encoder
        first = encoder.layers[0]
        x, grid = encoder.embed(images)
        groups = first.initial_group_tokens(x.shape[0], None)
        outputs = {}
        for index in range(len(first.blocks)):
            x, groups = first.run_block(index, x, groups)
            if index in self.layers:
                outputs[index] = _grid_map(x, grid)
        maps = [outputs[index] for index in self.layers]
        segments, groups, assignment = first.group(x, groups)
        out = encoder._stages(segments, groups, 1, [assignment] if assignment is not None else [], grid)
        embeddings = F.normalize(self.model.segment_embeddings(out).float(), dim=-1)  # [B, S, D]
        soft = combine_assignments(out.assignments, "soft").float()  # [B, N, S]
        dense = _grid_map(soft @ embeddings, grid)
        return BackboneOutput(levels=resize_to_strides(maps, images.shape[-2:]), dense=dense)

    def embed_regions(self, pooled: Tensor) -> Tensor:
        return pooled

    def pixel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        from mixreorg.evaluation.protocols import IMAGENET_MEAN, IMAGENET_STD

        return IMAGENET_MEAN, IMAGENET_STD  # GroupViT's training normalisation

    def encode_texts(self, texts: list[str]) -> Tensor:
        from mixreorg.model.tokenizer import tokenize

        device = next(self.model.parameters()).device
        return self.model.encode_text(tokenize(texts, self.model.context_length).to(device)).float()

    def embed_names(self, names: Sequence[str], templates: Sequence[str]) -> Tensor:
        from mixreorg.evaluation.zero_shot import embed_classes

        return embed_classes(self.model, list(names), tuple(templates))

    def logit_scale(self) -> float:
        return float(self.model.temperature())


def check_backbone_name(name: str) -> None:
    """A clear line for a name that is neither form (before anything is built or downloaded)."""
    if not name:
        raise MixreorgError("unpairseg.model.backbone is empty; name the frozen vision-language model, e.g. "
                            f"{EXAMPLES}")
    if name.startswith(OPENCLIP):
        from mixreorg.training_free.openclip import parse_model_spec

        parse_model_spec(name, vit_only=False)
    elif name.startswith(CHECKPOINT):
        path = Path(name[len(CHECKPOINT):]).expanduser()
        if not str(path) or str(path) == ".":
            raise MixreorgError(f"unpairseg.model.backbone '{name}' names no checkpoint; e.g. {EXAMPLES}")
        _check_backbone_checkpoint(path, name)
    else:
        raise MixreorgError(f"unknown backbone '{name}' in unpairseg.model.backbone; name an open_clip model or one "
                            f"of our checkpoints, e.g. {EXAMPLES}")


def _check_backbone_checkpoint(path: Path, name: str) -> None:
    """A local checkpoint folder must hold a GroupViT/MixReorg model (names and Hub ids are checked when loaded)."""
    from mixreorg.checkpoint import find_latest
    from mixreorg.checkpoint.ours import is_ours, read_config

    folder = path if is_ours(path) else (find_latest(path) if path.is_dir() else None)
    if folder is not None and is_ours(folder):
        method = read_config(folder).method
        if method != "mixreorg":
            raise MixreorgError(f"{name} is a {method} checkpoint; the backbone must be a GroupViT or MixReorg "
                                "checkpoint (Unpair-Seg's stage 2 takes its stage-1 model from "
                                "unpairseg.align.masks_checkpoint)")


def wrap_openclip(clip: nn.Module, tokenizer, name: str, layers: Sequence[int]) -> nn.Module:
    from open_clip.transformer import VisionTransformer

    visual = getattr(clip, "visual", None)
    if isinstance(visual, VisionTransformer) and getattr(visual, "attn_pool", None) is None:
        return ViTBackbone(clip, tokenizer, layers)
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and hasattr(trunk, "stem") and hasattr(trunk, "stages") and hasattr(trunk, "norm_pre"):
        return ConvNeXtBackbone(clip, tokenizer)
    raise MixreorgError(f"{name} has a {type(visual).__name__} image tower; Unpair-Seg takes open_clip's ConvNeXt "
                        f"(timm) towers and ViTs, e.g. {EXAMPLES}")


def build_backbone(name: str, layers: Sequence[int], pretrained: bool, model_cfg=None) -> tuple[nn.Module, object]:
    """(frozen backbone, the GroupViT model config it was built from or None). ``pretrained`` loads its weights
    (open_clip's download or cache, or the named checkpoint); otherwise only the architecture is built, for a
    checkpoint's weights to fill (a checkpoint backbone then needs ``model_cfg``)."""
    check_backbone_name(name)
    if name.startswith(OPENCLIP):
        from mixreorg.training_free.openclip import create_openclip, parse_model_spec, tokenizer_for

        spec = parse_model_spec(name, vit_only=False)
        clip = create_openclip(spec if pretrained else dataclasses.replace(spec, pretrained=None))
        backbone, model_cfg = wrap_openclip(clip, tokenizer_for(spec), name, layers), None
    else:
        if pretrained:
            from mixreorg.checkpoint import load_model
            from mixreorg.inference.checkpoints import resolve_checkpoint

            model, config = load_model(resolve_checkpoint(name[len(CHECKPOINT):]))
            if config.method != "mixreorg":
                raise MixreorgError(f"{name} is a {config.method} checkpoint; the backbone must be a GroupViT or "
                                    "MixReorg checkpoint")
            model_cfg = config.model
        else:
            from mixreorg.model import build_model

            model = build_model(model_cfg, initialize=False)
        backbone = GroupingBackbone(model, layers)
    backbone.requires_grad_(False)
    return backbone.eval(), model_cfg
