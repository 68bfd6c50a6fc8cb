"""Exceptions that nothing caught are reported, never lost.

An exception raised in a Qt slot, a timer, an event handler or a worker thread does not
reach any caller: PySide hands it to ``sys.excepthook`` and the event loop goes on. The
default hook prints it to a terminal that a person running the app from a desktop never
sees, so what they asked for silently does not happen. :class:`ErrorReporter` replaces the
hook: it writes the traceback to stderr and to a log file, and shows a message box (one at
a time; later errors are counted in it) that says the app goes on and where the details are.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from pathlib import Path
from types import TracebackType

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QMessageBox, QWidget

#: Characters of the traceback kept in the message box's details (its end).
DETAIL_CHARS = 20_000


class ErrorReporter(QObject):
    """``sys.excepthook`` (and ``threading.excepthook``) that logs and shows errors.

    Create it on the GUI thread; it may be called from any thread (the box is shown on the
    GUI thread through a queued signal).

    Signals:
        reported(str, str): an uncaught error: a one-line summary and the traceback.
    """

    reported = Signal(str, str)

    def __init__(self, log_path: Path | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.log_path = Path(log_path) if log_path is not None else None
        self.parent_widget = parent
        self.box: QMessageBox | None = None
        self.count = 0  # errors reported since the box was last shown
        self._previous = sys.excepthook
        self._previous_threading = threading.excepthook
        self.reported.connect(self._show, Qt.QueuedConnection)

    def install(self) -> ErrorReporter:
        sys.excepthook = self
        threading.excepthook = self._thread_hook
        return self

    def uninstall(self) -> None:
        if sys.excepthook is self:
            sys.excepthook = self._previous
        if threading.excepthook == self._thread_hook:
            threading.excepthook = self._previous_threading

    def __call__(self, exc_type: type[BaseException], exc: BaseException,
                 tb: TracebackType | None) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            self._previous(exc_type, exc, tb)
            return
        try:
            text = "".join(traceback.format_exception(exc_type, exc, tb))
            summary = f"{exc_type.__name__}: {exc}".strip().rstrip(":")
            self._log(text)
            self.reported.emit(summary[:500], text[-DETAIL_CHARS:])
        except Exception:
            self._previous(exc_type, exc, tb)

    def _thread_hook(self, args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            self(args.exc_type, args.exc_value, args.exc_traceback)

    def _log(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            sys.stderr.write(f"{stamp} uncaught error (the app goes on):\n{text}")
            sys.stderr.flush()
        except (OSError, ValueError, AttributeError):
            pass  # no usable stderr (a desktop launch): the log file still gets it
        if self.log_path is None:
            return
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(f"--- {stamp}\n{text}")
        except OSError:
            self.log_path = None  # e.g. a read-only home: say so in the box, once

    def _show(self, summary: str, details: str) -> None:
        self.count += 1
        where = (f" The details were written to {self.log_path}." if self.log_path
                 else " The details are below.")
        text = (f"Something went wrong: {summary}\n\nThe app goes on, but what you were doing "
                f"may not have finished; try it again.{where}")
        if self.box is not None and self.box.isVisible():
            self.box.setText(text + f"\n\n({self.count} errors since this message appeared.)")
            self.box.setDetailedText(details)
            return
        self.count = 1
        box = QMessageBox(QMessageBox.Critical, "Unexpected error", text, QMessageBox.Ok,
                          self.parent_widget)
        box.setDetailedText(details)
        box.open()  # not blocking: the event loop, runs and children go on
        self.box = box
