"""A run folder deleted while it is open: it leaves the runs list, and every action on it
says that the folder is gone."""

import shutil
from pathlib import Path

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QSettings

from app.main_window import MainWindow
from tests.helpers.windows import close_without_asking

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


