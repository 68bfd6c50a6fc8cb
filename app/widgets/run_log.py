"""The Train page's log: the engine's stderr, notable events, and what of the event stream
the app could not use (each oddity said once)."""

from __future__ import annotations

from PySide6.QtWidgets import QPlainTextEdit, QWidget

from app.model.run_model import EVENT_FIELDS, RunHistory
from engine.run.events import SCHEMA_VERSION

#: Lines kept; older ones scroll away.
MAX_LINES = 500


class RunLog(QPlainTextEdit):
    """A read-only log of one run, at most MAX_LINES lines."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(MAX_LINES)
        self._reported: set[str] = set()  # oddities of the event stream said already

    def start_run(self, *, clear: bool) -> None:
        """A new run is shown: oddities are said again; ``clear`` empties the log too."""
        self._reported.clear()
        if clear:
            self.clear()

    def add(self, line: str) -> None:
        self.appendPlainText(line)

    def malformed(self, line: str) -> None:
        self.add(f"[ignored a malformed event line] {line}")

    def note_event(self, event: dict, problems: list[str]) -> None:
        """Log what of ``event`` is worth a line (an evaluation, a warning, the cache's
        size and free space before decoding) and what of it
        could not be used (``problems``, from RunHistory.add)."""
        self.oddities(event, problems)
        kind = event.get("type")
        if kind == "eval" and not problems:
            seconds = event.get("seconds")
            took = f", {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
            self.add(f"epoch {event.get('epoch')}: kNN accuracy {100 * event['knn_top1']:.1f}% "
                     f"({event.get('images')} images{took})")
        elif kind == "warning":
            self.add("warning: " + str(event.get("message", "")))
        elif kind == "cache_plan" and not event.get("reuse"):
            self.add(str(event.get("message", "")))

    def oddities(self, event: dict, problems: list[str]) -> None:
        """Say, once each, what of the event stream this app cannot use: event types it
        does not know (from a newer engine), a newer schema, missing or wrong-typed fields.
        The run goes on being shown."""
        kind, version = event.get("type"), event.get("v")
        notes = [f"{p}; ignored" for p in problems]
        if kind not in EVENT_FIELDS:
            notes.append(f"events of type {kind!r} are unknown to this version of the app "
                         "(written by a newer engine?); they are ignored")
        if isinstance(version, int) and version > SCHEMA_VERSION:
            notes.append(f"the engine writes events of schema version {version}; this app "
                         f"reads version {SCHEMA_VERSION} and may miss what is new")
        for note in notes:
            if note not in self._reported:
                self._reported.add(note)
                self.add(f"[event stream] {note} (said once)")

    def stream_summary(self, history: RunHistory) -> None:
        """At the end of a run: how many of its events were damaged or unknown, if any."""
        if history.bad_events or history.unknown_events:
            self.add(f"[event stream] {history.bad_events} events had missing or wrong "
                     f"fields and {history.unknown_events} were of unknown types")

    def last_lines(self, n: int = 15) -> str:
        return "\n".join(self.toPlainText().splitlines()[-n:])
