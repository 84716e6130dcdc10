"""`mixreorg train` (being built)."""

from __future__ import annotations

from mixreorg.errors import MixreorgError


def train() -> None:
    """Not available yet in this version."""
    raise MixreorgError("'mixreorg train' is not available yet in this version")
