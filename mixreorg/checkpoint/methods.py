"""Rebuilding a checkpoint's model from its config, whatever the method that made it (weights are loaded after)."""

from __future__ import annotations

from torch import nn

from mixreorg.config.schema import METHODS, Config
from mixreorg.errors import MixreorgError


def build_for_loading(config: Config) -> nn.Module:
    """The architecture ``config`` describes, with uninitialised weights for a checkpoint to fill."""
    if config.method == "mixreorg":
        from mixreorg.model import build_model

        return build_model(config, initialize=False)
    if config.method == "unpairseg":
        from mixreorg.unpairseg.model import build_unpairseg

        return build_unpairseg(config, initialize=False)
    raise MixreorgError(f"this checkpoint's config names the method '{config.method}', which this version of "
                        f"mixreorg does not know (it knows {', '.join(METHODS)}); upgrade mixreorg")
