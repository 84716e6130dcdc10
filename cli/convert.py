"""`mixreorg convert` (being built)."""

from __future__ import annotations

from mixreorg.errors import MixreorgError


def convert() -> None:
    """Not available yet in this version."""
    raise MixreorgError("'mixreorg convert' is not available yet in this version")
