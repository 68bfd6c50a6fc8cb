"""A run that ended says one step number on the Train page and in the runs list: the step it
reached and, when a resume would go back to an earlier checkpoint, that step too, in the
same words in both places."""

from pathlib import Path

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QSettings, Qt

from app.main_window import MainWindow
from engine.config.train_config import TrainConfig
from engine.run.events import EventWriter
from engine.training.loop import train
from tests.helpers.folders import make_folder
from tests.helpers.training import events_of, run


class Killed(Exception):
    """Stands for a SIGKILL: the loop ends with no checkpoint and no run_end."""


@pytest.fixture
def window(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    win = MainWindow(tmp_path / "runs", cache_dir=tmp_path / "cache", settings=settings)
    qtbot.addWidget(win)
    yield win
    win.data_page.shutdown()
    win.augment_page.close()


def stop_after(calls: int):
    asked = []
    return lambda: asked.append(1) or len(asked) > calls


def show_as_the_engine_child_would(page, run_dir: Path, status: str, reason: str) -> None:
    """The run's events reach the Train page through its engine child's signals, then the
    child ends."""
    for event in events_of(run_dir):
        page.engine.event.emit(event)
    page.engine.ended.emit(status, 0, reason)


def line_of(window, run_dir: Path) -> str:
    window.refresh_runs()
    (item,) = [window.sidebar.runs.item(r) for r in range(window.sidebar.runs.count())]
    assert Path(item.data(Qt.UserRole)) == run_dir
    return item.text()


def test_a_run_stopped_mid_epoch_says_the_same_step_on_the_page_and_in_the_list(
        qtbot, window, tmp_path):
    folder = make_folder(tmp_path / "shapes", per_class=20)  # 5 steps an epoch at batch 8
    result = run({"data": str(folder), "epochs": 2, "log_every": 3}, tmp_path,
                 should_stop=stop_after(4))
    assert result.status == "stopped"
    events = events_of(result.run_dir)
    logged = [e["step"] for e in events if e["type"] == "step"]
    (saved,) = [e["step"] for e in events if e["type"] == "checkpoint"]
    assert logged[-1] < saved == result.step == 4  # stopped between two logged steps
    page = window.train_page
    show_as_the_engine_child_would(page, result.run_dir, "stopped", "stop requested")
    assert page.progress.text() == "step 4 of 10 · 40%"
    assert page.status.text().startswith("Run stopped at step 4 of 10: stop requested")
    line = line_of(window, result.run_dir)
    assert "stopped · step 4 of 10" in line and "checkpoint saved" in line
    assert "resumes from" not in line + page.progress.text()


def test_a_run_killed_past_its_checkpoint_says_both_steps_in_both_places(
        qtbot, window, tmp_path):
    folder = make_folder(tmp_path / "shapes", per_class=20)
    first = run({"data": str(folder), "epochs": 4, "log_every": 1}, tmp_path,
                should_stop=stop_after(1))
    assert first.status == "stopped" and first.step == 1
    # Resumed, then "killed" after three more steps (none of them at an epoch's end).
    asked = []

    def kill_after_three() -> bool:
        asked.append(1)
        if len(asked) > 3:
            raise Killed
        return False

    with pytest.raises(Killed):
        train(TrainConfig(), resume=first.run_dir, cache_dir=tmp_path / "cache",
              events=EventWriter(None), should_stop=kill_after_three)
    events = events_of(first.run_dir)
    reached = max(e["step"] for e in events if e["type"] == "step")
    saved = [e["step"] for e in events if e["type"] == "checkpoint"][-1]
    assert (reached, saved) == (4, 1)  # resuming goes back to step 1
    page = window.train_page
    show_as_the_engine_child_would(page, first.run_dir, "crashed", "the engine was killed")
    page.failure_box.close()
    both = "step 4 of 20; resumes from step 1 (the last checkpoint)"
    assert page.progress.text() == f"{both} · 20%"
    line = line_of(window, first.run_dir)
    assert "interrupted" in line and "step 4 of 20" in line
    assert "resumes from step 1 (the last checkpoint)" in line
    assert page.resume_button.isEnabled()
