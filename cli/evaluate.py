"""`mixreorg evaluate` (being built)."""

from __future__ import annotations

from mixreorg.errors import MixreorgError


def evaluate() -> None:
    """Not available yet in this version."""
    raise MixreorgError("'mixreorg evaluate' is not available yet in this version")
