"""The progress row of a page's engine job: count, recent rate, time left and Cancel, driven
by progress events; a cancel says what was kept; and a real cache build cancelled from the
app resumes where it stopped."""

import json
import time

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QObject, Qt, Signal

from app.child.engine_jobs import CANCEL_GRACE_MS, EngineJob, EngineQueue
from app.widgets.job_status import JobStatus, kept_after_cancel
from tests.helpers.folders import make_slow_folder

JOB = EngineJob("embed", ["embed"], "Embedding the images with last")


class FakeQueue(QObject):
    """The signals of an EngineQueue, sent by the test."""

    started = Signal(object)
    progress = Signal(object, dict)
    cancelled = Signal(object, dict)
    idle = Signal()


@pytest.fixture
def row(qtbot):
    widget = JobStatus("Choose a run.", cancel=True)
    qtbot.addWidget(widget)
    widget.resize(900, 60)
    widget.show()
    queue = FakeQueue()
    widget.follow(queue)
    return widget, queue


def progress(done, total, when, phase="decode", unit=None):
    event = {"type": "progress", "phase": phase, "done": done, "total": total, "time": when}
    if unit:
        event["unit"] = unit
    return event


def test_the_row_shows_count_rate_and_time_left_once_seconds_of_counts_exist(qtbot, row):
    status, queue = row
    assert not status.cancel_button.isEnabled() and not status.progress.isVisible()
    queue.started.emit(JOB)
    assert status.cancel_button.isEnabled() and status.progress.isVisible()
    assert status.rate_text().endswith("elapsed")  # nothing counted yet
    now = time.time()
    # 10 images a second, 1,000 of 100,000 after the first 1.5 s: too soon for a rate
    queue.progress.emit(JOB, progress(0, 100_000, now - 1.5))
    queue.progress.emit(JOB, progress(15, 100_000, now))
    assert status.progress.format() == "15 of 100,000 images"
    assert status.rate_text().endswith("elapsed") and "left" not in status.rate_text()
    # 5 s later at 400 a second: the rate is the recent one, the time left follows from it
    start = now - 10
    events = [progress(400 * t, 100_000, start + t) for t in range(11)]
    queue.progress.emit(JOB, progress(0, 1, start - 1, phase="scan"))  # another phase first
    for event in events:
        queue.progress.emit(JOB, event)
    assert status.progress.value() == 4000 and status.progress.maximum() == 100_000
    assert status.progress.format() == "4,000 of 100,000 images"
    assert status.text() == "Embedding the images with last: Decoding"
    # (100,000 - 4,000) / 400 = 240 s, less the moments since the last event
    assert status.rate_text() == "400 images/s · about 4 min left"


def test_the_unit_of_the_event_is_shown(row):
    status, queue = row
    queue.started.emit(JOB)
    queue.progress.emit(JOB, progress(40, 200, time.time(), phase="map", unit="epochs"))
    assert status.progress.format() == "40 of 200 epochs"
    assert status.text().endswith(": UMAP layout")
    queue.progress.emit(JOB, {"type": "progress", "phase": "map", "message": "Finding "
                              "each point's neighbours"})
    assert status.progress.maximum() == 0 and status.rate_text().endswith("elapsed")


def test_cancel_asks_the_page_and_the_line_says_what_was_kept(qtbot, row):
    status, queue = row
    queue.started.emit(JOB)
    queue.progress.emit(JOB, progress(1234, 5000, time.time()))
    with qtbot.waitSignal(status.cancel_requested, timeout=1000):
        qtbot.mouseClick(status.cancel_button, Qt.LeftButton)
    queue.cancelled.emit(JOB, progress(1234, 5000, time.time()))
    assert status.text() == ("Cancelled while decoding the images (1,234 of 5,000). The "
                             "decoded images are kept: the next start resumes from there.")
    assert not status.progress.isVisible() and not status.cancel_button.isEnabled()
    queue.idle.emit()
    assert status.text().startswith("Cancelled while decoding")  # not "done"


def test_what_each_phase_keeps():
    assert "saved only when it is complete" in kept_after_cancel(JOB, {"phase": "place"})
    assert "No embeddings were saved" in kept_after_cancel(
        JOB, {"phase": "embed", "done": 3, "total": 9})
    assert kept_after_cancel(JOB, {}) == ("Cancelled: embedding the images with last. "
                                          "Nothing half-made was saved; results saved "
                                          "before stay.")


def _partial_done(cache):
    found = list(cache.rglob("*.partial.json"))
    return json.loads(found[0].read_text())["done"] if found else None


@pytest.mark.slow  # two engine children decoding 160 large PNGs: about a minute
def test_a_cache_build_cancelled_in_the_app_resumes_where_it_stopped(qtbot, trained_run,
                                                                     tmp_path):
    run_dir, _ = trained_run
    folder = make_slow_folder(tmp_path / "big", 160)
    cache = tmp_path / "cache"
    queue = EngineQueue(cache)
    status = JobStatus(cancel=True)
    qtbot.addWidget(status)
    status.follow(queue)
    seen, results = [], []
    queue.progress.connect(lambda job, event: seen.append(event))
    job = EngineJob("embed", ["embed", "--run", str(run_dir), "--data", str(folder)],
                    "Embedding the big folder", on_result=results.append)

    def decoding():
        return [e["done"] for e in seen if e.get("phase") == "decode"
                and 0 < e["done"] < e["total"]]

    queue.enqueue(job)
    qtbot.waitUntil(lambda: bool(decoding()), timeout=120_000)
    ended = []
    queue._engine.ended.connect(lambda *how: ended.append(how))
    with qtbot.waitSignal(queue.cancelled, timeout=1000) as cancelled:
        queue.cancel()
    assert cancelled.args[1]["phase"] == "decode"
    assert status.text().startswith("Cancelled while decoding the images (")
    # SIGINT: the child saves what it decoded at once; it has exited, or was killed, when
    # the grace time is over (decoding processes finish their chunk first)
    qtbot.waitUntil(lambda: bool(ended), timeout=CANCEL_GRACE_MS + 5000)
    told = max(decoding())
    kept = _partial_done(cache)
    assert kept is not None and told <= kept < 160

    seen.clear()
    queue.enqueue(job)
    qtbot.waitUntil(lambda: bool(results) and not queue.is_busy(), timeout=180_000)
    counted = [e["done"] for e in seen if e.get("phase") == "decode"]
    assert counted and counted[0] >= kept  # from where it stopped, not from 0
    assert results[0]["images"] == 160 and _partial_done(cache) is None


def test_the_train_page_counts_the_decoding_with_its_rate_and_time_left(qtbot, tmp_path):
    from app.pages.train_page import TrainPage

    page = TrainPage(tmp_path / "runs", tmp_path / "cache")
    qtbot.addWidget(page)
    now = time.time()
    for t in range(6):  # 500 images a second for 5 s, of 50,000
        page._on_event({"v": 1, "type": "progress", "time": now - 5 + t, "phase": "decode",
                        "done": 500 * t, "total": 50_000, "message": "decoded"})
    assert page.progress.format() == "Decoding 2,500 of 50,000 images"
    assert page.progress.value() == 5
    # (50,000 - 2,500) / 500 = 95 s
    assert page.status.text() == ("Decoding 2,500 of 50,000 images · 500 images/s · "
                                  "about 2 min left")
