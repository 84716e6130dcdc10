"""open_clip models named on the command line: ``openclip:ViT-B-16:openai``.

A name is ``openclip:MODEL:TAG`` (a built-in open_clip architecture and one of its pretrained tags, or a weights
file), ``openclip:hf-hub:owner/name`` (a Hub repository holding ``open_clip_config.json`` and the weights) or
``openclip:local-dir:/folder`` (the same files in a folder). Weights come through open_clip's own loading, so
they land in, and are read from, the Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE``); ``HF_HUB_OFFLINE=1``
reads the cache only. A tag never silently gives random weights: open_clip is asked to fail instead.

OpenAI's weights were trained with QuickGELU; open_clip's plain ``ViT-B-16`` config uses GELU and only warns
about the mismatch. We build the architecture with the activation the tag was trained with, as a user expects.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from mixreorg.errors import MixreorgError

PREFIX = "openclip:"
SCHEMAS = ("hf-hub:", "local-dir:")
EXAMPLE = "openclip:ViT-B-16:openai"


@dataclass(frozen=True)
class ModelSpec:
    name: str  # an open_clip architecture, or 'hf-hub:owner/name', or 'local-dir:/folder'
    pretrained: str | None = None  # a tag of the architecture or a weights file (None with a schema)

    def __str__(self) -> str:
        return PREFIX + self.name + (f":{self.pretrained}" if self.pretrained else "")


def is_model_spec(text: str) -> bool:
    return str(text).startswith(PREFIX)


def parse_model_spec(text: str, vit_only: bool = True) -> ModelSpec:
    """``openclip:MODEL:TAG`` -> ModelSpec, checked against open_clip's list of architectures and tags (and, with
    ``vit_only``, refused unless the image tower is one of open_clip's own ViTs)."""
    import open_clip

    if not is_model_spec(text):
        raise MixreorgError(f"--model '{text}' is not an open_clip name; write it as {EXAMPLE}")
    body = text[len(PREFIX):]
    if body.startswith(SCHEMAS):
        if not body.split(":", 1)[1]:
            raise MixreorgError(f"--model '{text}' names no repository or folder after '{body.split(':')[0]}:'")
        return ModelSpec(body)
    name, _, tag = body.partition(":")
    known = open_clip.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see open_clip.list_models()"
        raise MixreorgError(f"unknown open_clip model '{name}' in --model {text}; {hint} (e.g. {EXAMPLE})")
    tags = open_clip.list_pretrained_tags_by_model(name)
    if not tag:
        raise MixreorgError(f"--model {text} names no pretrained tag; add one after a colon, e.g. "
                            f"{PREFIX}{name}:{tags[0] if tags else 'TAG'} (its tags: {', '.join(tags) or 'none'})")
    if tag not in tags and not Path(tag).expanduser().is_file():
        raise MixreorgError(f"'{tag}' is neither a pretrained tag of open_clip's {name} nor a weights file; "
                            f"its tags: {', '.join(tags) or 'none (pass a weights file)'}")
    spec = ModelSpec(name, tag if tag in tags else str(Path(tag).expanduser()))
    if vit_only:
        _check_architecture(spec, open_clip.get_model_config(name) or {})
    return spec


def _not_a_vit(spec: ModelSpec | str, kind: str) -> MixreorgError:
    return MixreorgError(f"{spec} has a {kind} image tower, not one of open_clip's own ViTs with patch tokens; the "
                         "training-free methods change the last attention block of those (OpenAI, LAION, DataComp, "
                         f"MetaCLIP weights), e.g. {EXAMPLE}")


def _check_architecture(spec: ModelSpec, config: dict) -> None:
    """Refuse, before any download, the architectures whose image tower is not an open_clip ViT with patch tokens."""
    vision = config.get("vision_cfg", {})
    kind = ("ResNet" if isinstance(vision.get("layers"), (list, tuple)) else
            f"timm {vision['timm_model_name']}" if vision.get("timm_model_name") else None)
    if kind:
        raise _not_a_vit(spec, kind)
    if vision.get("attentional_pool"):
        raise _not_a_vit(spec, "attention-pooled (CoCa style)")


def _quick_gelu(spec: ModelSpec) -> bool:
    """Whether the tag's weights were trained with QuickGELU while the architecture's config says GELU."""
    from open_clip import get_model_config, get_pretrained_cfg

    if spec.pretrained is None or spec.name.startswith(SCHEMAS):
        return False
    tag = get_pretrained_cfg(spec.name, spec.pretrained) or {}
    return bool(tag.get("quick_gelu")) and not (get_model_config(spec.name) or {}).get("quick_gelu", False)


def _weights_error(spec: ModelSpec, exc: Exception) -> MixreorgError:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return MixreorgError(f"the weights of {spec} are not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                             "HF_HUB_OFFLINE is set; run once with network access, or point HF_HOME at a cache that "
                             "holds them")
    detail = " ".join(str(exc).split())
    detail = detail if len(detail) <= 160 else detail[:157] + "..."
    return MixreorgError(f"could not load the weights of {spec} ({detail or type(exc).__name__}); check the name, "
                         "the network or HF_ENDPOINT")


@contextlib.contextmanager
def _quiet_logging():
    """open_clip reports through the root logger (an ERROR line before it raises, warnings about random weights);
    the failure reaches the user as one MixreorgError line instead."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)


def create_openclip(spec: ModelSpec, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The open_clip model with its pretrained weights (or ``pretrained=None`` specs: random, for tests)."""
    import open_clip

    try:
        with _quiet_logging():
            return open_clip.create_model(
                spec.name, pretrained=spec.pretrained, device=device, force_quick_gelu=_quick_gelu(spec),
                require_pretrained=spec.pretrained is not None or spec.name.startswith(SCHEMAS))
    except (RuntimeError, FileNotFoundError, ValueError, OSError) as exc:
        raise _weights_error(spec, exc) from exc


def vision_tower(model: torch.nn.Module, spec: ModelSpec | str):
    """The model's open_clip VisionTransformer, or a clear refusal (ResNets, timm towers, attentional pooling)."""
    from open_clip.transformer import VisionTransformer

    visual = getattr(model, "visual", None)
    if not isinstance(visual, VisionTransformer):
        kind = type(visual).__name__ if visual is not None else "no image tower"
        raise _not_a_vit(spec, kind)
    if getattr(visual, "attn_pool", None) is not None:
        raise _not_a_vit(spec, "attention-pooled (CoCa style)")
    return visual


def tokenizer_for(spec: ModelSpec):
    import open_clip

    return open_clip.get_tokenizer(spec.name)
