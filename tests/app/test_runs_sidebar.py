"""The runs sidebar lists runs and signals what a person asks of one; it acts on nothing."""

import shutil
from pathlib import Path

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import Qt

from app.model.run_model import RUNNING_ELSEWHERE, RunSummary
from app.widgets.runs_sidebar import STATUS_ROLE, RunsSidebar


def summary(path: Path, status: str = "finished", **fields) -> RunSummary:
    return RunSummary(path=path, name=path.name, method="simclr", dataset="shapes",
                      status=status, steps=6, last_loss=2.5, **fields)


@pytest.fixture
def sidebar(qtbot, tmp_path):
    side = RunsSidebar()
    qtbot.addWidget(side)
    runs = [tmp_path / "20260101-000000-simclr-shapes", tmp_path / "20260102-000000-moco-birds"]
    for run in runs:
        run.mkdir()
    side.show_runs([summary(runs[0], best_knn=0.75, checkpoint="checkpoint at step 6"),
                    summary(runs[1], RUNNING_ELSEWHERE)])
    yield side, runs
    side.stop_checking()


def actions(menu) -> dict:
    return {a.text(): a for a in menu.actions() if a.text()}


def test_runs_are_listed_and_selection_survives_a_new_listing(qtbot, sidebar):
    side, (first, second) = sidebar
    assert side.runs.count() == 2 and side.selected_run() is None
    text = side.runs.item(0).text()
    assert text.startswith(first.name + "\n") and "simclr · shapes · finished" in text
    assert "step 6, loss 2.500" in text and "best kNN 75.0%" in text
    assert "checkpoint at step 6" not in text  # said only for runs that did not finish
    assert "Double-click to follow it live" in side.runs.item(1).toolTip()
    assert side.runs.item(1).data(STATUS_ROLE) == RUNNING_ELSEWHERE
    with qtbot.waitSignal(side.selected) as selected:
        side.select_run(second)
    assert selected.args == [second, RUNNING_ELSEWHERE]
    assert side.selected_status() == RUNNING_ELSEWHERE
    with qtbot.assertNotEmitted(side.selected):
        side.show_runs([summary(second, "interrupted"), summary(first)])
    assert side.selected_run() == second and side.selected_status() == "interrupted"
    with pytest.raises(ValueError, match="not in the runs list"):
        side.select_run(first.parent / "elsewhere")
    with qtbot.waitSignal(side.selected) as selected:
        side.runs.setCurrentRow(-1)
    assert selected.args == [None, ""]


def test_double_click_and_the_context_menu_signal_their_run(qtbot, sidebar):
    side, (first, second) = sidebar
    with qtbot.waitSignal(side.opened) as opened:
        side.runs.itemDoubleClicked.emit(side.runs.item(1))
    assert opened.args == [second, RUNNING_ELSEWHERE]

    menu = actions(side.context_menu(side.runs.item(0)))
    assert side.selected_run() == first  # right-clicking selects the run
    assert "Follow live" not in menu and "Stop following" not in menu
    for text, signal, args in [("Show curves", side.curves_requested, [first]),
                               ("Show in file manager", side.reveal_requested, [first]),
                               ("Rename…", side.rename_requested, []),
                               ("Export…", side.export_requested, []),
                               ("Delete…", side.delete_requested, [])]:
        with qtbot.waitSignal(signal) as sent:
            menu[text].trigger()
        assert sent.args == args, text

    menu = actions(side.context_menu(side.runs.item(1)))
    assert menu["Follow live"].isEnabled()
    with qtbot.waitSignal(side.follow_requested) as sent:
        menu["Follow live"].trigger()
    assert sent.args == [second]
    side.training_here = True
    follow = actions(side.context_menu(side.runs.item(1)))["Follow live"]
    assert not follow.isEnabled() and "stop it first" in follow.toolTip()
    side.followed = second
    menu = actions(side.context_menu(side.runs.item(1)))
    assert "Follow live" not in menu
    with qtbot.waitSignal(side.unfollow_requested):
        menu["Stop following"].trigger()


def test_a_selected_run_whose_folder_goes_is_reported(qtbot, sidebar):
    side, (first, _) = sidebar
    side.select_run(first)
    with qtbot.assertNotEmitted(side.selection_gone):
        side._check_selected_run()
    shutil.rmtree(first)
    with qtbot.waitSignal(side.selection_gone, timeout=1000):
        side._check_selected_run()
    assert side.runs.item(0).data(Qt.UserRole) == str(first)  # the list waits to be made again


def test_the_empty_list_says_what_to_do_and_a_live_run_follows_its_step(qtbot, tmp_path):
    from app.model.run_model import RunHistory
    from app.widgets.runs_sidebar import EMPTY_HINT

    side = RunsSidebar()
    qtbot.addWidget(side)
    side.show_runs([])
    assert not side.empty_hint.isHidden() and side.empty_hint.text() == EMPTY_HINT
    assert "open a folder and press Start, or try the demo" in EMPTY_HINT
    run = tmp_path / "20260101-000000-simclr-shapes"
    run.mkdir()
    side.show_runs([summary(run, "running", total_steps=82)])
    assert side.empty_hint.isHidden()
    assert "step 6 of 82, loss 2.500" in side.runs.item(0).text()
    history = RunHistory()
    history.add({"type": "run_start", "total_steps": 82})
    history.add({"type": "step", "step": 50, "loss": 1.25})
    side.show_progress(run, history)
    assert "step 50 of 82, loss 1.250" in side.runs.item(0).text()
    history.add({"type": "checkpoint", "path": "last.pt", "epoch": 1, "step": 57})
    side.show_progress(run, history)
    assert "step 57 of 82" in side.runs.item(0).text()
    side.show_progress(tmp_path / "other", history)  # not listed: nothing happens
    side.stop_checking()
