"""The status line and progress bar of a page's engine jobs, state by state."""

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QObject, Signal

from app.child.engine_jobs import EngineJob
from app.widgets.job_status import JobStatus

JOB = EngineJob("map", ["map"], "Making the PCA map")


class FakeQueue(QObject):
    """The signals of an EngineQueue, sent by the test."""

    started = Signal(object)
    progress = Signal(object, dict)
    cancelled = Signal(object, dict)
    idle = Signal()


@pytest.fixture
def status(qtbot):
    widget = JobStatus("Choose a run.")
    qtbot.addWidget(widget)
    widget.show()
    return widget


def test_messages_and_errors(status):
    assert status.text() == "Choose a run." and not status.is_error()
    assert not status.progress.isVisible()
    status.fail("The run folder is gone.")
    assert status.text() == "The run folder is gone." and status.is_error()
    assert status.label.property("role") == "error"
    status.say("Cancelled.")
    assert status.text() == "Cancelled." and not status.is_error()


def test_a_job_shows_busy_then_counts_then_hides(status):
    queue = FakeQueue()
    status.follow(queue)
    status.fail("an old error")
    queue.started.emit(JOB)
    assert status.text() == "Making the PCA map…" and not status.is_error()
    assert status.progress.isVisible()
    assert (status.progress.minimum(), status.progress.maximum()) == (0, 0)  # busy
    queue.progress.emit(JOB, {"type": "progress", "phase": "embed", "done": 3, "total": 12})
    assert (status.progress.maximum(), status.progress.value()) == (12, 3)
    assert status.progress.format() == "3 of 12 images"
    assert status.text() == "Making the PCA map: Embedding"
    queue.progress.emit(JOB, {"type": "progress", "phase": "umap", "message": "fitting"})
    assert status.text() == "Making the PCA map: fitting" and status.progress.maximum() == 0
    queue.idle.emit()  # nothing replaced the job's line: it says the job is done
    assert not status.progress.isVisible() and status.text() == "Making the PCA map: done."
    queue.started.emit(JOB)
    status.say("PCA map of 24 images made in 0.1 s.")  # a result's own words stay
    queue.idle.emit()
    assert status.text() == "PCA map of 24 images made in 0.1 s."


def test_the_bar_can_sit_under_the_line(qtbot):
    widget = JobStatus(vertical=True, bar_width=220)
    qtbot.addWidget(widget)
    widget.show()
    widget.job_started(JOB)
    assert widget.progress.maximumWidth() == 220
    assert widget.progress.geometry().top() >= widget.label.geometry().bottom()


@pytest.mark.parametrize("vertical", [False, True])
def test_counts_are_shown_whole(qtbot, vertical):
    """The bar's text ("1,280 of 2,624 images") is never cut, even beside a long line, and the
    line wraps to show all of its text."""
    widget = JobStatus(vertical=vertical, bar_width=220 if vertical else None)
    qtbot.addWidget(widget)
    widget.resize(330 if vertical else 900, 60)
    widget.show()
    widget.job_started(EngineJob("map", ["map"], "Making the PCA map of " + "many " * 40))
    widget.job_progress(JOB, {"type": "progress", "phase": "embed", "done": 1280,
                              "total": 2624})
    qtbot.waitUntil(lambda: widget.progress.isVisible(), timeout=2000)
    widget.adjustSize()
    widget.resize(330 if vertical else 900, widget.heightForWidth(widget.width()))
    qtbot.wait(20)
    bar = widget.progress
    assert bar.text() == "1,280 of 2,624 images"
    assert bar.fontMetrics().horizontalAdvance(bar.text()) + 16 <= bar.width()
    label = widget.label
    assert label.text().endswith(": Embedding")
    assert label.heightForWidth(label.width()) <= label.height()
