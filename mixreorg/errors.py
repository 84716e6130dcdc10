"""The one exception type the CLI turns into a clean one-line message."""


class MixreorgError(Exception):
    """A problem the user can fix: the message names what was wrong and what to do.

    The CLI prints ``error: <message>`` and exits non-zero without a traceback
    (``--debug`` shows it). Core code raises this for bad input, never for bugs.
    """
