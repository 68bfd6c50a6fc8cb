"""The start view's demo button: the dataset is made off the GUI thread (seconds on first
use), and a failure to make it is said."""

import threading
import time

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QSettings

from app.main_window import MainWindow
from tests.helpers.folders import make_folder


@pytest.fixture
def window(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    win = MainWindow(tmp_path / "runs", cache_dir=tmp_path / "cache", settings=settings)
    qtbot.addWidget(win)
    yield win
    win.data_page.shutdown()
    win.augment_page.close()


def test_the_demo_is_made_in_a_worker_and_the_window_goes_on(qtbot, window, tmp_path,
                                                             monkeypatch):
    import engine.data.demo as demo

    folder = make_folder(tmp_path / "digits")
    made_in, release = [], threading.Event()

    def slow_demo():
        made_in.append(threading.current_thread())
        release.wait(10)  # as long as the test wants: writing 1,797 files takes seconds
        return folder

    monkeypatch.setattr(demo, "demo_dataset", slow_demo)
    start = time.perf_counter()
    window.start_page.demo_requested.emit()
    window.start_page.demo_requested.emit()  # a second click while it is made: ignored
    assert time.perf_counter() - start < 0.2
    assert "Preparing the demo" in window.statusBar().currentMessage()
    assert window.tabs.currentWidget() is window.start_page
    release.set()
    qtbot.waitUntil(lambda: window.tabs.currentWidget() is window.data_page, timeout=10_000)
    assert made_in and made_in[0] is not threading.main_thread() and len(made_in) == 1
    assert window.train_page.folder.text() == str(folder)
    assert "1,797 handwritten digits" in window.statusBar().currentMessage()


def test_a_demo_that_cannot_be_written_is_said(qtbot, window, monkeypatch):
    import engine.data.demo as demo

    def full_disk():
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(demo, "demo_dataset", full_disk)
    window.start_page.demo_requested.emit()
    qtbot.waitUntil(lambda: window.message_box is not None, timeout=10_000)
    assert "No space left on device" in window.message_box.text()
    assert window.tabs.currentWidget() is window.start_page
    window.message_box.close()
