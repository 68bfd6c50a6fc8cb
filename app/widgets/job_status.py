"""The status line and progress row of a page's engine jobs (app.child.engine_jobs): what
runs, a bar with its count ("12,345 of 100,000 images"), its rate and time left ("1,234
images/s · about 2 min left"), a Cancel button, and what a cancel kept."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QBoxLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QWidget,
)

from app.child.engine_jobs import EngineJob, EngineQueue
from app.style import set_role
from engine.cli.text import clock
from engine.run.progress import PHASES, RateEstimate, about, rate_text

#: How often the rate line is redrawn between events (its time left counts down).
TICK_MS = 1000


def phase_words(event: dict) -> tuple[str, str]:
    """(title, unit) of a progress event's phase for people: ("Embedding", "images")."""
    phase = str(event.get("phase") or "")
    title, _, unit = PHASES.get(phase, (phase.capitalize() or "Working", "", "items"))
    return title, str(event.get("unit") or unit)


def kept_after_cancel(job: EngineJob, last: dict) -> str:
    """What a cancelled job leaves, for people, from its last progress event ({}: none)."""
    phase = last.get("phase")
    done, total = last.get("done"), last.get("total")
    counted = (f" ({done:,} of {total:,})" if isinstance(done, int) and isinstance(total, int)
               else "")
    if phase == "decode":
        return (f"Cancelled while decoding the images{counted}. The decoded images are kept: "
                "the next start resumes from there.")
    if phase == "scan":
        return "Cancelled while scanning the folder; nothing was changed."
    if phase == "embed":
        return (f"Cancelled while embedding{counted}. No embeddings were saved for it (ones "
                "saved before stay); the decoded images are kept, so embedding again "
                "starts at once.")
    if phase in ("map", "place"):
        return ("Cancelled while making the map. A map is saved only when it is complete: "
                "the one shown before stays.")
    return (f"Cancelled: {job.describe[:1].lower() + job.describe[1:]}{counted}. Nothing "
            "half-made was saved; results saved before stay.")


class JobStatus(QWidget):
    """What a page's engine children are doing: a word-wrapped status line, and a progress
    row (bar, rate and time left, and with ``cancel`` a Cancel button) that shows only while
    a job runs.

    States: a message (:meth:`say`), an error (:meth:`fail`: the line takes the "error"
    role), a job running (:meth:`job_started`: the bar is busy, the rate line counts the
    time elapsed, until the job reports counts), counted progress (:meth:`job_progress`:
    "12,345 of 100,000 images" in the bar; the rate and "about 2 min left" from the recent,
    smoothed rate once a few seconds of counts exist, engine.run.progress.RateEstimate), a
    cancel (:meth:`job_cancelled`: what was kept) and idle (:meth:`jobs_idle`: the row
    hides). :meth:`follow` wires an :class:`EngineQueue` to these.

    ``vertical`` puts the row under the line and the rate under the bar (a narrow column)
    instead of beside it. The bar widens to show its whole text up to ``bar_width``; the
    line wraps (a long path without spaces is cut at the edge rather than widening the
    page).

    Signals:
        cancel_requested(): the Cancel button was pressed (the page cancels its jobs).
    """

    cancel_requested = Signal()

    def __init__(self, text: str = "", *, vertical: bool = False,
                 bar_width: int | None = None, cancel: bool = False,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel(text)
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.progress = QProgressBar()
        self.rate = QLabel()  # "1,234 images/s · about 2 min left" or "0:12 elapsed"
        self.rate.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.bar_width = bar_width
        self.cancel_button: QPushButton | None = None
        #: what the running job says it does (its line, until something replaces it)
        self._running = ""
        self._started = 0.0  # when the running job started (time.time())
        self._estimate = RateEstimate()
        self._phase = ""
        self._unit = ""
        self._timer = QTimer(self)
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self._show_rate)
        if bar_width is not None:
            self.progress.setMaximumWidth(bar_width)
        self.progress.hide()
        self.rate.hide()
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.progress)
        if not vertical:
            row.addWidget(self.rate)
        if cancel:
            self.cancel_button = QPushButton("Cancel")
            self.cancel_button.setToolTip("Stop the engine's work; what is done is kept "
                                          "(a cache being built resumes where it stopped)")
            self.cancel_button.setEnabled(False)
            self.cancel_button.clicked.connect(self.cancel_requested)
            row.addWidget(self.cancel_button)
        layout = QBoxLayout(QBoxLayout.TopToBottom if vertical else QBoxLayout.LeftToRight,
                            self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label, 1)
        if vertical:  # a narrow column: the rate goes under the bar
            row.insertStretch(0, 1)
        layout.addLayout(row)
        if vertical:
            layout.addWidget(self.rate, 0, Qt.AlignRight)

    def follow(self, queue: EngineQueue) -> None:
        """Show ``queue``'s jobs: started, progress events, a cancel and the end of the
        last one."""
        queue.started.connect(self.job_started)
        queue.progress.connect(self.job_progress)
        queue.cancelled.connect(self.job_cancelled)
        queue.idle.connect(self.jobs_idle)

    # --- the line ------------------------------------------------------------------------

    def text(self) -> str:
        return self.label.text()

    def rate_text(self) -> str:
        """The rate line as shown ("" when hidden)."""
        return self.rate.text() if not self.rate.isHidden() else ""

    def is_error(self) -> bool:
        return self.label.property("role") == "error"

    def say(self, text: str, role: str = "") -> None:
        """Show ``text``; ``role`` is a style role of app.style ("ok", "error" or "")."""
        set_role(self.label, role)
        self.label.setText(text)

    def fail(self, text: str) -> None:
        set_role(self.label, "error")
        self.label.setText(text)

    # --- the row -------------------------------------------------------------------------

    def job_started(self, job: EngineJob) -> None:
        self.say(job.describe + "…")
        self._running = job.describe
        self._started = time.time()
        self._estimate.reset()
        self._phase = self._unit = ""
        self.progress.setRange(0, 0)
        self.progress.show()
        self.rate.show()
        if self.cancel_button is not None:
            self.cancel_button.setEnabled(True)
        self._timer.start()
        self._show_rate()

    def job_progress(self, job: EngineJob, event: dict) -> None:
        """A progress event: a message keeps the bar busy; counts fill it."""
        if "message" in event and not isinstance(event.get("total"), int):
            self.say(f"{job.describe}: {event['message']}")
            self.progress.setRange(0, 0)
            self._phase = ""
            self._estimate.reset()
        elif isinstance(event.get("total"), int) and event["total"] > 0:
            done, total = int(event.get("done") or 0), int(event["total"])
            title, unit = phase_words(event)
            phase = str(event.get("phase") or "")
            if phase != self._phase:
                self._estimate.reset()
                self._phase = phase
            self._unit = unit
            when = event.get("time")
            self._estimate.update(float(when) if isinstance(when, (int, float))
                                  else time.time(), done, total)
            self.progress.setRange(0, total)
            self.progress.setValue(min(done, total))
            text = f"{done:,} of {total:,} {unit}"
            self.progress.setFormat(text)
            self._fit_bar(f"{total:,} of {total:,} {unit}")
            self.say(f"{job.describe}: {title}")
        self._show_rate()

    def job_cancelled(self, job: EngineJob, last: dict) -> None:
        """The running job was cancelled: say what it kept (the queue may start the next
        job at once, which then takes the line)."""
        self._end_row()
        self._running = ""
        self.say(kept_after_cancel(job, last))

    def jobs_idle(self) -> None:
        """The last job ended: the row goes; a line still saying what ran (no result or
        error replaced it) says it is done."""
        self._end_row()
        running, self._running = self._running, ""
        if running and not self.is_error() and self.text().startswith(running):
            self.say(f"{running}: done.")

    def _end_row(self) -> None:
        self._timer.stop()
        self.progress.hide()
        self.rate.hide()
        if self.cancel_button is not None:
            self.cancel_button.setEnabled(False)

    def _show_rate(self) -> None:
        now = time.time()
        rate, left = self._estimate.rate, self._estimate.left(now)
        if self._phase and rate:
            parts = [rate_text(rate, self._unit)]
            if left is not None:
                parts.append(f"{about(left)} left")
            self.rate.setText(" · ".join(parts))
        else:  # no counts yet, or too few seconds of them for a rate
            self.rate.setText(f"{clock(now - self._started)} elapsed")

    def _fit_bar(self, widest: str) -> None:
        """Make the bar wide enough for ``widest``, its longest text (chunk and frame
        margins included), within ``bar_width``."""
        need = self.progress.fontMetrics().horizontalAdvance(widest) + 48
        if self.bar_width is not None:
            need = min(need, self.bar_width)
        self.progress.setMinimumWidth(max(need, self.progress.minimumWidth()))
