"""`mixreorg segment` (being built)."""

from __future__ import annotations

from mixreorg.errors import MixreorgError


def segment() -> None:
    """Not available yet in this version."""
    raise MixreorgError("'mixreorg segment' is not available yet in this version")
