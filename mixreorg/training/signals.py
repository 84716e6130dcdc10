"""Preemption: SIGTERM/SIGINT ask the loop to finish its step, write a checkpoint and exit."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Remembers the first stop signal; a second one falls back to the default (immediate) behaviour."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._callbacks: list[Callable[[], None]] = []

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def on_request(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def _handle(self, signum: int, frame: object) -> None:
        self.signum = signum
        # The next identical signal kills as usual: a user pressing Ctrl-C twice means it.
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
        for callback in self._callbacks:
            callback()


@contextlib.contextmanager
def catch_stop_signals() -> Iterator[StopRequest]:
    """Install the handlers for the block (main thread only), restoring the previous ones after."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, request._handle)
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
