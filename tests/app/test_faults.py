"""Bad input, faults and crashes lose nothing: the window stays up, says what happened and
keeps the runs list right, whatever the engine child or the file system does.

pytest-qt turns an exception raised in any slot into a test failure, so every test here
also checks that the fault was handled, not merely survived.
"""

import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QPushButton

from app.child import engine_process
from app.child.engine_process import EngineProcess
from app.main_window import MainWindow
from app.model.run_model import RunHistory, event_problems
from app.pages.train_page import TrainPage
from engine.run.checkpoint import load_checkpoint
from tests.helpers.folders import make_folder

ENGINE_MS = 120_000  # a real engine child: start, scan, decode, first steps (2 busy cores)


def fake(code: str):
    """An engine command that runs ``code`` instead of the engine."""
    return lambda: (sys.executable, ["-c", code])


def event_line(**fields) -> str:
    return json.dumps({"v": 1, **fields})


# --- 1. the event stream ------------------------------------------------------------------

def test_event_problems_name_the_field_and_what_is_wrong():
    assert event_problems({"type": "step", "step": 3, "loss": 1.5, "lr": None}) == []
    assert event_problems({"type": "step", "step": 3}) == ["step event: loss is missing"]
    assert event_problems({"type": "step", "step": "3", "loss": "low", "lr": True}) == [
        "step event: step is text, not an integer", "step event: loss is text, not a number",
        "step event: lr is true/false, not a number"]
    assert event_problems({"type": "run_start", "run_dir": 5, "config": []}) == [
        "run_start event: run_dir is an integer, not text",
        "run_start event: config is a list, not an object"]
    assert event_problems({"type": "from_the_future", "x": "anything"}) == []


def test_a_history_keeps_what_is_usable_of_bad_events():
    history = RunHistory()
    for event in [
            {"type": "run_start", "run_dir": "r", "total_steps": "ten", "config": "no",
             "dataset": {"classes": 3}},
            {"type": "step", "step": 1, "loss": 2.0, "lr": 0.1},
            {"type": "step", "step": 2, "lr": 0.2},  # no loss
            {"type": "step", "step": "3", "loss": 1.0},  # no usable step number
            {"type": "step", "step": 4, "loss": "1.5", "lr": "fast"},
            {"type": "step", "step": 5, "loss": 1.0, "lr": 0.1},
            {"type": "epoch_end", "epoch": 0, "loss": "x"},
            {"type": "eval", "step": 5, "knn_top1": "high"},
            {"type": "run_end", "status": 7}]:
        history.add(event)
    assert history.steps == [1, 2, 4, 5]
    loss = history.curves["loss"]
    assert loss[0] == 2.0 and math.isnan(loss[1]) and math.isnan(loss[2]) and loss[3] == 1.0
    assert all(math.isfinite(v) for v in history.smoothed_loss)  # no gap in the smoothed
    assert math.isnan(history.curves["lr"][2])
    assert history.total_steps is None and history.config == {} and not history.has_labels
    assert history.progress is None and history.eta_seconds() is None
    assert history.epoch_losses[0][0] == 0 and math.isnan(history.epoch_losses[0][1])
    assert history.knn == [] and history.status == "failed"
    assert history.bad_events == 7 and history.unknown_events == 0


SILENT_TRAINER = r"""
import json, sys
def say(**e):
    print(json.dumps({"v": 1, **e}), flush=True)
say(type="run_start", run_dir="nowhere", total_steps=10)
say(type="step", step=1, loss=2.0)
sys.stderr.write("step 1/10 loss 2.0\n")
sys.exit(CODE)
"""


@pytest.mark.parametrize("code", [0, 5])
def test_a_trainer_that_ends_without_run_end_crashed(qtbot, monkeypatch, code):
    monkeypatch.setattr(engine_process, "engine_command",
                        fake(SILENT_TRAINER.replace("CODE", str(code))))
    child = EngineProcess()
    with qtbot.waitSignal(child.ended, timeout=30_000) as ended:
        child.start(["train", "--data", "x"])
    status, exit_code, reason = ended.args
    assert (status, exit_code) == ("crashed", code)
    assert ("without reporting how the run ended" if code == 0
            else "exited with code 5 without finishing") in reason
    assert "last message: step 1/10 loss 2.0" in reason


GARBLED_TRAINER = r"""
import json, sys
def say(**e):
    print(json.dumps({"v": 1, **e}), flush=True)
say(type="run_start", run_dir=sys.argv[sys.argv.index("--runs-root") + 1] + "/garbled",
    total_steps=10, steps_per_epoch=5,
    config={"batch_size": 8}, dataset={"summary": "24 images"}, device={"name": "cpu"})
for i in range(3):  # a newer engine's event type, several times
    print(json.dumps({"v": 2, "type": "gradient_histogram", "bins": [1, 2]}), flush=True)
say(type="step", step=1, loss=2.0, lr=0.1, pairs_per_s=40.0, embedding_std=0.5)
say(type="step", step=2, lr=0.1)
say(type="step", step=3, loss="abc", lr="fast")
say(type="step", step="four", loss=1.0)
say(type="step", step=5, loss=1.5, lr=0.1, pairs_per_s=40.0, embedding_std=0.5)
say(type="step", step=6, lr=0.1)
say(type="eval", epoch=1, step=5)
say(type="eval", epoch=1, step=5, knn_top1="high", seconds="slow")
say(type="epoch_end", epoch=0, step=5, loss="x")
say(type="progress", phase=3, done="a")
say(type="warning", message=5)
sys.stderr.write("Traceback (most recent call last):\nRuntimeError: boom\n")
sys.exit(0)
"""


def test_the_train_page_survives_a_garbled_event_stream(qtbot, monkeypatch, tmp_path):
    monkeypatch.setattr(engine_process, "engine_command", fake(GARBLED_TRAINER))
    page = TrainPage(tmp_path / "runs")
    qtbot.addWidget(page)
    page.set_folder(tmp_path)
    with qtbot.waitSignal(page.engine.ended, timeout=30_000) as ended:
        page.start()
    assert ended.args[0] == "crashed"
    log = page.log.toPlainText()
    assert log.count("'gradient_histogram' are unknown to this version") == 1
    assert log.count("schema version 2") == 1
    assert log.count("step event: loss is missing") == 1  # steps 2 and 6: said once
    assert "step event: loss is text, not a number" in log
    assert "step event: step is text, not an integer" in log
    assert "eval event: knn_top1 is missing" in log
    assert "epoch_end event: loss is text" in log
    assert "RuntimeError: boom" in log
    history = page.history
    assert history.steps == [1, 2, 3, 5, 6] and history.unknown_events == 3
    page.curves.redraw_all()
    x, y = page.curves.curves["loss"].getData()
    assert list(x) == [1, 2, 3, 5, 6] and y[0] == 2.0 and y[3] == 1.5
    _, smoothed = page.curves.curves["smoothed"].getData()
    assert all(math.isfinite(v) for v in smoothed)
    assert history.status == "crashed"
    assert "Run crashed" in page.status.text()
    assert "without reporting how the run ended" in page.status.text()
    assert "RuntimeError: boom" in page.failure_box.detailedText()
    assert page.start_button.isEnabled() and not page.stop_button.isEnabled()
    page.failure_box.close()


# --- 2. crashes and kills of a run started from the window -------------------------------

def close_without_asking(win):
    """pytest-qt closes the window at teardown: a run still going is killed first."""
    engine = win.train_page.engine
    if engine.is_running():
        engine.kill()
        engine.wait(10_000)


@pytest.fixture
def window(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    win = MainWindow(tmp_path / "runs", cache_dir=tmp_path / "cache", settings=settings)
    qtbot.addWidget(win, before_close_func=close_without_asking)
    win.show()
    yield win
    win.data_page.shutdown()
    win.augment_page.close()


def tiny_training(page, folder: Path, epochs: int) -> None:
    page.set_folder(folder)
    for name, value in [("backbone", "resnet18"), ("image_size", "16"), ("batch_size", "8"),
                        ("epochs", str(epochs)), ("proj_hidden_dim", "32"),
                        ("proj_out_dim", "16")]:
        page.form.set_value(name, value)
    assert page.form.is_valid()


def test_a_killed_engine_leaves_the_window_up_and_the_run_listed(qtbot, window, tmp_path):
    page = window.train_page
    tiny_training(page, make_folder(tmp_path / "shapes"), epochs=1000)
    events = []
    page.engine.event.connect(events.append)
    page.start()
    qtbot.waitUntil(lambda: any(e["type"] == "checkpoint" for e in events), timeout=ENGINE_MS)
    # The engine writes each event to stdout, then to events.jsonl: wait for the file too.
    written = page.run_dir / "events.jsonl"
    qtbot.waitUntil(lambda: '"type":"checkpoint"' in written.read_text(), timeout=10_000)
    assert "running" in window.sidebar.runs.item(0).text()
    with qtbot.waitSignal(page.engine.ended, timeout=30_000) as ended:
        os.kill(page.engine.pid(), signal.SIGKILL)
    assert ended.args[0] == "crashed"
    assert window.isVisible()
    status = page.status.text()
    assert "Run crashed: the engine was killed" in status
    assert "The last checkpoint (step" in status and "Resume goes on from it" in status
    assert "loss" in page.failure_box.detailedText()  # the tail of the engine's log
    assert "[event stream]" not in page.log.toPlainText()  # a real engine's events are fine
    assert page.failure_box.isVisible()
    page.failure_box.close()
    assert page.start_button.isEnabled() and window.actions["start"].isEnabled()
    assert page.resume_button.isEnabled() and not window.actions["stop"].isEnabled()
    assert window.sidebar.runs.count() == 1
    text = window.sidebar.runs.item(0).text()
    assert "running" not in text and "interrupted" in text
    saved = load_checkpoint(page.run_dir / "checkpoints" / "last.pt")
    if saved["step"] >= page.history.steps[-1]:  # killed before a step past the checkpoint
        assert f"step {saved['step']} of" in text and "checkpoint saved" in text
    else:
        assert f"checkpoint at step {saved['step']}" in text


CRASHING_TRAINER = r"""
import json, os, sys
run_dir = os.path.join(sys.argv[sys.argv.index("--runs-root") + 1], "20250101-000000-simclr-x")
os.makedirs(os.path.join(run_dir, "checkpoints"))
with open(os.path.join(run_dir, "config.json"), "w") as f:
    json.dump({"method": "simclr", "data": "/data/shapes"}, f)
open(os.path.join(run_dir, "checkpoints", "last.pt"), "wb").write(b"weights")
events = open(os.path.join(run_dir, "events.jsonl"), "a")
def say(**e):
    line = json.dumps({"v": 1, **e})
    print(line, flush=True)
    events.write(line + "\n")
    events.flush()
say(type="run_start", run_dir=run_dir, total_steps=30, steps_per_epoch=3)
for step in (1, 2, 3):
    say(type="step", step=step, loss=3.0 - step / 10)
say(type="checkpoint", path=os.path.join(run_dir, "checkpoints", "last.pt"), epoch=1, step=3)
say(type="step", step=4, loss=2.5)
sys.stderr.write("step 4/30 loss 2.5\nTraceback (most recent call last):\n"
                 "RuntimeError: CUDA error: an illegal memory access was encountered\n")
sys.stderr.flush()
os._exit(1)
"""


def test_an_engine_crash_mid_run_is_shown_with_the_log_and_listed(
        qtbot, monkeypatch, window, tmp_path):
    monkeypatch.setattr(engine_process, "engine_command", fake(CRASHING_TRAINER))
    page = window.train_page
    page.set_folder(tmp_path)
    with qtbot.waitSignal(page.engine.ended, timeout=30_000):
        page.start()
    assert window.isVisible()
    assert "Run crashed: the engine exited with code 1 without finishing" in page.status.text()
    assert "illegal memory access" in page.status.text()  # the last thing it said
    assert "The last checkpoint (step 3)" in page.status.text()
    details = page.failure_box.detailedText()
    assert "step 4/30 loss 2.5" in details and "Traceback" in details
    page.failure_box.close()
    assert page.start_button.isEnabled() and page.resume_button.isEnabled()
    assert page.history.steps == [1, 2, 3, 4]
    assert window.sidebar.runs.count() == 1
    text = window.sidebar.runs.item(0).text()
    assert "interrupted" in text and "checkpoint at step 3" in text and "step 4" in text


# --- 3. a run folder deleted while it is open ---------------------------------------------

@pytest.fixture
def window_on_run(qtbot, tmp_path, trained_run):
    """A window showing a finished run on its Explore and Probe pages."""
    run_dir, cache = trained_run
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    win = MainWindow(run_dir.parent, cache_dir=cache, settings=settings)
    qtbot.addWidget(win, before_close_func=close_without_asking)
    win.show()
    win.select_run(run_dir)
    assert win.explore_page.run_dir == run_dir and win.probe_page.run_dir == run_dir
    assert win.explore_page.compute_button.isEnabled()
    yield win, run_dir
    win.explore_page.cancel(quiet=True)
    win.probe_page.cancel(quiet=True)
    win.data_page.shutdown()
    win.augment_page.close()


def test_a_run_deleted_from_outside_leaves_the_runs_list(qtbot, window_on_run):
    win, run_dir = window_on_run
    shutil.rmtree(run_dir)
    # No refresh asked for: the window notices the runs folder changed.
    qtbot.waitUntil(lambda: win.sidebar.runs.count() == 0, timeout=5000)
    assert win.selected_run() is None
    assert win.explore_page.run_dir is None and win.probe_page.run_dir is None
    assert f"The run {run_dir.name} is gone" in win.statusBar().currentMessage()


def _gone(text: str, run_dir: Path) -> bool:
    return f"The run folder {run_dir} is gone" in text and "deleted or moved" in text


@pytest.mark.parametrize("action", ["export", "rename", "delete", "show curves"])
def test_a_window_action_on_a_deleted_run_says_it_is_gone(qtbot, window_on_run, action):
    win, run_dir = window_on_run
    shutil.rmtree(run_dir)  # and act before the window notices
    if action == "export":
        assert win.open_export_dialog() is None
    elif action == "rename":
        win.rename_selected_run("new name")
    elif action == "delete":
        assert not win.delete_selected_run(confirm=False)
    else:
        win.sidebar.runs.itemDoubleClicked.emit(win.sidebar.runs.item(0))
    assert win.message_box is not None and win.message_box.isVisible()
    assert _gone(win.message_box.text(), run_dir)
    assert win.sidebar.runs.count() == 0 and win.selected_run() is None  # and the list is right
    win.message_box.close()


@pytest.mark.parametrize("action", ["compute map", "neighbours", "probe", "export dialog"])
def test_a_page_action_on_a_deleted_run_says_it_is_gone(qtbot, window_on_run, action):
    win, run_dir = window_on_run
    dialog = win.open_export_dialog() if action == "export dialog" else None
    shutil.rmtree(run_dir)
    if action == "compute map":
        with qtbot.waitSignal(win.explore_page.failed, timeout=1000) as failed:
            win.explore_page.compute_map()
        assert _gone(failed.args[0], run_dir) and _gone(win.explore_page.status.text(), run_dir)
        assert not win.explore_page.is_busy()
    elif action == "neighbours":
        with qtbot.waitSignal(win.explore_page.failed, timeout=1000) as failed:
            win.show_neighbours_of_image(str(run_dir / "some.png"))
        assert _gone(failed.args[0], run_dir) and not win.explore_page.is_busy()
    elif action == "probe":
        with qtbot.waitSignal(win.probe_page.failed, timeout=1000) as failed:
            win.probe_page.run_probes()
        assert _gone(failed.args[0], run_dir) and _gone(win.probe_page.status.text(), run_dir)
        assert not win.probe_page.is_busy()
    else:
        dialog.export()
        assert not dialog.engine.is_running()
        assert f"the run folder {run_dir} is gone" in dialog.status.text()
        dialog.close()


# --- 4. an image folder unplugged ---------------------------------------------------------

def test_an_unplugged_data_folder_is_named_as_gone(qtbot, window, tmp_path):
    folder = make_folder(tmp_path / "usb-stick" / "shapes")
    with qtbot.waitSignal(window.augment_page.pairs_ready, timeout=60_000):
        window.open_folder(folder)
    qtbot.waitUntil(lambda: window.data_page.report is not None, timeout=30_000)
    shutil.rmtree(tmp_path / "usb-stick")

    with qtbot.waitSignal(window.data_page.scan_failed, timeout=10_000) as failed:
        window.data_page.rescan()
    message = failed.args[0]
    assert f"The folder {folder} is gone" in message and "Rescan" in message
    assert window.data_page.error.isVisible() and window.data_page.error.text() == message

    preview = window.augment_page
    preview.size_box.setValue(preview.size_box.value() + 8)  # the images are decoded again
    qtbot.waitUntil(lambda: "is gone" in preview.status.text(), timeout=30_000)
    assert f"Cannot preview: the folder {folder} is gone" in preview.status.text()

    page = window.train_page
    page.start()
    assert not page.engine.is_running()
    assert f"The image folder {folder} is gone" in page.status.text()


# --- 5. closing the window while a run trains ---------------------------------------------

RUNS_UNTIL_STOPPED = r"""
import json, sys, threading, time
stop = threading.Event()
threading.Thread(target=lambda: [stop.set() for line in sys.stdin if "stop" in line],
                 daemon=True).start()
print(json.dumps({"v": 1, "type": "run_start", "run_dir": "somewhere"}), flush=True)
step = 0
while not stop.is_set() and step < 600:
    step += 1
    print(json.dumps({"v": 1, "type": "step", "step": step, "loss": 1.0}), flush=True)
    time.sleep(0.1)
"""


def test_closing_while_training_can_be_cancelled(qtbot, monkeypatch, window, tmp_path):
    monkeypatch.setattr(engine_process, "engine_command", fake(RUNS_UNTIL_STOPPED))
    page = window.train_page
    page.set_folder(tmp_path)
    page.start()
    qtbot.waitUntil(lambda: len(page.history.steps) >= 1, timeout=30_000)
    asked = []
    monkeypatch.setattr(window, "ask_close_choice", lambda: asked.append(1) or "cancel")
    assert not window.close()
    assert asked == [1] and window.isVisible() and page.engine.is_running()
    steps = len(page.history.steps)
    qtbot.waitUntil(lambda: len(page.history.steps) > steps, timeout=10_000)  # still shown


def test_a_run_that_does_not_stop_cleanly_keeps_the_window_open(
        qtbot, monkeypatch, window, tmp_path):
    monkeypatch.setattr(engine_process, "engine_command", fake(
        RUNS_UNTIL_STOPPED + "sys.stderr.write('OSError: No space left on device\\n')\n"
        "sys.exit(1)\n"))
    page = window.train_page
    page.set_folder(tmp_path)
    page.start()
    qtbot.waitUntil(lambda: len(page.history.steps) >= 1, timeout=30_000)
    monkeypatch.setattr(window, "ask_close_choice", lambda: "stop")
    with qtbot.waitSignal(page.engine.ended, timeout=30_000):
        assert not window.close()
    qtbot.wait(50)  # (the window would close on the next turn of the event loop)
    assert window.isVisible() and window.tabs.currentWidget() is page
    assert "did not stop cleanly (crashed)" in window.statusBar().currentMessage()
    assert "No space left on device" in page.status.text()
    page.failure_box.close()
    assert window.close()  # nothing runs now: it closes without asking


def test_closing_while_training_can_stop_the_run_with_a_checkpoint(
        qtbot, monkeypatch, window, tmp_path):
    page = window.train_page
    tiny_training(page, make_folder(tmp_path / "shapes"), epochs=1000)
    page.start()
    qtbot.waitUntil(lambda: page.run_dir is not None, timeout=ENGINE_MS)  # run_start
    monkeypatch.setattr(window, "ask_close_choice", lambda: "stop")
    assert not window.close()  # not yet: the window stays responsive while it stops
    assert window.isVisible() and "Stopping" in window.statusBar().currentMessage()
    assert not window.close()  # a second close while stopping changes nothing
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=60_000)
    assert not page.engine.is_running() and page.history.status == "stopped"
    lines = (page.run_dir / "events.jsonl").read_text().splitlines()
    end = json.loads(lines[-1])
    assert end["type"] == "run_end" and end["status"] == "stopped"
    assert (page.run_dir / "checkpoints" / "last.pt").is_file()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_closing_while_training_can_leave_the_run_going(qtbot, monkeypatch, tmp_path):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    win = MainWindow(tmp_path / "runs", cache_dir=tmp_path / "cache", settings=settings)
    win.show()
    page = win.train_page
    tiny_training(page, make_folder(tmp_path / "shapes"), epochs=2)
    page.start()
    pid = page.engine.pid()
    try:
        # run_start: the 6 steps and 2 checkpoints are still to come
        qtbot.waitUntil(lambda: page.run_dir is not None, timeout=ENGINE_MS)
        run_dir = page.run_dir
        win.ask_close_choice = lambda: "leave"  # (not monkeypatch: the window is deleted)
        assert win.close()
        win.data_page.shutdown()
        with qtbot.waitSignal(win.destroyed, timeout=10_000):
            win.deleteLater()  # every object of the window is gone, its QProcess too
        assert _alive(pid), "the run left going was killed with the window"

        # The app opened again lists it as going on (paused here, so it cannot end first).
        os.kill(pid, signal.SIGSTOP)
        again = MainWindow(tmp_path / "runs", cache_dir=tmp_path / "cache", settings=settings)
        qtbot.addWidget(again)
        again.show()
        os.kill(pid, signal.SIGCONT)
        assert again.sidebar.runs.count() == 1
        assert "running in the background" in again.sidebar.runs.item(0).text()
        again.select_run(run_dir)
        assert not again.delete_selected_run(confirm=False)
        assert f"process {pid}" in again.message_box.text() and run_dir.is_dir()
        again.message_box.close()

        # It runs to its end without anyone reading its output.
        events = run_dir / "events.jsonl"
        qtbot.waitUntil(lambda: '"type":"run_end"' in events.read_text(), timeout=ENGINE_MS)
        end = json.loads(events.read_text().splitlines()[-1])
        assert end["type"] == "run_end" and end["status"] == "finished", end
        assert end["step"] == 2 * 3
        again.refresh_runs()
        assert "finished" in again.sidebar.runs.item(0).text()
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            os.waitpid(pid, os.WNOHANG)  # nothing reaps it now that its QProcess is gone
        except ChildProcessError:
            pass


# --- 6. an exception in a slot ------------------------------------------------------------

@pytest.mark.qt_no_exception_capture
def test_an_exception_in_a_slot_is_reported_not_fatal(qtbot, monkeypatch, tmp_path):
    import threading

    from app import main
    from app.dialogs.error_report import ErrorReporter

    window = QPushButton("go")
    qtbot.addWidget(window)
    monkeypatch.setenv("CONTRASTIVE_EXPLORER_DATA", str(tmp_path / "data"))

    class App:
        def exec(self):
            return 0

    monkeypatch.setattr(main, "create_window", lambda args: (App(), window))
    previous = sys.excepthook
    try:
        assert main.main([]) == 0
        reporter = window.error_reporter
        assert isinstance(reporter, ErrorReporter) and sys.excepthook is reporter
        after = []

        def broken() -> None:
            raise ValueError("the slot broke")

        window.clicked.connect(broken)
        window.clicked.connect(lambda: after.append(1))
        window.click()
        qtbot.waitUntil(lambda: reporter.box is not None and reporter.box.isVisible(),
                        timeout=5000)
        assert after == [1]  # the other slots still ran: the app goes on
        box = reporter.box
        assert "ValueError: the slot broke" in box.text() and "The app goes on" in box.text()
        assert 'raise ValueError("the slot broke")' in box.detailedText()
        log = tmp_path / "data" / "errors.log"
        assert str(log) in box.text() and "ValueError: the slot broke" in log.read_text()

        thread = threading.Thread(target=lambda: 1 / 0)  # a worker thread's error too
        thread.start()
        thread.join()
        qtbot.waitUntil(lambda: "2 errors" in box.text(), timeout=5000)
        assert "ZeroDivisionError" in box.text() and reporter.box is box  # one box
        box.close()
    finally:
        if isinstance(sys.excepthook, ErrorReporter):
            sys.excepthook.uninstall()
        sys.excepthook = previous
