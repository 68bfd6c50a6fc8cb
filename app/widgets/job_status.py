"""The status line and progress bar of a page's engine jobs (app.child.engine_jobs)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QBoxLayout, QLabel, QProgressBar, QSizePolicy, QWidget

from app.child.engine_jobs import EngineJob, EngineQueue
from app.style import set_role


class JobStatus(QWidget):
    """What a page's engine children are doing: a word-wrapped status line and a progress
    bar that shows only while a job runs.

    States: a message (:meth:`say`), an error (:meth:`fail`: the line takes the "error"
    role), a job running (:meth:`job_started`: the bar is busy until the job reports
    counts), counted progress (:meth:`job_progress`) and idle (:meth:`jobs_idle`: the bar
    hides). :meth:`follow` wires an :class:`EngineQueue` to these.

    ``vertical`` puts the bar under the line (a narrow column) instead of beside it. The
    bar widens to show its whole text ("embed 1280/2624") up to ``bar_width``; the line
    wraps (a long path without spaces is cut at the edge rather than widening the page).
    """

    def __init__(self, text: str = "", *, vertical: bool = False,
                 bar_width: int | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel(text)
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.progress = QProgressBar()
        self.bar_width = bar_width
        #: what the running job says it does (its line, until something replaces it)
        self._running = ""
        if bar_width is not None:
            self.progress.setMaximumWidth(bar_width)
        self.progress.hide()
        layout = QBoxLayout(QBoxLayout.TopToBottom if vertical else QBoxLayout.LeftToRight,
                            self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label, 1)
        if vertical:
            layout.addWidget(self.progress, 0, Qt.AlignRight)
        else:
            layout.addWidget(self.progress)

    def follow(self, queue: EngineQueue) -> None:
        """Show ``queue``'s jobs: started, progress events and the end of the last one."""
        queue.started.connect(self.job_started)
        queue.progress.connect(self.job_progress)
        queue.idle.connect(self.jobs_idle)

    # --- the line ------------------------------------------------------------------------

    def text(self) -> str:
        return self.label.text()

    def is_error(self) -> bool:
        return self.label.property("role") == "error"

    def say(self, text: str, role: str = "") -> None:
        """Show ``text``; ``role`` is a style role of app.style ("ok", "error" or "")."""
        set_role(self.label, role)
        self.label.setText(text)

    def fail(self, text: str) -> None:
        set_role(self.label, "error")
        self.label.setText(text)

    # --- the bar -------------------------------------------------------------------------

    def job_started(self, job: EngineJob) -> None:
        self.say(job.describe + "…")
        self._running = job.describe
        self.progress.setRange(0, 0)
        self.progress.show()

    def job_progress(self, job: EngineJob, event: dict) -> None:
        """A progress event: a message keeps the bar busy; counts fill it."""
        if "message" in event:
            self.say(f"{job.describe}: {event['message']}")
            self.progress.setRange(0, 0)
        elif event.get("total"):
            phase = event.get("phase", "")
            self.progress.setRange(0, int(event["total"]))
            self.progress.setValue(int(event.get("done", 0)))
            self.progress.setFormat(f"{phase} %v/%m")
            self._fit_bar(f"{phase} {int(event['total'])}/{int(event['total'])}")
            self.say(f"{job.describe}: {phase} {event.get('done')}/{event['total']}")

    def jobs_idle(self) -> None:
        """The last job ended: the bar goes; a line still saying what ran (no result or
        error replaced it) says it is done."""
        self.progress.hide()
        running, self._running = self._running, ""
        if running and not self.is_error() and self.text().startswith(running):
            self.say(f"{running}: done.")

    def _fit_bar(self, widest: str) -> None:
        """Make the bar wide enough for ``widest``, its longest text (chunk and frame
        margins included), within ``bar_width``."""
        need = self.progress.fontMetrics().horizontalAdvance(widest) + 48
        if self.bar_width is not None:
            need = min(need, self.bar_width)
        self.progress.setMinimumWidth(max(need, self.progress.minimumWidth()))
