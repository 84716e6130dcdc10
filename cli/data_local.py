"""`mixreorg data shard|verify|synth` (being built)."""

from __future__ import annotations

from mixreorg.errors import MixreorgError


def shard() -> None:
    """Not available yet in this version."""
    raise MixreorgError("'mixreorg data shard' is not available yet in this version")


def verify() -> None:
    """Not available yet in this version."""
    raise MixreorgError("'mixreorg data verify' is not available yet in this version")


def synth() -> None:
    """Not available yet in this version."""
    raise MixreorgError("'mixreorg data synth' is not available yet in this version")
