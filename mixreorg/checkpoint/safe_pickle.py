"""Load torch pickles without running code from them.

Everything goes through torch's ``weights_only`` unpickler, which only builds tensors, storages and plain
containers. The official GroupViT release also pickles an OmegaConf config; its classes are admitted as
inert ``PickledObject`` placeholders (we never use the config: the model config is inferred from the
weights). Any other global, ``os.system``, ``builtins.eval``, ``subprocess.Popen``..., is refused before a
single byte is unpickled.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from mixreorg.errors import MixreorgError

# Modules whose classes only describe configuration data; instances become placeholders.
PLACEHOLDER_MODULES = ("omegaconf", "typing")
# Builtin types a config pickle names (OmegaConf stores e.g. ``object_type=dict``); constructing them runs no code.
SAFE_BUILTINS = {
    f"builtins.{t.__name__}": t for t in (dict, list, tuple, set, frozenset, int, float, str, bytes, bool, complex)
}


class PickledObject:
    """Inert stand-in for an object of a class we do not import: keeps its name, arguments and state."""

    global_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledObject:
        instance = super().__new__(cls)
        instance.args = args
        instance.state = None
        return instance

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<pickled {self.global_name}>"


def _placeholder(name: str) -> type[PickledObject]:
    return type(name.rsplit(".", 1)[-1], (PickledObject,), {"global_name": name})


def _plain_defaultdict(*args: Any) -> dict:
    # A defaultdict's factory is a global too; a plain dict keeps the data without calling it.
    return {}


def _admitted(name: str) -> Any | None:
    """What a global may be replaced with, or None when it must be refused."""
    if name.split(".", 1)[0] in PLACEHOLDER_MODULES:
        return _placeholder(name)
    if name == "collections.defaultdict":
        return _plain_defaultdict
    return SAFE_BUILTINS.get(name)


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load`` of a file we did not write, on CPU, with config classes as placeholders.

    Raises MixreorgError naming the first global that could run code, or why the file is unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise MixreorgError(f"checkpoint file {path} does not exist")
    extra: list[tuple[Any, str]] = []
    # Listing globals before unpickling needs torch >= 2.5; older torch still loads plain state dicts.
    if zipfile.is_zipfile(path) and hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception as exc:  # a damaged archive fails in many ways
            raise MixreorgError(f"{path} is not a readable torch checkpoint ({exc}); re-download it") from exc
        for name in sorted(names):
            admitted = _admitted(name)
            if admitted is None:
                raise MixreorgError(
                    f"refusing to load {path}: its pickle references '{name}', which could run code; only tensors, "
                    "plain containers and OmegaConf configs are accepted (re-save the state dict with torch.save)"
                )
            extra.append((admitted, name))
    try:
        if not extra:
            return torch.load(path, map_location="cpu", weights_only=True)
        with torch.serialization.safe_globals(extra):
            return torch.load(path, map_location="cpu", weights_only=True)
    except MixreorgError:
        raise
    except Exception as exc:  # UnpicklingError for refused globals in legacy files, RuntimeError for damage
        raise MixreorgError(
            f"refusing or unable to load {path} safely ({_reason(exc)}); "
            "expected a torch checkpoint holding only tensors and plain containers"
        ) from exc


def _reason(exc: Exception) -> str:
    """The informative line of torch's error (its weights_only errors open with generic advice we don't give)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "unsupported" in line.lower():
            return line[:200]
    return f"{exc.__class__.__name__}: {lines[0][:200] if lines else ''}"


def plain_config(obj: Any) -> Any:
    """Turn placeholder OmegaConf containers back into plain dicts, lists and values (best effort).

    Relies on OmegaConf's pickled layout (``_content`` for containers, ``_val`` for leaves), stable since
    OmegaConf 2.0; anything else comes back as it is. Interpolations stay unresolved strings.
    """
    if isinstance(obj, PickledObject):
        state = obj.state if isinstance(obj.state, dict) else {}
        if "_content" in state:
            return plain_config(state["_content"])
        if "_val" in state:
            return plain_config(state["_val"])
        return obj
    if isinstance(obj, dict):
        return {key: plain_config(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_config(value) for value in obj]
    return obj
