"""``mixreorg data ...``: the sub-app; the commands live in data_fetch.py and data_local.py."""

from __future__ import annotations

import typer
from mixreorg.cli import data_fetch, data_local

app = typer.Typer(no_args_is_help=True)
app.command("fetch")(data_fetch.fetch)
app.command("shard")(data_local.shard)
app.command("verify")(data_local.verify)
app.command("synth")(data_local.synth)
