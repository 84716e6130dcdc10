"""`mixreorg data fetch` (being built)."""

from __future__ import annotations

from mixreorg.errors import MixreorgError


def fetch() -> None:
    """Not available yet in this version."""
    raise MixreorgError("'mixreorg data fetch' is not available yet in this version")
