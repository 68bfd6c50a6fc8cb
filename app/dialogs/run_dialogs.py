"""The main window's questions and warnings about runs: a new name, deleting one, a run
that trains elsewhere or whose folder is gone, and what becomes of a run training when the
window closes."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QInputDialog, QMessageBox, QWidget

from app.model.run_actions import display_name
from app.model.run_model import LIVE_EVENTS_S

TRAINED_ELSEWHERE = (
    "Another process is training this run (its events.jsonl changed in the last "
    f"{LIVE_EVENTS_S // 60} min). Stop it where it runs first (Ctrl+C, or SIGTERM to the "
    "engine or torchrun: it saves a checkpoint and stops).")
FOLLOW_REFUSED = ("A run is training in this window and the Train page shows it: stop it "
                  "first. Meanwhile “Show curves” in the runs list compares the other run's "
                  "curves with it.")


def gone(run_dir: Path) -> str:
    return (f"The run folder {run_dir} is gone: it was deleted or moved outside the app. It "
            "is no longer in the runs list.")


def in_background(pid: int) -> str:
    return (f"This run goes on training in the background (process {pid}). Stop it first: "
            f"`kill -TERM {pid}` saves a checkpoint and stops it.")


def tell(parent: QWidget, title: str, text: str) -> QMessageBox:
    """A warning that does not block the event loop (runs and children go on)."""
    box = QMessageBox(QMessageBox.Warning, title, text, QMessageBox.Ok, parent)
    box.setAttribute(Qt.WA_DeleteOnClose)
    box.open()
    return box


def ask_run_name(parent: QWidget, run_dir: Path) -> str | None:
    """A new display name for the run (empty: its folder's name), or None if cancelled."""
    name, ok = QInputDialog.getText(parent, "Rename run", "Name (empty: the folder's name):",
                                    text=display_name(run_dir))
    return name if ok else None


def confirm_delete(parent: QWidget, run_dir: Path) -> bool:
    return QMessageBox.question(
        parent, "Delete run", f"Permanently delete “{display_name(run_dir)}” and everything "
        f"in it (checkpoints, embeddings, probes, exports)?\n\n{run_dir}",
        QMessageBox.Yes | QMessageBox.No, QMessageBox.No) == QMessageBox.Yes


def ask_close_choice(parent: QWidget) -> str:
    """Ask what becomes of the run that is training when the window closes: "stop" (save a
    checkpoint, then close), "leave" (close; the run goes on in the background) or
    "cancel" (keep the window open)."""
    box = QMessageBox(QMessageBox.Question, "Training is running",
                      "A run is training. Stop it before closing, or leave it running?",
                      QMessageBox.NoButton, parent)
    box.setInformativeText(
        "Stop and close: a checkpoint is saved first; Resume goes on from it.\n"
        "Leave running: the run goes on without the window and keeps writing to its "
        "folder; open it from the runs list later.")
    stop = box.addButton("Stop and close", QMessageBox.AcceptRole)
    leave = box.addButton("Leave running", QMessageBox.DestructiveRole)
    box.addButton(QMessageBox.Cancel)
    box.setDefaultButton(stop)
    box.exec()
    clicked = box.clickedButton()
    return "stop" if clicked is stop else "leave" if clicked is leave else "cancel"
