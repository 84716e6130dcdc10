"""The text side: open_clip's CLIP text transformer, configured as GroupViT's (the tokenizer: tokenizer.py)."""

from __future__ import annotations

import torch
from open_clip.model import QuickGELU
from open_clip.transformer import TextTransformer
from torch import Tensor

from mixreorg.config.schema import TextConfig
from mixreorg.errors import MixreorgError


def build_text_encoder(cfg: TextConfig) -> TextTransformer:
    """Causal 12x256 transformer with QuickGELU, pooled at the EOT token after the final LayerNorm.

    The projection into the joint space is our own ProjectMLP, so open_clip's projection is off.
    """
    return TextTransformer(
        context_length=cfg.context_length,
        vocab_size=cfg.vocab_size,
        width=cfg.width,
        heads=cfg.heads,
        layers=cfg.layers,
        mlp_ratio=cfg.mlp_ratio,
        output_dim=None,
        proj_type="none",
        pool_type="argmax",
        act_layer=QuickGELU,
    )


def encode_tokens(encoder: TextTransformer, tokens: Tensor) -> Tensor:
    """[T, L] token ids -> [T, width] features at the EOT token, computed over the used length only.

    Under the causal mask no token sees the ones after it, so cutting the zero padding after the
    longest sequence's EOT changes nothing but the cost (short prompts: several times cheaper).
    """
    length = int(tokens.argmax(dim=-1).max()) + 1
    tokens = tokens[:, :length]
    cast = encoder.transformer.get_cast_dtype()
    x = encoder.token_embedding(tokens).to(cast) + encoder.positional_embedding[:length].to(cast)
    x = encoder.transformer(x, attn_mask=encoder.attn_mask[:length, :length])
    x = encoder.ln_final(x)
    return x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]


def init_text_from_open_clip(encoder: TextTransformer, model_name: str, pretrained: str) -> None:
    """Copy an open_clip model's text-tower weights (same width/layers required) into ``encoder``."""
    import open_clip

    try:
        source = open_clip.create_model(model_name, pretrained=pretrained or None)
    except Exception as exc:  # open_clip raises many types for unknown names or failed downloads
        raise MixreorgError(
            f"could not load open_clip text weights '{model_name}' ({pretrained}): {exc}; "
            "check the model name and tag (open_clip.list_pretrained()) and that the weights are reachable"
        ) from exc
    wanted = encoder.state_dict()
    state = {}
    for key, value in source.state_dict().items():
        name = key.removeprefix("text.")
        if name in wanted:
            if wanted[name].shape != value.shape:
                raise MixreorgError(
                    f"open_clip '{model_name}' has {name} of shape {tuple(value.shape)}, our text encoder expects "
                    f"{tuple(wanted[name].shape)}; set model.text.width/layers/heads to match that model"
                )
            state[name] = value
    missing = sorted(set(wanted) - set(state))
    if missing:
        raise MixreorgError(f"open_clip '{model_name}' lacks text weights {missing[:3]}...; pick a CLIP-style model")
    with torch.no_grad():
        encoder.load_state_dict(state, strict=False)
