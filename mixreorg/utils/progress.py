"""Progress of long work: a tqdm bar on a terminal, whole plain lines when the output is a file or a pipe.

A redrawn bar written into a log file (``2> train.err``, ``srun``, ``nohup``) is one endless line of carriage
returns. Off a terminal the same calls print ``desc:  40% 40/100 [00:12<00:18, 3.3img/s]`` as its own line,
at most every ``PLAIN_INTERVAL_S`` seconds, plus a first and a last line.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from tqdm import tqdm

PLAIN_INTERVAL_S = 10.0


def is_terminal(stream: IO | None = None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-less stream
        return False


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on a terminal; off it, the same object printing plain lines."""
    if is_terminal(kwargs.get("file")):
        return tqdm(iterable, **kwargs)
    return PlainProgress(iterable, **kwargs)


def timestamped(text: str) -> str:
    return f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}"


class PlainProgress(tqdm):
    """tqdm whose every refresh is one whole, timestamped line instead of a bar drawn over itself."""

    def __init__(self, iterable: Any = None, **kwargs: Any) -> None:
        kwargs.pop("dynamic_ncols", None)
        kwargs["ncols"] = 0  # tqdm's bar-less layout: 'desc:  40% 40/100 [00:12<00:18, 3.3img/s]'
        kwargs["leave"] = True  # the last line is the summary a log should keep
        kwargs.setdefault("mininterval", PLAIN_INTERVAL_S)
        self._closing = False
        super().__init__(iterable, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        line = self.__str__() if msg is None else msg
        if line:
            # On close tqdm ends the kept line with a newline of its own.
            self.fp.write(timestamped(line) + ("" if self._closing else "\n"))
            self.fp.flush()
        return True

    def close(self) -> None:
        self._closing = True
        super().close()
