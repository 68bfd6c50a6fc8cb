"""The start view: open a folder, try the demo, recent folders and runs, one click each."""

import json

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QSettings, Qt

from app.pages.start_page import MAX_RECENT, NO_FOLDERS, NO_RUNS, StartPage, remember


def test_remember_puts_the_newest_first_once():
    assert remember(["a", "b", "c"], "b") == ["b", "a", "c"]
    assert remember([str(i) for i in range(MAX_RECENT)], "new")[0] == "new"
    assert len(remember([str(i) for i in range(MAX_RECENT)], "new")) == MAX_RECENT


@pytest.fixture
def page(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    start = StartPage(tmp_path / "runs", settings)
    qtbot.addWidget(start)
    return start


def test_an_empty_start_says_what_there_is_to_do(qtbot, page):
    assert page.folders.count() == 1 and page.folders.item(0).text() == NO_FOLDERS
    assert page.runs.count() == 1 and page.runs.item(0).text() == NO_RUNS
    assert not page.runs.item(0).flags() & Qt.ItemIsEnabled
    with qtbot.waitSignal(page.open_folder_requested):
        qtbot.mouseClick(page.open_button, Qt.LeftButton)
    with qtbot.waitSignal(page.demo_requested):
        qtbot.mouseClick(page.demo_button, Qt.LeftButton)


def test_recent_folders_and_runs_open_with_one_click(qtbot, page, tmp_path):
    birds, gone = tmp_path / "birds", tmp_path / "gone"
    birds.mkdir()
    page.note_folder(gone)
    page.note_folder(birds)
    assert page.recent_folders() == [str(birds), str(gone)]
    assert page.folders.item(0).text().startswith("birds\n")
    assert not page.folders.item(1).flags() & Qt.ItemIsEnabled  # not there any more
    with qtbot.waitSignal(page.folder_chosen) as chosen:
        page._on_folder_clicked(page.folders.item(0))
    assert chosen.args == [birds]
    run = tmp_path / "runs" / "20260101-000000-simclr-birds"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"method": "simclr", "data": str(birds)}))
    page.refresh()
    assert page.runs.count() == 1 and "simclr · birds" in page.runs.item(0).text()
    with qtbot.waitSignal(page.run_chosen) as chosen:
        page._on_run_clicked(page.runs.item(0))
    assert chosen.args == [run]
    # The last folder of the window's settings counts as recent too.
    page.settings.setValue("last_folder", str(tmp_path / "cats"))
    assert page.recent_folders()[0] == str(tmp_path / "cats")
