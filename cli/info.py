"""``mixreorg version`` and ``mixreorg info``: what is installed and which presets ship."""

from __future__ import annotations

import typer


def version() -> None:
    """Print the mixreorg version."""
    from mixreorg import __version__

    typer.echo(__version__)


def info() -> None:
    """Print versions of the stack, the available device and the shipped presets."""
    from mixreorg.utils.environment import environment_report

    for key, value in environment_report().items():
        typer.echo(f"{key:>16}: {value}")
