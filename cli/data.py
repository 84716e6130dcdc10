"""``mixreorg data ...``: the sub-app; the commands live in data_fetch.py, data_local.py and data_masks.py."""

from __future__ import annotations

import typer
from mixreorg.cli import data_fetch, data_local, data_masks

app = typer.Typer(no_args_is_help=True)
app.command("fetch")(data_fetch.fetch)
app.command("shard")(data_local.shard)
app.command("verify")(data_local.verify)
app.command("synth")(data_local.synth)
app.command("sa1b")(data_masks.sa1b)
app.command("coco-masks")(data_masks.coco_masks)
app.command("recaption")(data_masks.recaption)
