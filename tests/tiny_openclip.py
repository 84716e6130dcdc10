"""Tiny open_clip models with random weights, registered as open_clip configs (importable: tests/ is on sys.path).

    from tiny_openclip import VIT, build, weights_file
    model = build(VIT)                              # open_clip.create_model(VIT), seeded, in eval mode
    spec = f"openclip:{VIT}:{weights_file(tmp)}"    # what --model takes: open_clip loads the file itself

``VIT`` is a standard CLIP ViT (nn.MultiheadAttention blocks), ``CUSTOM_VIT`` uses open_clip's own Attention with
layer scale, q/k norms, head scales and an inner norm, ``RESNET`` is a ModifiedResNet (not a ViT), ``CONVNEXT`` a
timm ConvNeXt tower with an MLP head, as the paper's ``convnext_large_d_320`` (the smallest timm ConvNeXt). Nothing is
downloaded: the configs are written to a temporary folder and registered with ``open_clip.add_model_config``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

VIT, CUSTOM_VIT, RESNET = "mixreorg-test-vit", "mixreorg-test-vit-custom", "mixreorg-test-rn"
CONVNEXT = "mixreorg-test-convnext"
TEXT = {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
VISION = {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 16}
CONFIGS = {
    VIT: {"embed_dim": 32, "vision_cfg": VISION, "text_cfg": TEXT},
    CUSTOM_VIT: {"embed_dim": 32, "text_cfg": TEXT,
                 "vision_cfg": {**VISION, "ls_init_value": 0.5, "qk_norm": True, "scale_heads": True,
                                "scale_attn_inner": True}},
    RESNET: {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 16},
             "text_cfg": TEXT},
    CONVNEXT: {"embed_dim": 32, "text_cfg": TEXT,
               "vision_cfg": {"timm_model_name": "convnext_atto", "timm_model_pretrained": False, "timm_pool": "",
                              "timm_proj": "mlp", "timm_drop": 0.0, "timm_drop_path": 0.0, "image_size": 64}},
}
_registered: list[str] = []


def register() -> None:
    import open_clip

    if _registered:
        return
    folder = Path(tempfile.mkdtemp(prefix="mixreorg-openclip-configs-"))
    for name, config in CONFIGS.items():
        (folder / f"{name}.json").write_text(json.dumps(config))
        open_clip.add_model_config(folder / f"{name}.json")
    _registered.append(str(folder))


def build(name: str = VIT, seed: int = 0) -> torch.nn.Module:
    """A random-weight model of a registered config, in eval mode, with its layers' weights perturbed so that
    every parameter (LayerNorm gains and biases, biases, layer scales) takes part in the comparisons."""
    import open_clip

    register()
    torch.manual_seed(seed)
    model = open_clip.create_model(name).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


def weights_file(folder: Path, name: str = VIT, seed: int = 0) -> Path:
    """A state dict of ``build(name, seed)`` saved where ``openclip:NAME:FILE`` can load it."""
    path = Path(folder) / f"{name}-{seed}.pt"
    if not path.is_file():
        torch.save(build(name, seed).state_dict(), path)
    return path


def config(name: str = VIT) -> dict:
    return json.loads(json.dumps(CONFIGS[name]))
