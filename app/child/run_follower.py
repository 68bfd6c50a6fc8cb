"""A run that another process trains (a terminal, torchrun on a shared disk), followed by
reading what is appended to its events.jsonl.

:class:`RunFollower` sends the signals of :class:`app.child.engine_process.EngineProcess`
(``event``, ``malformed``, ``log``, ``result``, ``ended``), so the Train page shows a run
it follows exactly as one its own engine child trains.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from app.model.run_model import LIVE_EVENTS_S, EventTail
from engine.run.events import parse_event
from engine.run.layout import RunDir

#: How often the events.jsonl of a run followed live is read for what was appended.
FOLLOW_POLL_MS = 1000
#: At most this much of a followed events.jsonl is read at once, so catching up with a long
#: run never holds the window; the rest is read right after.
FOLLOW_CHUNK_BYTES = 1 << 20


class RunFollower(QObject):
    """Reads one run folder's events.jsonl from its start, then every FOLLOW_POLL_MS for
    what was appended (whole lines only; a line still being written waits for its end).

    The followed run ends with its last run_end (a resume starts anew with a run_start),
    or when its events have not changed for LIVE_EVENTS_S ("interrupted": the process
    training it seems to have died). Following stops on its own then, before ``ended``.

    Signals:
        event(dict): an event of the run, in order.
        malformed(str): a line that is not a valid event (reported, then skipped).
        log(str): a note on the event stream for the run's log.
        result(dict): never sent (a training run has no results); here for the same
            connections as an EngineProcess.
        ended(str, int, str): the followed run ended: its status, 0, and the reason.
        restarted(): events.jsonl was replaced or cut short; it is read again from its
            start, so what was shown of it is to be forgotten.
        note(str): how the reading goes, for a status line ("waiting for its first
            events…", "cannot read ... trying again").
        gone(object): the run folder (Path) was deleted or moved; following stopped.
    """

    event = Signal(dict)
    malformed = Signal(str)
    log = Signal(str)
    result = Signal(dict)
    ended = Signal(str, int, str)
    restarted = Signal()
    note = Signal(str)
    gone = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        #: The run folder followed, or None.
        self.run_dir: Path | None = None
        self._tail: EventTail | None = None
        self._run_end: dict | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(FOLLOW_POLL_MS)
        self._timer.timeout.connect(self.poll)

    def is_following(self) -> bool:
        return self.run_dir is not None

    def is_polling(self) -> bool:
        """Whether the timer reads the followed run (for tests and shutdown)."""
        return self._timer.isActive()

    def follow(self, run_dir: Path) -> None:
        """Follow ``run_dir`` from the start of its events; the first read is at the next
        :meth:`poll` (call it at once to show what is there)."""
        self.stop()
        self.run_dir = Path(run_dir)
        self._tail = EventTail(RunDir(self.run_dir).events)
        self._run_end = None
        self.note.emit("reading its events…")
        self._timer.start()

    def stop(self) -> None:
        """Stop reading (the run goes on where it runs)."""
        self._timer.stop()
        self.run_dir, self._tail = None, None

    def poll(self) -> None:
        """Send what the followed run's events.jsonl gained since the last poll."""
        run_dir, tail = self.run_dir, self._tail
        if run_dir is None or tail is None:
            return
        try:
            read = tail.read(FOLLOW_CHUNK_BYTES)
        except FileNotFoundError:
            if RunDir(run_dir).is_run():
                self.note.emit("waiting for its first events…")  # it has only just started
                return
            self.stop()
            self.gone.emit(run_dir)
            return
        except OSError as exc:  # no permission, a network share gone away: try again
            self.note.emit(f"cannot read {RunDir(run_dir).events} ({exc.strerror or exc}); "
                           "trying again every second.")
            return
        if read.restarted:
            self._run_end = None
            self.restarted.emit()
            self.log.emit("[event stream] events.jsonl was replaced or cut short; read again "
                          "from its start")
        for line in read.lines:
            if not line.strip():
                continue
            event = parse_event(line)
            if event is None:
                self.malformed.emit(line[:500])
                continue
            kind = event.get("type")
            if kind == "run_start":
                self._run_end = None
            elif kind == "run_end":
                self._run_end = event
            self.event.emit(event)
            if self._tail is not tail:
                return  # a slot of a signal sent for this event stopped following
        if read.more:
            QTimer.singleShot(0, self.poll)
        elif self._run_end is not None:  # its last run_end (a resume starts anew)
            status = self._run_end.get("status")
            status = status if isinstance(status, str) and status else "failed"
            self.stop()
            self.ended.emit(status, 0, str(self._run_end.get("reason", "")))
        elif tail.mtime is not None and time.time() - tail.mtime > LIVE_EVENTS_S:
            self.stop()
            self.ended.emit("interrupted", 0, (
                f"no new events for more than {LIVE_EVENTS_S // 60} min and no end: the "
                "process training it seems to have stopped"))
