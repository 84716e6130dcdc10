"""The ``mixreorg`` command line: a thin typer layer that parses, calls mixreorg's core and prints.

Installed as ``mixreorg.cli`` so it claims no top-level import name.
"""
