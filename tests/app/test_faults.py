"""Bad input, faults and crashes lose nothing: the window stays up, says what happened and
keeps the runs list right, whatever the engine child or the file system does.

pytest-qt turns an exception raised in any slot into a test failure, so every test here
also checks that the fault was handled, not merely survived.
"""

import json
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
from app.main_window import MainWindow
from engine.run.checkpoint import load_checkpoint
from tests.helpers.folders import make_folder
from tests.helpers.windows import ENGINE_MS, close_without_asking, fake

# --- 2. crashes and kills of a run started from the window -------------------------------

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
        assert f"resumes from step {saved['step']} (the last checkpoint)" in text


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
    assert "interrupted" in text and "resumes from step 3" in text and "step 4" in text


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
