"""The real window against a real engine child process on a tiny generated folder."""

from pathlib import Path

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QSettings, Qt

from app.main_window import MainWindow
from tests.helpers.folders import make_folder


@pytest.fixture
def window(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    win = MainWindow(tmp_path / "runs", cache_dir=tmp_path / "cache", settings=settings)
    qtbot.addWidget(win)
    win.show()
    yield win
    if win.train_page.engine.is_running():
        win.train_page.engine.kill()
        win.train_page.engine.wait(10_000)
    win.data_page.shutdown()
    win.augment_page.close()


def test_train_stop_and_see_the_run_listed(qtbot, window, tmp_path):
    page = window.train_page
    assert window.tabs.currentWidget() is window.start_page  # nothing open yet
    assert not window.sidebar.empty_hint.isHidden()  # "No runs yet: ..."
    window.open_folder(make_folder(tmp_path / "shapes"))
    assert window.tabs.currentWidget() is window.data_page
    # The status line follows the state: a folder chosen and scanned is "Ready".
    qtbot.waitUntil(lambda: page.folder_counts() is not None, timeout=30_000)
    images, classes = page.folder_counts()
    assert page.status.text().startswith(f"Ready: {images:,} images in {classes} classes")
    assert "Choose" not in page.status.text()
    for name, value in [("backbone", "resnet18"), ("image_size", "16"), ("batch_size", "8"),
                        ("epochs", "1000"), ("proj_hidden_dim", "32"), ("proj_out_dim", "16")]:
        page.form.set_value(name, value)
    assert page.form.is_valid() and page.start_button.isEnabled()
    qtbot.mouseClick(page.start_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: len(page.history.steps) >= 2, timeout=120_000)
    qtbot.waitUntil(lambda: len(page.curves.curves["loss"].getData()[0]) >= 2, timeout=5_000)
    assert page.progress.value() >= 0 and "step" in page.status.text()
    assert page.stop_button.isEnabled() and not page.start_button.isEnabled()
    assert window.sidebar.empty_hint.isHidden()
    # The runs list follows the live step without being listed again.
    qtbot.waitUntil(lambda: f"step {page.history.steps[-1]} of {page.history.total_steps}"
                    in window.sidebar.runs.item(0).text(), timeout=10_000)
    window.refresh_runs()
    assert "running" in window.sidebar.runs.item(0).text()
    with qtbot.waitSignal(page.engine.ended, timeout=60_000):
        qtbot.mouseClick(page.stop_button, Qt.LeftButton)
    assert page.history.status == "stopped" and page.resume_button.isEnabled()
    assert window.sidebar.runs.count() == 1
    text = window.sidebar.runs.item(0).text()
    assert "stopped" in text
    # One step number: where the run is, which is where its checkpoint is.
    at, total = page.history.position, page.history.total_steps
    assert at == page.history.checkpoint[1]
    assert f"step {at} of {total}" in text and "checkpoint saved" in text
    assert "checkpoint at step" not in text
    assert page.progress.value() == round(100 * at / total)
    # Window words, not the command line's.
    status = page.status.text()
    assert status.startswith(f"Run stopped at step {at} of {total}")
    assert "press Resume to go on" in status and "--resume" not in status
    assert window.settings.value("last_folder") == str(tmp_path / "shapes")
    qtbot.waitUntil(lambda: window.data_page.report is not None, timeout=30_000)
    assert window.data_page.report.manifest.classes == ["circles", "squares"]


def test_bad_setting_blocks_start_and_says_why(qtbot, window, tmp_path):
    page = window.train_page
    page.set_folder(tmp_path)
    page.form.set_value("batch_size", "1")
    assert not page.start_button.isEnabled()
    page.start()
    assert "batch_size must be" in page.status.text()
    assert not page.engine.is_running()


def test_a_failing_run_is_reported_in_the_window(qtbot, window, tmp_path):
    page = window.train_page
    empty = tmp_path / "empty"
    empty.mkdir()
    page.set_folder(empty)
    with qtbot.waitSignal(page.engine.ended, timeout=60_000) as ended:
        page.start()
    assert ended.args[0] == "failed"
    assert "no usable images" in page.status.text()
    assert page.failure_box.isVisible()
    page.failure_box.close()


def flag_values(args: list[str]) -> dict[str, object]:
    """``--name value`` pairs of an engine command line, and bare on/off flags as True."""
    values, i = {}, 0
    while i < len(args):
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            values[args[i]], i = args[i + 1], i + 2
        else:
            values[args[i]], i = True, i + 1
    return values


def test_demo_settings_reach_the_engine_arguments(window):
    from engine.data.demo import DEMO_SETTINGS

    page = window.train_page
    page.apply_settings(DEMO_SETTINGS)
    args = page._settings_arguments(page.form.values())
    pairs = flag_values(args)
    assert pairs["--image-size"] == "16" and pairs["--temperature"] == "0.2"
    assert pairs["--epochs"] == "10" and pairs["--crop-scale-min"] == "0.25"


def test_the_trainer_gets_the_previewed_augmentations(qtbot, window, tmp_path):
    from engine.data.demo import DEMO_SETTINGS

    window.open_folder(make_folder(tmp_path / "shapes"))
    window.apply_settings(DEMO_SETTINGS)
    assert window.augment_page.image_size() == 16
    with qtbot.waitSignal(window.augment_page.pairs_ready, timeout=60_000):
        window.augment_page.form.set_value("grayscale_p", "0.5")
    qtbot.waitUntil(lambda: window.train_page.augment_overrides.get("grayscale_p") == 0.5,
                    timeout=10_000)
    page = window.train_page
    args = page._settings_arguments(page.form.values())
    pairs = flag_values(args)
    assert pairs["--grayscale-p"] == "0.5" and pairs["--crop-scale-min"] == "0.25"


@pytest.fixture
def window_on_run(qtbot, tmp_path, trained_run):
    """A window whose runs root holds one finished run."""
    run_dir, cache = trained_run
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    win = MainWindow(run_dir.parent, cache_dir=cache, settings=settings)
    qtbot.addWidget(win)
    yield win, run_dir
    win.data_page.shutdown()
    win.augment_page.close()


def test_runs_are_selected_renamed_and_deleted(qtbot, window_on_run):
    win, run_dir = window_on_run
    assert win.sidebar.runs.count() == 1 and run_dir.name in win.sidebar.runs.item(0).text()
    with qtbot.waitSignal(win.run_selected) as selected:
        win.select_run(run_dir)
    assert selected.args == [run_dir]
    win.rename_selected_run("  shapes,  first try ")
    assert win.sidebar.runs.item(0).text().startswith("shapes, first try\n")
    assert win.selected_run() == run_dir  # refreshing keeps the selection
    assert (run_dir / "config.json").is_file()  # the folder itself keeps its name
    win.rename_selected_run("")
    assert win.sidebar.runs.item(0).text().startswith(run_dir.name)
    with qtbot.waitSignal(win.run_selected) as selected:
        assert win.delete_selected_run(confirm=False)
    assert selected.args == [None]
    assert not run_dir.exists() and win.sidebar.runs.count() == 0


def test_only_run_folders_under_the_runs_root_are_deleted(tmp_path, trained_run):
    from app.model.run_actions import RunActionError, delete_run

    run_dir, _ = trained_run
    with pytest.raises(RunActionError, match="not a run folder"):
        delete_run(run_dir, tmp_path)  # not directly under this root
    with pytest.raises(RunActionError, match="not a run folder"):
        delete_run(run_dir / "checkpoints", run_dir)
    assert (run_dir / "checkpoints" / "last.pt").is_file()


def test_a_dropped_folder_is_opened(qtbot, window, tmp_path):
    from PySide6.QtCore import QMimeData, QPoint, QPointF, QUrl
    from PySide6.QtGui import QDragEnterEvent, QDropEvent

    folder = make_folder(tmp_path / "dropped")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(folder))])
    enter = QDragEnterEvent(QPoint(10, 10), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    window.dragEnterEvent(enter)
    assert enter.isAccepted()
    window.tabs.setCurrentWidget(window.train_page)
    window.dropEvent(QDropEvent(QPointF(10, 10), Qt.CopyAction, mime, Qt.LeftButton,
                                Qt.NoModifier))
    assert window.tabs.currentWidget() is window.data_page
    qtbot.waitUntil(lambda: window.data_page.report is not None, timeout=30_000)
    assert window.data_page.report.manifest.classes == ["circles", "squares"]
    assert window.settings.value("last_folder") == str(folder)


def test_export_opens_for_the_selected_run(qtbot, window_on_run):
    win, run_dir = window_on_run
    win.sidebar.runs.setCurrentRow(-1)
    assert win.selected_run() is None
    win.select_run(run_dir)
    dialog = win.open_export_dialog()
    assert dialog.isVisible() and dialog.run_dir == run_dir
    assert dialog.checkpoint_box.checkpoint() == "last"
    dialog.close()


def test_an_image_of_the_data_page_shows_its_neighbours_on_the_explore_page(
        qtbot, window_on_run):
    from engine.evaluate import explore
    from engine.evaluate.maps import MapParams

    win, run_dir = window_on_run
    cache = win.cache_dir
    made = explore.make_map(run_dir, "last", params=MapParams(method="pca"), cache_dir=cache,
                            device="cpu")
    win.explore_page.map_settings.set_method("pca")
    with qtbot.waitSignal(win.explore_page.map_shown, timeout=30_000):
        win.select_run(run_dir)  # the saved map is loaded, no engine child needed
    path = str(Path(made["root"]) / made["paths"][5])
    with qtbot.waitSignal(win.explore_page.neighbours_shown, timeout=30_000):
        win.show_neighbours_of_image(path)
    assert win.tabs.currentWidget() is win.explore_page
    shown = win.explore_page.neighbours_result
    expected = explore.neighbours(run_dir, 5, len(shown["neighbours"]) + 1, cache_dir=cache,
                                  device="cpu")["neighbours"][1:]
    assert [n["index"] for n in shown["neighbours"]] == [n["index"] for n in expected]


def test_asking_for_a_gpu_that_is_not_there_says_so(qtbot, window, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    page = window.train_page
    page.set_folder(make_folder(tmp_path / "shapes"))
    page.form.set_value("device", "cuda")
    with qtbot.waitSignal(page.engine.ended, timeout=60_000) as ended:
        page.start()
    assert ended.args[0] == "failed"
    status = page.status.text()  # the flag in window words: the form's "device" setting
    assert "no usable CUDA GPU" in status and "use device cpu" in status and "--" not in status
    assert page.failure_box.isVisible()
    page.failure_box.close()


def test_selecting_a_run_shows_its_saved_probes(qtbot, window_on_run):
    import json

    win, run_dir = window_on_run
    (run_dir / "probes").mkdir()
    (run_dir / "probes" / "knn-last-h.json").write_text(json.dumps(
        {"kind": "knn", "checkpoint": "last", "space": "h", "top1": 0.5, "train": 20,
         "test": 4}))
    win.select_run(run_dir)
    table = win.probe_page.table
    saved = [r for r in range(table.rowCount()) if table.item(r, 0).text() != "kNN (training)"]
    assert win.probe_page.run_dir == run_dir and len(saved) == 1  # beside training's kNN
    assert table.item(saved[0], 4).text() == "50.0%"


def test_actions_have_shortcuts_and_follow_the_engine(window):
    from PySide6.QtGui import QKeySequence

    actions = window.actions
    assert actions["open"].shortcut() == QKeySequence(QKeySequence.Open)
    assert actions["start"].shortcut().toString() == "Ctrl+Return"
    assert actions["start"].isEnabled() and not actions["stop"].isEnabled()
    actions["page4"].trigger()  # page0 is the Start page
    assert window.tabs.currentWidget() is window.explore_page
    # No two actions (or buttons) share a shortcut: Qt would run neither.
    keys = [a.shortcut().toString() for a in actions.values() if not a.shortcut().isEmpty()]
    assert len(keys) == len(set(keys))
    assert window.train_page.start_button.shortcut().isEmpty()


def test_the_start_page_opens_recent_runs_and_the_demo(qtbot, window, tmp_path, monkeypatch):
    import engine.data.demo as demo

    assert window.tabs.currentWidget() is window.start_page
    assert window.tabs.tabText(0) == "Start"
    run = tmp_path / "runs" / "20260101-000000-simclr-shapes"
    run.mkdir(parents=True)
    (run / "config.json").write_text('{"method": "simclr", "data": "/x/shapes"}')
    window.refresh_runs()
    window.start_page.refresh()
    window.start_page.run_chosen.emit(run)
    assert window.selected_run() == run and window.tabs.currentWidget() is window.explore_page
    folder = make_folder(tmp_path / "digits")
    monkeypatch.setattr(demo, "demo_dataset", lambda: folder)
    window.tabs.setCurrentWidget(window.start_page)
    window.start_page.demo_requested.emit()  # made in a worker thread: the window goes on
    qtbot.waitUntil(lambda: window.tabs.currentWidget() is window.data_page, timeout=10_000)
    assert window.train_page.folder.text() == str(folder)
    assert window.train_page.form.values().epochs == demo.DEMO_SETTINGS["epochs"]
    assert window.start_page.recent_folders()[0] == str(folder)


def test_the_preview_size_and_the_train_image_size_are_one_setting(window):
    train, preview = window.train_page, window.augment_page
    train.form.set_value("image_size", "24")
    assert preview.image_size() == 24 and preview.size_box.suffix() == " px"
    preview.size_box.setValue(48)  # as a person would
    assert train.form.values().image_size == 48
    assert train.form._editors["image_size"].text() == "48"
    train.form.set_value("image_size", "")  # auto: the device's choice is shown
    expected = train.estimate.resolved(train.form.values(), 1000)[0]["image_size"]
    assert preview.image_size() == expected and preview.size_box.suffix() == " px (auto)"
    assert train.form.values().image_size is None  # showing it changed nothing


def test_refresh_and_clicking_the_run_again_read_its_new_checkpoints(qtbot, tmp_path,
                                                                     trained_run):
    """A run selected before it had a checkpoint (trained elsewhere, say) becomes
    explorable on Refresh runs (F5) or a click on it, not only after a restart."""
    import shutil

    run_dir, cache = trained_run
    saved = tmp_path / "saved-checkpoints"
    shutil.move(run_dir / "checkpoints", saved)
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    win = MainWindow(run_dir.parent, cache_dir=cache, settings=settings)
    qtbot.addWidget(win)
    win.select_run(run_dir)
    assert not win.explore_page.has_checkpoints()
    assert win.probe_page.checkpoint_box.checkpoint() == "random"
    shutil.move(saved, run_dir / "checkpoints")
    win.actions["refresh"].trigger()
    assert win.explore_page.checkpoint_box.checkpoint() == "last"
    assert win.probe_page.checkpoint_box.checkpoint() == "last"
    assert win.probe_page.run_button.isEnabled()
    assert "no checkpoint" not in win.explore_page.status.text()
    # Gone again (say, deleted by hand) and back: a click on the selected run reads it.
    dialog = win.open_export_dialog()
    (run_dir / "checkpoints" / "epoch-0002.pt").unlink()
    item = win.sidebar.runs.currentItem()
    win.sidebar.runs.itemClicked.emit(item)
    assert "epoch-0002" not in [dialog.checkpoint_box.itemData(i)
                                for i in range(dialog.checkpoint_box.count())]
    dialog.close()
    win.data_page.shutdown()
    win.augment_page.close()
