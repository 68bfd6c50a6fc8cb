"""Short work off the GUI thread: run a function in a QThreadPool and get its result (or
its error message) back on the GUI thread as a signal.

A page keeps a generation counter and passes it with each task; when the answer arrives
it compares it with the current generation and drops stale answers. Only the GUI thread
touches widgets: results travel through :class:`Relay`, whose signals are queued to the
thread that the relay lives in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, Signal


class Relay(QObject):
    """Carries a task's result back to the GUI thread (queued: the receiver lives there).

    Signals:
        done(int, object): generation, the function's return value.
        failed(int, str): generation, the error message.
    """

    done = Signal(int, object)
    failed = Signal(int, str)


class Task(QRunnable):
    """``work()`` in a pool thread; its result or error message goes out through ``relay``."""

    def __init__(self, work: Callable[[], Any], generation: int, relay: Relay) -> None:
        super().__init__()
        self._work, self._generation, self._relay = work, generation, relay

    def run(self) -> None:
        try:
            result = self._work()
        except Exception as exc:
            self._emit(self._relay.failed, str(exc) or type(exc).__name__)
        else:
            self._emit(self._relay.done, result)

    def _emit(self, signal: Any, value: Any) -> None:
        try:
            signal.emit(self._generation, value)
        except RuntimeError:  # the page was deleted while this ran
            pass


class Call(QRunnable):
    """``fn()`` in a pool thread, for work that reports through signals of its own."""

    def __init__(self, fn: Callable[[], None]) -> None:
        super().__init__()
        self._fn = fn

    def run(self) -> None:
        self._fn()
