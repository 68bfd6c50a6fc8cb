"""The engine's event stream: one JSON object per line (schema version 1).

Every event is written to stdout (for the app that started the engine) and appended to
``run_dir/events.jsonl`` (for replay, and for opening a run later). Human-readable logs go
to stderr. Every event has ``v`` (schema version), ``type`` and ``time`` (Unix seconds).
Readers must ignore unknown types and unknown fields (newer engines may add them).

Types and their fields (see README, "Event stream"):

- ``run_start``: run_dir, resumed, config (resolved), auto (why each automatic value was
  chosen), dataset {root, images, classes, class_counts, skipped}, device {type, name,
  memory_gb}, steps_per_epoch, total_steps, start_step
- ``progress``: phase ("scan", "decode", ...), done, total, message
- ``warning``: message
- ``step``: step, epoch, loss, lr, pairs_per_s, positive_pair_similarity, embedding_std
  (and momentum for MoCo)
- ``epoch_end``: epoch, step, loss (mean over the epoch), seconds
- ``eval``: epoch (epochs done), step, knn_top1 (weighted kNN accuracy of the frozen
  features on a fixed held-out split, 0-1), knn_k, images, seconds; only with labels
- ``checkpoint``: path, epoch, step
- ``run_end``: status ("finished", "stopped" or "failed"), reason, step, epoch
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from engine.io import to_jsonable

SCHEMA_VERSION = 1


class EventWriter:
    """Writes events to a stream (stdout by default) and, once a run directory exists, to
    its events.jsonl. Thread-safe."""

    def __init__(self, stream: IO[str] | None = sys.stdout) -> None:
        self._stream = stream
        self._file: IO[str] | None = None
        self._lock = threading.Lock()
        self._pending: list[str] = []  # events emitted before the run directory existed

    def attach(self, events_path: Path) -> None:
        """Start appending to ``events_path``, including the events emitted so far."""
        with self._lock:
            self._file = open(events_path, "a", encoding="utf-8")
            for line in self._pending:
                self._file.write(line)
            self._file.flush()
            self._pending.clear()

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        event = {"v": SCHEMA_VERSION, "type": type, "time": round(time.time(), 3)}
        event.update(to_jsonable(fields))
        line = json.dumps(event, separators=(",", ":")) + "\n"
        with self._lock:
            if self._stream is not None:
                try:
                    self._stream.write(line)
                    self._stream.flush()
                except (BrokenPipeError, ValueError, OSError):
                    self._stream = None  # the reader went away; keep writing the file
            if self._file is not None:
                self._file.write(line)
                self._file.flush()
            else:
                self._pending.append(line)
        return event

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


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
