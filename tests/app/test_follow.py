"""Watching a run that another process trains (a terminal, torchrun on a shared disk): the
runs list says it is running elsewhere, and the Train page follows it live by reading what
is appended to its events.jsonl.

The "other process" is this test, writing synthetic events of the engine's protocol; the
Train page's follower is polled directly after each write (deterministic), and once through
its timer.
"""

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from app.model.run_model import LIVE_EVENTS_S, RUNNING_ELSEWHERE, EventTail, list_runs

pytest.importorskip("PySide6")

from PySide6.QtCore import QSettings

from app.main_window import MainWindow

RUN = "20260101-000000-simclr-shapes"
LONG_AGO = time.time() - 2 * LIVE_EVENTS_S


def event(kind: str, **fields) -> str:
    return json.dumps({"v": 1, "type": kind, "time": round(time.time(), 3), **fields},
                      separators=(",", ":")) + "\n"


RUN_START = event(
    "run_start", run_dir="/cluster/scratch/runs/" + RUN, resumed=False,
    config={"method": "simclr", "batch_size": 8}, dataset={"summary": "24 images",
                                                           "classes": ["circles", "squares"]},
    device={"type": "cuda", "name": "8 x H100"}, steps_per_epoch=3, total_steps=6,
    start_step=0, world_size=8)


def step(n: int) -> str:
    return event("step", step=n, epoch=(n - 1) // 3, loss=3.0 - n / 10, lr=0.1,
                 pairs_per_s=40.0, positive_pair_similarity=0.5, embedding_std=0.8)


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def make_run(root: Path) -> Path:
    """A run folder as a process training elsewhere leaves it after its first event."""
    run_dir = root / RUN
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"method": "simclr",
                                                     "data": "/data/shapes"}))
    (run_dir / "events.jsonl").write_text(RUN_START)
    return run_dir


# --- the model: no Qt ----------------------------------------------------------------------

def test_a_tail_reads_appended_whole_lines_and_keeps_a_half_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(RUN_START)
    tail = EventTail(path)
    assert [json.loads(line)["type"] for line in tail.read().lines] == ["run_start"]
    assert tail.read().lines == []
    line = step(1)
    append(path, line[:25])  # the writer is half-way through a line
    assert tail.read().lines == [] and tail.partial == line[:25].encode()
    append(path, line[25:] + step(2)[:10])
    read = tail.read()
    assert [json.loads(x)["step"] for x in read.lines] == [1] and not read.restarted
    append(path, step(2)[10:])
    assert [json.loads(x)["step"] for x in tail.read().lines] == [2]
    read = tail.read(max_bytes=0)
    assert read.lines == [] and read.more  # a read cut at its limit says there is more
    # Rewritten (a new file, or the same cut shorter): read again from the start.
    path.write_text(RUN_START + step(1))
    read = tail.read()
    assert read.restarted and [json.loads(x)["type"] for x in read.lines] == [
        "run_start", "step"]
    replaced = tmp_path / "new.jsonl"
    replaced.write_text(RUN_START + step(1) + step(2))
    os.replace(replaced, path)
    read = tail.read()
    assert read.restarted and len(read.lines) == 3


def test_a_fresh_run_without_its_end_is_running_elsewhere_and_a_stale_one_interrupted(
        tmp_path):
    run_dir = make_run(tmp_path)
    append(run_dir / "events.jsonl", step(1))
    (summary,) = list_runs(tmp_path)
    assert (summary.status, summary.steps) == (RUNNING_ELSEWHERE, 1)
    events = run_dir / "events.jsonl"
    os.utime(events, (LONG_AGO, LONG_AGO))  # the process died long ago
    assert list_runs(tmp_path)[0].status == "interrupted"
    append(events, step(2))  # ... or it was resumed elsewhere
    assert (list_runs(tmp_path)[0].status, list_runs(tmp_path)[0].steps) == (
        RUNNING_ELSEWHERE, 2)
    append(events, event("run_end", status="finished", reason="done", step=2, epoch=1))
    assert list_runs(tmp_path)[0].status == "finished"
    os.utime(events, (LONG_AGO, LONG_AGO))
    assert list_runs(tmp_path)[0].status == "finished"


def test_a_follower_sends_what_an_engine_child_would(qtbot, tmp_path):
    from app.child.run_follower import RunFollower

    run_dir = make_run(tmp_path)
    follower = RunFollower()
    events, malformed, ended, logs = [], [], [], []
    follower.event.connect(events.append)
    follower.malformed.connect(malformed.append)
    follower.ended.connect(lambda *args: ended.append(args))
    follower.log.connect(logs.append)
    with qtbot.waitSignal(follower.note) as note:
        follower.follow(run_dir)
    assert note.args == ["reading its events…"] and follower.is_polling()
    append(run_dir / "events.jsonl", step(1) + "not json\n")
    follower.poll()
    assert [e["type"] for e in events] == ["run_start", "step"] and malformed == ["not json"]
    with qtbot.waitSignal(follower.restarted):  # the file is rewritten: read from its start
        (run_dir / "events.jsonl").write_text(RUN_START + step(1) + step(2))
        follower.poll()
    assert "read again from its start" in logs[-1] and len(events) == 5
    append(run_dir / "events.jsonl", event("run_end", status="stopped", reason="asked"))
    follower.poll()
    assert ended == [("stopped", 0, "asked")]
    assert not follower.is_following() and not follower.is_polling()
    follower.follow(run_dir)
    shutil.rmtree(run_dir)
    with qtbot.waitSignal(follower.gone) as gone:
        follower.poll()
    assert gone.args == [run_dir] and follower.run_dir is None


# --- the window ----------------------------------------------------------------------------

@pytest.fixture
def window_beside_a_run(qtbot, tmp_path):
    """A window whose runs folder holds one run that "another process" is training."""
    run_dir = make_run(tmp_path / "runs")
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    win = MainWindow(tmp_path / "runs", cache_dir=tmp_path / "cache", settings=settings)
    qtbot.addWidget(win)
    win.show()
    yield win, run_dir
    box = getattr(win.train_page, "failure_box", None)
    if box is not None:
        box.close()
    win.data_page.shutdown()
    win.augment_page.close()


def curve_points(page) -> int:
    page.curves.redraw_all()
    x, _ = page.curves.curves["loss"].getData()
    return 0 if x is None else len(x)


def test_a_run_trained_elsewhere_is_followed_live_to_its_end(qtbot, window_beside_a_run):
    win, run_dir = window_beside_a_run
    page, events = win.train_page, run_dir / "events.jsonl"
    assert win.sidebar.runs.count() == 1 and RUNNING_ELSEWHERE in win.sidebar.runs.item(0).text()
    assert win.runs_watcher.live_refresh.isActive()  # the list keeps it current

    # Double-click: the Train page shows it as its own run.
    win.sidebar.runs.itemDoubleClicked.emit(win.sidebar.runs.item(0))
    assert win.tabs.currentWidget() is page and page.following == run_dir
    assert page.run_dir == run_dir  # not the path on the machine that trains it
    assert "Following" in page.status.text() and "Training on 8 x H100" in page.status.text()
    assert curve_points(page) == 0

    # Steps appended show as they come, a line split across two writes once it is whole.
    append(events, step(1) + step(2))
    page.follower.poll()
    assert page.history.steps == [1, 2] and curve_points(page) == 2
    line = step(3)
    append(events, line[:30])
    page.follower.poll()
    assert page.history.steps == [1, 2]
    append(events, line[30:])
    page.follower.poll()
    assert page.history.steps == [1, 2, 3] and curve_points(page) == 3
    assert page.progress.value() == 50 and "step 3 of 6" in page.status.text()
    assert "left" in page.status.text()  # an ETA from its speed

    # A malformed line is said in the log and skipped; the lines after it still count.
    append(events, '{"v":1,"type":"step","step":\n' + event(
        "eval", epoch=1, step=3, knn_top1=0.75, knn_k=20, images=6, seconds=0.5) + step(4))
    page.follower.poll()
    assert page.history.steps == [1, 2, 3, 4] and page.history.knn == [(3, 0.75)]
    # The runs list's line follows the live step of the followed run.
    assert "step 4 of 6" in win.sidebar.runs.item(0).text()
    assert "best kNN 75.0%" in win.sidebar.runs.item(0).text()
    assert "[ignored a malformed event line]" in page.log.toPlainText()
    assert "kNN accuracy 75.0%" in page.log.toPlainText()
    assert page.following == run_dir

    # It cannot be stopped from here, and nothing else trains on it meanwhile.
    assert not page.stop_button.isEnabled() and "SIGTERM" in page.stop_button.toolTip()
    assert not win.actions["stop"].isEnabled() and "Ctrl+C" in win.actions["stop"].toolTip()
    assert not page.start_button.isEnabled() and not win.actions["start"].isEnabled()
    assert not page.resume_button.isEnabled() and win.actions["unfollow"].isEnabled()
    page.start()
    assert "Not started" in page.status.text() and "Stop following" in page.status.text()
    page.resume()
    assert "Not resumed" in page.status.text() and "overwrite" in page.status.text()
    assert not page.engine.is_running() and page.following == run_dir
    assert not win.delete_selected_run(confirm=False) and run_dir.is_dir()
    win.message_box.close()

    # The page's timer reads on its own.
    append(events, step(5))
    qtbot.waitUntil(lambda: page.history.steps[-1] == 5, timeout=5_000)

    # Its end shows like an own run's, and the runs list follows.
    with qtbot.waitSignal(page.run_changed, timeout=5_000):
        append(events, event("checkpoint", path=str(run_dir / "checkpoints" / "last.pt"),
                             epoch=2, step=5)
               + event("run_end", status="stopped", reason="stop requested", step=5,
                       epoch=1))
        (run_dir / "checkpoints" / "last.pt").write_bytes(b"weights")
        page.follower.poll()
    assert page.following is None and page.history.status == "stopped"
    assert page.status.text().startswith("Run stopped at step 5 of 6: stop requested")
    assert page.start_button.isEnabled() and win.actions["start"].isEnabled()
    assert page.resume_button.isEnabled()  # it ended: resuming it here is safe
    assert not win.actions["unfollow"].isEnabled()
    text = win.sidebar.runs.item(0).text()
    assert "stopped" in text and "step 5" in text and RUNNING_ELSEWHERE not in text
    assert not win.runs_watcher.live_refresh.isActive()


def test_a_followed_run_that_goes_quiet_is_interrupted(qtbot, window_beside_a_run):
    win, run_dir = window_beside_a_run
    page, events = win.train_page, run_dir / "events.jsonl"
    page.stop_following(quiet=True)  # (the list may have selected it on getting the focus)
    win.sidebar.runs.setCurrentRow(-1)
    assert page.is_idle() and page.following is None
    win.select_run(run_dir)  # the Train page is idle: selecting the run follows it
    assert page.following == run_dir and win.tabs.currentWidget() is not page
    append(events, step(1))
    os.utime(events, (LONG_AGO, LONG_AGO))  # and then nothing, for a long time
    page.follower.poll()
    assert page.following is None and page.history.status == "interrupted"
    assert "Run interrupted: no new events" in page.status.text()
    assert page.failure_box.isVisible()
    page.failure_box.close()
    win.refresh_runs()
    assert "interrupted" in win.sidebar.runs.item(0).text()
    assert not win.runs_watcher.live_refresh.isActive()


def test_following_another_run_or_stopping_leaves_the_first(qtbot, window_beside_a_run):
    win, run_dir = window_beside_a_run
    other = run_dir.parent / "20260102-000000-moco-birds"
    shutil.copytree(run_dir, other)
    win.refresh_runs()
    assert [RUNNING_ELSEWHERE in win.sidebar.runs.item(i).text() for i in range(2)] == [True, True]
    assert win.follow_run(run_dir) and page_of(win).following == run_dir
    win.select_run(other)  # not idle now: selecting does not switch
    assert page_of(win).following == run_dir
    assert win.follow_run(other) and page_of(win).following == other
    win.actions["unfollow"].trigger()
    page = page_of(win)
    assert page.following is None and "Stopped following" in page.status.text()
    assert not page.resume_button.isEnabled()  # it may still be going: not resumable here
    assert page.start_button.isEnabled() == page.form.is_valid()
    # A followed run whose folder goes away stops being followed, and says so.
    assert win.follow_run(run_dir)
    shutil.rmtree(run_dir)
    page.follower.poll()
    assert page.following is None and "folder is gone" in page.status.text()


def page_of(win):
    return win.train_page
