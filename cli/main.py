"""The ``mixreorg`` entry point: registers the subcommands and turns user errors into one clean line."""

from __future__ import annotations

import sys

import typer
from mixreorg.cli import convert, data, evaluate, info, segment, train

from mixreorg.errors import MixreorgError

app = typer.Typer(
    name="mixreorg",
    help="MixReorg / GroupViT and Unpair-Seg: open-world semantic segmentation learned without dense labels.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
_debug = {"on": False}


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    _debug["on"] = debug


app.add_typer(data.app, name="data", help="Fetch, shard, verify and synthesise datasets.")
app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(train.train)
app.command("convert")(convert.convert)
app.command("eval", context_settings={"allow_extra_args": True})(evaluate.evaluate)
app.command("segment")(segment.segment)
app.command("info")(info.info)
app.command("version")(info.version)


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise SystemExit(code)


def entry() -> None:
    """Console-script entry: run the app; known failures print one line and exit non-zero."""
    try:
        app()
    except MixreorgError as exc:
        if _debug["on"]:
            raise
        _fail(str(exc))
    except OSError as exc:
        if _debug["on"]:
            raise
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        _fail(f"{exc.strerror or exc}{where}")
    except KeyboardInterrupt:
        _fail("interrupted", 130)


if __name__ == "__main__":  # python -m mixreorg.cli.main
    sys.argv[0] = "mixreorg"
    entry()
