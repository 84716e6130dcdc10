"""`mixreorg convert` and ``load_model``: the official GroupViT release format, safety, and bad input.

Official-format files are generated here from a random model with NVlabs' parameter names (spec section
7.2, written out independently of the converter) plus what the release also pickles: an OmegaConf
config, optimizer and scheduler state, apex amp state. OmegaConf is not installed here, so its classes
are reproduced under their real module names: the pickle references the same globals an OmegaConf 2.x
config does (omegaconf.dictconfig.DictConfig, .listconfig.ListConfig, .nodes.AnyNode,
.base.Metadata/ContainerMetadata, typing.Any, builtins.dict/int/list, collections.defaultdict).
"""

from __future__ import annotations

import builtins
import collections
import os
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
import torch
from mixreorg.cli.main import app
from typer.testing import CliRunner

from mixreorg.checkpoint import convert_checkpoint, load_model, save_pretrained
from mixreorg.checkpoint.safe_pickle import PickledObject, safe_torch_load
from mixreorg.config import load_config
from mixreorg.errors import MixreorgError
from mixreorg.model import build_model

# A small vocabulary, and GroupViT's Linear-BatchNorm-ReLU-Linear projector (transformers' GroupViT has only
# that one; the tiny presets use a linear projector).
SMALL = ["model.text.vocab_size=512", "model.projection.num_layers=2"]




def nvlabs_state(model: torch.nn.Module, multi_label: bool = True) -> dict[str, torch.Tensor]:
    """Our state dict in the names and shapes of NVlabs' MultiLabelContrastive (Conv1d projectors)."""
    state = {}
    for key, value in model.state_dict().items():
        key = key.replace("image_encoder.", "img_encoder.", 1).replace("image_projector.", "img_projector.", 1)
        if "projector." in key and key.endswith(("linear_hidden.0.weight", "linear_out.weight")):
            value = value.unsqueeze(-1)
        state[key] = value.clone()
    if not multi_label:
        state.pop("multi_label_logit_scale")
    return state


def _omegaconf_module(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    classes = {}
    for module_name, class_names in {
        "omegaconf.base": ["Metadata", "ContainerMetadata"],
        "omegaconf.nodes": ["AnyNode"],
        "omegaconf.dictconfig": ["DictConfig"],
        "omegaconf.listconfig": ["ListConfig"],
    }.items():
        module = types.ModuleType(module_name)
        for name in class_names:
            cls = type(name, (), {"__module__": module_name})
            setattr(module, name, cls)
            classes[name] = cls
        monkeypatch.setitem(sys.modules, module_name, module)
    monkeypatch.setitem(sys.modules, "omegaconf", types.ModuleType("omegaconf"))
    return types.SimpleNamespace(**classes)


def omegaconf_like(monkeypatch: pytest.MonkeyPatch, data: dict):
    """An object graph laid out as OmegaConf pickles a DictConfig (``_metadata``/``_parent``/``_content``)."""
    oc = _omegaconf_module(monkeypatch)

    def metadata(cls, object_type):
        meta = cls()
        cache = collections.defaultdict(dict)
        cache["resolved"] = {"x": 1}
        meta.__dict__.update(ref_type=typing.Any, object_type=object_type, key_type=typing.Any, optional=True,
                             element_type=typing.Any, flags={}, resolver_cache=cache)  # fmt: skip
        return meta

    def node(value, parent):
        if isinstance(value, dict):
            out = oc.DictConfig()
            out.__dict__.update(_metadata=metadata(oc.ContainerMetadata, dict), _parent=parent, _content={})
            out._content.update({k: node(v, out) for k, v in value.items()})
        elif isinstance(value, list):
            out = oc.ListConfig()
            out.__dict__.update(_metadata=metadata(oc.ContainerMetadata, list), _parent=parent, _content=[])
            out._content.extend(node(v, out) for v in value)
        else:
            out = oc.AnyNode()
            out.__dict__.update(_metadata=metadata(oc.Metadata, int), _parent=parent, _val=value)
        return out

    return node(data, None)


RELEASE_CONFIG = {
    "model": {"type": "MultiLabelContrastive", "img_encoder": {"type": "GroupViT", "num_heads": [3, 3, 3]},
              "multi_label": "${data.text_aug.multi_label}"},
    "train": {"base_lr": 1.6e-3, "amp_opt_level": "O1"},
}  # fmt: skip


def write_release(path: Path, model: torch.nn.Module, monkeypatch, multi_label: bool = True, prefix: str = "") -> Path:
    state = {prefix + key: value for key, value in nvlabs_state(model, multi_label).items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    torch.save(
        {
            "model": state,
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": {"t_initial": 30, "base_values": [1.6e-3]},
            "metrics": {"max_accuracy": 0.0, "max_miou": 0.0},
            "epoch": 29,
            "config": omegaconf_like(monkeypatch, RELEASE_CONFIG),
            "max_accuracy": 0.0,
            "amp": {"loss_scaler0": {"loss_scale": 65536.0, "unskipped": 120}},
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def groupvit():
    torch.manual_seed(0)
    return build_model(load_config("tiny_groupvit", SMALL)).eval()


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_official_release_converts_with_its_heads_and_weights(tmp_path, monkeypatch, groupvit):
    release = write_release(tmp_path / "group_vit_gcc_yfcc_30e.pth", groupvit, monkeypatch)
    checkpoint = safe_torch_load(release)
    assert isinstance(checkpoint["config"], PickledObject)  # materialised as inert data, never executed
    args = ["convert", str(release), "--out", str(tmp_path / "ours"), "--preset", "tiny_groupvit"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "converted official -> ours" in result.output
    model, config = load_model(tmp_path / "ours")
    # Shapes give everything but heads; the pickled release config gives those (3, not the preset's guess).
    assert config.model.vision == groupvit.cfg.vision and config.model.text == groupvit.cfg.text
    assert not config.model.share_temperature
    assert _same_weights(model, groupvit)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images)[0], groupvit.encode_image(images)[0], rtol=0, atol=0)


def test_redcaps_release_without_multi_label_temperature_and_wrapper_prefixes(tmp_path, monkeypatch, groupvit):
    release = write_release(tmp_path / "redcaps.pth", groupvit, monkeypatch, multi_label=False, prefix="module.")
    model, config = load_model(release, preset="tiny_groupvit")
    assert config.model.share_temperature and model.multi_label_logit_scale is None
    assert torch.equal(model.logit_scale, groupvit.logit_scale)
    assert torch.equal(model.image_encoder.pos_embed, groupvit.image_encoder.pos_embed)


def test_release_size_shapes_infer_the_groupvit_preset(tmp_path):
    """Shapes alone (a bare state dict, no config) reproduce groupvit_vits16 except the unknowable heads."""
    with torch.device("meta"):
        release = build_model("groupvit_vits16")
    shapes = {k: v.shape for k, v in nvlabs_state(release).items()}
    from mixreorg.checkpoint.infer import infer_model_config
    from mixreorg.checkpoint.official import official_to_ours

    state = official_to_ours({k: torch.empty(s, device="meta") for k, s in shapes.items()})
    inferred = infer_model_config(state, load_config("tiny").model)
    assert inferred.vision.num_group_tokens == [64, 8, 0] and inferred.vision.num_output_groups == [64, 8]
    assert (inferred.vision.width, inferred.vision.heads, inferred.vision.image_size) == (384, 6, 224)
    text = inferred.text
    assert (text.width, text.heads, text.layers, text.context_length) == (256, 4, 12, 77)
    assert (inferred.projection.hidden_dim, inferred.projection.embed_dim) == (4096, 256)


class _Evil:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize(
    "func, args, name",
    [
        (os.system, ("touch {marker}",), "system"),
        (builtins.eval, ("open({marker!r}, 'w')",), "builtins.eval"),
        (subprocess.Popen, (["touch", "{marker}"],), "subprocess.Popen"),
    ],
)
@pytest.mark.parametrize("zip_format", [True, False])
def test_pickles_that_call_code_are_refused(tmp_path, groupvit, func, args, name, zip_format):
    marker = tmp_path / "pwned"
    filled = tuple(
        a.format(marker=str(marker)) if isinstance(a, str) else [x.format(marker=str(marker)) for x in a] for a in args
    )
    path = tmp_path / "evil.pth"
    payload = {"model": nvlabs_state(groupvit), "config": _Evil(func, *filled)}
    torch.save(payload, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(MixreorgError, match=name.split(".")[-1]):
        convert_checkpoint(path, tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_cli_prints_one_line_and_fails_for_a_malicious_file(tmp_path, groupvit):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "x": _Evil(os.system, f"touch {tmp_path / 'pwned'}")}, path)
    exe = Path(sys.executable).with_name("mixreorg")
    command = [str(exe), "convert", str(path), "--out", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: refusing to load") and "system" in errors[0]
    assert not (tmp_path / "pwned").exists()


def _error(args: list[str]) -> str:
    result = CliRunner().invoke(app, ["convert", *args])
    assert result.exit_code != 0 and isinstance(result.exception, MixreorgError), result.output
    return str(result.exception)


def test_bad_input_gives_one_clear_line(tmp_path, groupvit, monkeypatch):
    ours = save_pretrained(groupvit, load_config("tiny_groupvit", SMALL), tmp_path / "ours")
    garbage = tmp_path / "random.pth"
    garbage.write_bytes(os.urandom(4096))
    assert "expected a torch checkpoint" in _error([str(garbage), "--out", str(tmp_path / "a")])
    assert "neither an existing file or folder" in _error([str(tmp_path / "missing.pth"), "--out", str(tmp_path / "a")])
    assert "unknown preset 'nope'" in _error([str(write_release(tmp_path / "r.pth", groupvit, monkeypatch)), "--out",
                                              str(tmp_path / "a"), "--preset", "nope"])  # fmt: skip
    assert "unknown checkpoint format 'caffe'" in _error([str(ours), "--from", "caffe", "--out", str(tmp_path / "a")])
    assert "unknown target format 'onnx'" in _error([str(ours), "--to", "onnx", "--out", str(tmp_path / "a")])
    assert "not a transformers GroupViT folder" in _error([str(ours), "--from", "hf", "--out", str(tmp_path / "a")])
    assert "already exists" in _error([str(ours), "--out", str(ours.parent)])

    no_config = tmp_path / "no_config"
    no_config.mkdir()
    (no_config / "model.safetensors").write_bytes((ours / "model.safetensors").read_bytes())
    assert "no config.yaml" in _error([str(no_config), "--out", str(tmp_path / "a")])

    # A config that does not belong to the weights: wider vision width.
    mismatched = tmp_path / "mismatched"
    mismatched.mkdir()
    (mismatched / "model.safetensors").write_bytes((ours / "model.safetensors").read_bytes())
    from mixreorg.config import save_config

    save_config(load_config("tiny_groupvit", [*SMALL, "model.vision.width=192"]), mismatched / "config.yaml")
    message = _error([str(mismatched), "--out", str(tmp_path / "a")])
    assert "do not fit the model config" in message and "wrong shape for image_encoder.pos_embed" in message
    assert not (tmp_path / "a").exists()


def test_mixreorg_models_cannot_be_exported_to_transformers(tmp_path):
    mixreorg = build_model(load_config("tiny", SMALL))
    ours = save_pretrained(mixreorg, load_config("tiny", SMALL), tmp_path / "ours")
    assert "contextual layer" in _error([str(ours), "--to", "hf", "--out", str(tmp_path / "hf")])
    assert not (tmp_path / "hf").exists()
    conv_cfg = load_config("tiny_groupvit", [*SMALL, "model.vision.stem=conv"])
    conv = save_pretrained(build_model(conv_cfg), conv_cfg, tmp_path / "conv")
    assert "a 'conv' stem" in _error([str(conv), "--to", "hf", "--out", str(tmp_path / "hf")])
    assert not (tmp_path / "hf").exists()
    # Within our format the MixReorg model round-trips, and --force replaces an existing output.
    for _ in range(2):
        result = CliRunner().invoke(app, ["convert", str(ours), "--out", str(tmp_path / "copy"), "--force"])
        assert result.exit_code == 0, result.output
    copy, config = load_model(tmp_path / "copy")
    assert config.model.vision.contextual_layers == 1 and config.model.mixing.enabled
    assert _same_weights(copy, mixreorg)


def test_hf_export_of_a_model_with_its_own_vocabulary_skips_the_tokenizer(tmp_path, groupvit):
    """CLIP's tokenizer files only describe a 49408-token text encoder; another vocabulary gets a note instead."""
    ours = save_pretrained(groupvit, load_config("tiny_groupvit", SMALL), tmp_path / "ours")
    result = CliRunner().invoke(app, ["convert", str(ours), "--to", "hf", "--out", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    assert "note: no tokenizer files: the text encoder has 512 tokens" in result.output
    assert (tmp_path / "hf" / "preprocessor_config.json").is_file() and not (tmp_path / "hf" / "vocab.json").exists()
