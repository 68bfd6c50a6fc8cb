"""A new user's first run, in the real window with real engine children: open a folder
with broken files, see the same counts on every page, train to the end, then map, click a
point, probe and export the run, all without selecting the run again."""

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QSettings, Qt

from app.main_window import MainWindow
from tests.helpers.folders import make_bad_files, make_folder
from tests.helpers.settings import TINY

CHILD_MS = 120_000


def stop_children(win):
    """Kill the engine children still running (before pytest-qt closes the window, which
    would otherwise ask what becomes of a running run)."""
    dialog = win.export_dialog
    for engine in [win.train_page.engine] + ([dialog.engine] if dialog is not None else []):
        if engine.is_running():
            engine.kill()
            engine.wait(10_000)
    win.explore_page.cancel(quiet=True)
    win.probe_page.cancel(quiet=True)


@pytest.fixture
def window(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    win = MainWindow(tmp_path / "runs", cache_dir=tmp_path / "cache", settings=settings)
    qtbot.addWidget(win, before_close_func=stop_children)
    win.show()
    yield win
    win.data_page.shutdown()
    win.augment_page.close()


def test_first_run_from_folder_to_export(qtbot, window, tmp_path):
    root = make_folder(tmp_path / "shapes", per_class=12)
    bad = make_bad_files(root / "squares")  # 6 unusable files, most found only by decoding

    # Data: the scan's count and every skipped file with its reason.
    data = window.data_page
    with qtbot.waitSignal(window.augment_page.pairs_ready, timeout=30_000):
        with qtbot.waitSignal(data.folder_scanned, timeout=30_000):
            window.open_folder(root)
    assert data.counts.text() == "24 images in 2 classes"
    skipped = {data.skipped_table.item(r, 0).text(): data.skipped_table.item(r, 1).text()
               for r in range(data.skipped_table.rowCount())}
    assert set(skipped) == {f"squares/{name}" for name in bad}
    for name, start in bad.items():
        assert skipped[f"squares/{name}"].startswith(start)

    # Augmentations: the same count and skipped total; no broken file previewed.
    augment = window.augment_page
    assert "of 24 images in the folder (6 files skipped: see the Data page)" in (
        augment.status.text())
    assert not {p for p in augment._shown_paths if "squares/" in p
                and p.rsplit("/", 1)[1] in bad}

    # Train: a few steps to the end; the engine counts the same images.
    page = window.train_page
    for name, value in {**TINY, "epochs": 1}.items():
        if name in page.form._editors:
            page.form.set_value(name, value)
    assert page.form.is_valid() and page.start_button.isEnabled()
    qtbot.mouseClick(page.start_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: bool(page.history.dataset) and window.sidebar.runs.count() == 1,
                    timeout=CHILD_MS)
    assert page.history.dataset["images"] == 24 and page.history.dataset["skipped"] == 6
    assert page.history.dataset["summary"] == data.report.manifest.summary()

    # The person selects the new run while it trains, before its first checkpoint.
    run_dir = page.run_dir
    window.select_run(run_dir)
    explore, probe = window.explore_page, window.probe_page
    assert explore.run_dir == run_dir and probe.run_dir == run_dir
    with qtbot.waitSignal(page.engine.ended, timeout=CHILD_MS) as ended:
        pass
    assert ended.args[0] == "finished", page.status.text()

    # Explore: the finished run is explorable as it is, without selecting it again.
    assert window.selected_run() == run_dir
    qtbot.waitUntil(explore.has_checkpoints, timeout=5_000)
    assert explore.checkpoint_box.checkpoint() == "last"
    assert explore.compute_button.isEnabled()
    assert "no checkpoint" not in explore.status.text()
    window.tabs.setCurrentWidget(explore)
    with qtbot.waitSignal(explore.idle, timeout=CHILD_MS):
        with qtbot.waitSignal(explore.map_shown, timeout=CHILD_MS):
            explore.compute_map()
    x, _y = explore.map_view.scatter.getData()
    assert len(x) == 24  # the same images again
    scatter = explore.map_view.scatter
    with qtbot.waitSignals([explore.neighbours_shown, explore.image_selected],
                           timeout=CHILD_MS):
        scatter.sigClicked.emit(scatter, [scatter.points()[3]], None)
    assert explore.neighbours_result["neighbours"]

    # Probe: runs on the finished run's last checkpoint.
    window.tabs.setCurrentWidget(probe)
    assert probe.run_button.isEnabled() and probe.checkpoint_box.checkpoint() == "last"
    assert "no checkpoint" not in probe.status.text()
    probe.baseline_box.setChecked(False)
    with qtbot.waitSignal(probe.evaluated, timeout=CHILD_MS):
        probe.run_probes()
    assert probe.table.rowCount() >= 1

    # Export: the run's encoder, from the dialog the runs list opens.
    dialog = window.open_export_dialog()
    assert dialog is not None and dialog.checkpoint_box.checkpoint() == "last"
    with qtbot.waitSignal(dialog.exported, timeout=CHILD_MS) as exported:
        qtbot.mouseClick(dialog.export_button, Qt.LeftButton)
    assert exported.args[0]
    dialog.close()
