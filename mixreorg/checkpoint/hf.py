"""Hugging Face transformers GroupViT folders (``config.json`` + weights) <-> our model.

Reading needs no transformers install: the config is JSON and the weights are safetensors or a
``pytorch_model.bin`` loaded with the weights-only unpickler. Exported folders load with
``transformers.GroupViTModel.from_pretrained(dir)`` and ``AutoProcessor.from_pretrained(dir)`` (tokenizer and
image-processor files written by ``mixreorg.checkpoint.hf_processor``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from mixreorg.checkpoint.atomic_dir import atomic_directory
from mixreorg.checkpoint.hf_names import TRAINING_ONLY_TEMPERATURES, hf_to_ours, ours_to_hf
from mixreorg.checkpoint.hf_processor import write_processor_files
from mixreorg.checkpoint.ours import read_weights, write_weights
from mixreorg.checkpoint.safe_pickle import safe_torch_load
from mixreorg.checkpoint.state import model_state, tensor_state, unwrap_model
from mixreorg.config.schema import ModelConfig
from mixreorg.errors import MixreorgError

HF_CONFIG = "config.json"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
# transformers' GroupViTConfig defaults (the released GroupViT-S), used where a config.json omits a field.
HF_VISION_DEFAULTS = dict(
    hidden_size=384, intermediate_size=1536, depths=[6, 3, 3], num_group_tokens=[64, 8, 0],
    num_output_groups=[64, 8, 8], num_attention_heads=6, image_size=224, patch_size=16, num_channels=3,
    hidden_act="gelu", layer_norm_eps=1e-5, assign_eps=1.0, assign_mlp_ratio=[0.5, 4],
)  # fmt: skip
HF_TEXT_DEFAULTS = dict(
    vocab_size=49408, hidden_size=256, intermediate_size=1024, num_hidden_layers=12, num_attention_heads=4,
    max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
)  # fmt: skip
HF_TOP_DEFAULTS = dict(projection_dim=256, projection_intermediate_dim=4096, logit_scale_init_value=2.6592)


def is_hf(folder: Path) -> bool:
    return (folder / HF_CONFIG).is_file() and any(
        (folder / name).is_file() or (folder / f"{name}.index.json").is_file() for name in HF_WEIGHTS
    )


def _square(size: Any, what: str) -> int:
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise MixreorgError(f"transformers config has {what}={size}; only square sizes are supported")
        size = size[0]
    return int(size)


def hf_config_to_ours(hf: dict[str, Any], base: ModelConfig) -> ModelConfig:
    """Our model config for a transformers GroupViTConfig dict (other fields from ``base``)."""
    if hf.get("model_type", "groupvit") != "groupvit":
        raise MixreorgError(f"config.json is for model_type '{hf.get('model_type')}'; expected 'groupvit'")
    vision = {**HF_VISION_DEFAULTS, **(hf.get("vision_config") or {})}
    text = {**HF_TEXT_DEFAULTS, **(hf.get("text_config") or {})}
    top = {**HF_TOP_DEFAULTS, **hf}
    if vision["hidden_act"] != "gelu" or text["hidden_act"] != "quick_gelu":
        raise MixreorgError(
            f"transformers config uses activations {vision['hidden_act']}/{text['hidden_act']}; "
            "expected gelu (vision) and quick_gelu (text) as in GroupViT"
        )
    cfg = copy.deepcopy(base)
    v, t, p = cfg.vision, cfg.text, cfg.projection
    v.width, v.heads = vision["hidden_size"], vision["num_attention_heads"]
    v.mlp_ratio = vision["intermediate_size"] / v.width
    v.depths = list(vision["depths"])
    v.num_group_tokens = list(vision["num_group_tokens"])
    last = max(i for i, n in enumerate(v.num_group_tokens) if n > 0)
    v.num_output_groups = [vision["num_output_groups"][i] if v.num_group_tokens[i] else 0 for i in range(last + 1)]
    v.image_size = _square(vision["image_size"], "image_size")
    v.patch_size = _square(vision["patch_size"], "patch_size")
    v.in_channels = vision["num_channels"]
    v.layer_norm_eps, v.assign_eps = vision["layer_norm_eps"], vision["assign_eps"]
    v.assign_mlp_ratio = [float(r) for r in vision["assign_mlp_ratio"]]
    v.contextual_layers, v.hard_assignment = 0, True
    if int(v.assign_mlp_ratio[1] * v.width) != vision["intermediate_size"]:
        raise MixreorgError(
            "transformers config has assign_mlp_ratio[1]*hidden_size != intermediate_size; our grouping block "
            "needs them equal (its pre-assignment MLP uses the same width)"
        )
    t.vocab_size, t.width, t.layers = text["vocab_size"], text["hidden_size"], text["num_hidden_layers"]
    t.heads, t.context_length = text["num_attention_heads"], text["max_position_embeddings"]
    t.mlp_ratio = text["intermediate_size"] / t.width
    p.embed_dim, p.hidden_dim, p.num_layers = top["projection_dim"], top["projection_intermediate_dim"], 2
    cfg.logit_scale_init = float(top["logit_scale_init_value"])
    cfg.share_temperature = True  # transformers keeps one temperature
    return cfg


def check_exportable(cfg: ModelConfig) -> None:
    """Refuse models whose structure transformers' GroupViT cannot express."""
    v = cfg.vision
    problems = []
    if v.contextual_layers:
        problems.append(f"a contextual layer (model.vision.contextual_layers={v.contextual_layers}, MixReorg)")
    if v.stem != "patch":
        problems.append(f"a '{v.stem}' stem (model.vision.stem; transformers has the linear patch embedding only)")
    if not v.hard_assignment:
        problems.append("soft grouping assignment (model.vision.hard_assignment=false)")
    if v.assign_mlp_ratio[1] != v.mlp_ratio:
        problems.append("a grouping MLP ratio different from the block MLP ratio")
    if cfg.projection.num_layers != 2:
        problems.append("a single-layer projection (model.projection.num_layers=1)")
    for i in range(1, len(v.depths)):
        if v.num_group_tokens[i] and v.num_group_tokens[i - 1] != v.num_output_groups[i - 1]:
            problems.append(f"stage {i - 1} with num_group_tokens != num_output_groups")
    if problems:
        raise MixreorgError(
            f"transformers' GroupViT cannot express {', '.join(problems)}; export to --to ours instead"
        )


def ours_config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    check_exportable(cfg)
    v, t, p = cfg.vision, cfg.text, cfg.projection
    groups = list(v.num_output_groups[: len(v.depths)])
    groups += [groups[-1]] * (len(v.depths) - len(groups))
    vision = dict(
        hidden_size=v.width, intermediate_size=int(v.width * v.mlp_ratio), depths=list(v.depths),
        num_hidden_layers=sum(v.depths), num_group_tokens=list(v.num_group_tokens), num_output_groups=groups,
        num_attention_heads=v.heads, image_size=v.image_size, patch_size=v.patch_size, num_channels=v.in_channels,
        hidden_act="gelu", layer_norm_eps=v.layer_norm_eps, assign_eps=v.assign_eps,
        assign_mlp_ratio=list(v.assign_mlp_ratio), model_type="groupvit_vision_model",
    )  # fmt: skip
    text = dict(
        vocab_size=t.vocab_size, hidden_size=t.width, intermediate_size=int(t.width * t.mlp_ratio),
        num_hidden_layers=t.layers, num_attention_heads=t.heads, max_position_embeddings=t.context_length,
        hidden_act="quick_gelu", layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
        model_type="groupvit_text_model",
    )  # fmt: skip
    return dict(
        architectures=["GroupViTModel"], model_type="groupvit", projection_dim=p.embed_dim,
        projection_intermediate_dim=p.hidden_dim, logit_scale_init_value=cfg.logit_scale_init,
        text_config=text, vision_config=vision,
    )  # fmt: skip


def read_hf_config(folder: Path) -> dict[str, Any]:
    path = folder / HF_CONFIG
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MixreorgError(f"{path} is not readable JSON ({exc}); expected a transformers config.json") from exc
    if not isinstance(data, dict):
        raise MixreorgError(f"{path} holds {type(data).__name__}; expected a transformers GroupViT config object")
    return data


def _read_file(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        return read_weights(path)
    return tensor_state(safe_torch_load(path), str(path))


def read_hf_weights(folder: Path) -> dict[str, Tensor]:
    """All tensors of a transformers folder, single file or sharded (``*.index.json``), in HF names."""
    for name in HF_WEIGHTS:
        if (folder / name).is_file():
            return tensor_state(_read_file(folder / name), str(folder / name))
        index = folder / f"{name}.index.json"
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (OSError, json.JSONDecodeError, KeyError, AttributeError) as exc:
                raise MixreorgError(f"{index} is not a valid weight index ({exc})") from exc
            state: dict[str, Tensor] = {}
            for shard in shards:
                state.update(_read_file(folder / shard))
            return tensor_state(state, str(index))
    raise MixreorgError(f"{folder} has no model.safetensors or pytorch_model.bin beside its config.json")


def read_hf(folder: str | Path, base: ModelConfig) -> tuple[dict[str, Tensor], ModelConfig]:
    """(state dict in our names, model config) of a transformers GroupViT folder."""
    folder = Path(folder)
    model_cfg = hf_config_to_ours(read_hf_config(folder), base)
    return hf_to_ours(read_hf_weights(folder)), model_cfg


def save_hf(model: nn.Module, out_dir: str | Path, overwrite: bool = False) -> list[str]:
    """Export ``model`` as a transformers GroupViT folder; returns notes on what could not be carried over."""
    cfg = unwrap_model(model).cfg
    hf_config = ours_config_to_hf(cfg)
    state = model_state(model)
    notes = [f"{key} is dropped: transformers' GroupViT has no loss that reads it (inference does not)"
             for key in TRAINING_ONLY_TEMPERATURES if key in state]
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        write_weights(ours_to_hf(state), tmp / HF_WEIGHTS[0])
        (tmp / HF_CONFIG).write_text(json.dumps(hf_config, indent=2) + "\n")
        notes += write_processor_files(tmp, cfg)
    return notes
