"""The engine's event stream: one JSON object per line.

Every event is written to stdout (for the app that started the engine) and appended to
``run_dir/events.jsonl`` (for replay, and for opening a run later). Human-readable logs go
to stderr. The event types, their fields and the schema version are data in
:mod:`engine.run.schema` (the README's "Event stream" table is printed from it); readers
must ignore unknown types and unknown fields (newer engines may add them).

With ``CONTRASTIVE_EXPLORER_STRICT_EVENTS=1`` in the environment (the tests set it) every
event written is checked against the schema first: a type or field it does not describe,
or a value of the wrong kind, raises :class:`EventSchemaError`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from engine.run.io import to_jsonable
from engine.run.schema import SCHEMA_VERSION, validate_event

__all__ = ["SCHEMA_VERSION", "STRICT_ENV", "EventSchemaError", "EventWriter", "parse_event",
           "read_events"]

#: The environment variable that turns on strict mode (see the module's docstring).
STRICT_ENV = "CONTRASTIVE_EXPLORER_STRICT_EVENTS"


class EventSchemaError(AssertionError):
    """In strict mode: the engine was about to write an event the schema does not describe
    (a bug: the field or type belongs in engine.run.schema first)."""


class EventWriter:
    """Writes events to a stream (stdout by default) and, once a run directory exists, to
    its events.jsonl. Thread-safe.

    ``strict`` (default: whether ``CONTRASTIVE_EXPLORER_STRICT_EVENTS`` is 1) checks every
    event against the schema before writing it; missing fields are left to readers, so
    events written by hand with only some fields pass.
    """

    def __init__(self, stream: IO[str] | None = sys.stdout, *,
                 strict: bool | None = None) -> None:
        self._stream = stream
        self.strict = os.environ.get(STRICT_ENV) == "1" if strict is None else strict
        self._file: IO[str] | None = None
        self._lock = threading.Lock()
        self._pending: list[str] = []  # events emitted before the run directory existed
        self.file_error: Exception | None = None  # why appending to events.jsonl stopped
        self._subscribers: list[Callable[[dict[str, Any]], None]] = []

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call ``callback(event)`` with every event written from now on, in order (after
        the stream and the file; with the writer's lock held, so never from two threads at
        once). The CLI's terminal report is one. A callback that raises is dropped with a
        warning on stderr (in strict mode the error propagates): training goes on."""
        with self._lock:
            self._subscribers.append(callback)

    def attach(self, events_path: Path) -> None:
        """Start appending to ``events_path``, including the events emitted so far.

        A process killed while writing can leave a half line at the end of the file; the
        first event appended then starts on a new line, so it is not glued to the half line
        (readers skip the half line, see :func:`read_events`, and keep every whole event).
        Raises OSError when the file cannot be opened.
        """
        with self._lock:
            self._file = open(events_path, "a", encoding="utf-8")
            if not _ends_with_newline(events_path):
                self._file.write("\n")
            for line in self._pending:
                self._file.write(line)
            self._file.flush()
            self._pending.clear()

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        """Write one event of ``type``: ``v``, ``type`` and ``time``, then ``fields`` (made
        plain for JSON); returns the event."""
        event = {"v": SCHEMA_VERSION, "type": type, "time": round(time.time(), 3)}
        event.update(to_jsonable(fields))
        if self.strict:
            problems = validate_event(event, partial=True)
            if problems:
                raise EventSchemaError("; ".join(problems))
        line = json.dumps(event, separators=(",", ":")) + "\n"
        with self._lock:
            if self._stream is not None:
                try:
                    self._stream.write(line)
                    self._stream.flush()
                except (BrokenPipeError, ValueError, OSError):
                    self._stream = None  # the reader went away; keep writing the file
            if self._file is not None:
                try:
                    self._file.write(line)
                    self._file.flush()
                except (OSError, ValueError) as exc:  # disk full, folder gone, read-only
                    self._file_failed(exc)
            elif self.file_error is None:
                self._pending.append(line)
            for callback in list(self._subscribers):
                try:
                    callback(event)
                except Exception as exc:
                    if self.strict:
                        raise
                    self._subscribers.remove(callback)
                    _warn(f"warning: the event display failed ({exc.__class__.__name__}: {exc}); "
                          "the run goes on")
        return event

    def _file_failed(self, exc: Exception) -> None:
        """Stop appending to events.jsonl after a write failed; events still go to the
        stream, and the run itself decides whether it can go on (its next checkpoint
        reports a full disk with a message). Called with the lock held."""
        self.file_error = exc
        file, self._file = self._file, None
        try:
            file.close()  # type: ignore[union-attr]
        except (OSError, ValueError):
            pass
        _warn(f"warning: cannot append to the run's events.jsonl ({exc}); events go on to "
              "stdout only")

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                file, self._file = self._file, None
                try:
                    file.close()
                except (OSError, ValueError) as exc:  # its last flush failed: disk full
                    self.file_error = exc


def _warn(message: str) -> None:
    try:
        print(message, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _ends_with_newline(path: Path) -> bool:
    """Whether ``path`` is empty or its last byte is a newline."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            if f.tell() == 0:
                return True
            f.seek(-1, 2)
            return f.read(1) == b"\n"
    except OSError:
        return True


def parse_event(line: str) -> dict[str, Any] | None:
    """One event from a line, or None for a blank, malformed or truncated line."""
    line = line.strip()
    if not line:
        return None
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return None
    return event


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    """Events of an events.jsonl, skipping lines a crash left half-written."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            event = parse_event(line)
            if event is not None:
                yield event
