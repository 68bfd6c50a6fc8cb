"""The runs sidebar: the runs of the runs folder, one line each, with what can be done to a
run (select, open, follow live, show curves, rename, export, show in the file manager,
delete). The sidebar only shows and asks: the window does the actions it signals."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PySide6.QtCore import QPoint, Qt, QTimer, Signal
from PySide6.QtWidgets import QLabel, QListWidget, QListWidgetItem, QMenu, QVBoxLayout, QWidget

from app.model.run_actions import display_name
from app.model.run_model import LIVE_EVENTS_S, RUNNING_ELSEWHERE, RunHistory, RunSummary
from app.style import set_role

#: How often the selected run's folder is checked to still exist, for file systems whose
#: changes a watcher does not see (network shares).
SELECTED_RUN_CHECK_MS = 5000
#: Item data: the run's status as listed (Qt.UserRole holds its folder).
STATUS_ROLE = Qt.UserRole + 1
HINT = ("Runs in the runs folder. Select one to explore it; double-click to show its curves; "
        "right-click to rename or delete it.")
#: Statuses whose line says nothing of the checkpoint: finished, or still going (the
#: checkpoint lags the steps then, and is not where a resume would start).
NO_CHECKPOINT_WORDS = ("finished", "running", RUNNING_ELSEWHERE, "running in the background")
#: What the empty list says.
EMPTY_HINT = "No runs yet: open a folder and press Start, or try the demo."


def run_text(run: RunSummary) -> str:
    """A run's line: its name, then method, dataset, status and how far it got."""
    text = f"{display_name(run.path)}\n{run.method} · {run.dataset} · {run.status}"
    if run.last_loss is not None or run.steps:
        total = f" of {run.total_steps}" if run.total_steps else ""
        loss = f", loss {run.last_loss:.3f}" if run.last_loss is not None else ""
        text += f" · step {run.steps}{total}{loss}"
    if run.best_knn is not None:
        text += f" · best kNN {100 * run.best_knn:.1f}%"
    if run.checkpoint and run.status not in NO_CHECKPOINT_WORDS:
        text += f" · {run.checkpoint}"  # (the Train page's progress bar says the same)
    return text


def run_tip(run: RunSummary) -> str:
    tip = run.problem or str(run.path)
    if run.status == RUNNING_ELSEWHERE:
        tip += (f"\nAnother process trains this run: its events.jsonl changed in the last "
                f"{LIVE_EVENTS_S // 60} min. Double-click to follow it live on the Train page.")
    return tip


class RunsSidebar(QWidget):
    """A "Runs" heading over the list of runs (:attr:`runs`, a QListWidget).

    The context menu of a run offers "Follow live" for a run trained elsewhere (disabled
    while :attr:`training_here`), "Stop following" for :attr:`followed`, and the actions
    below. Rename, export and delete act on the selected run (right-clicking selects it).

    Signals:
        selected(object, str): a run was selected by a person: its folder (Path) and
            status, or (None, "") when none is.
        opened(object, str): a run was double-clicked: its folder and status.
        follow_requested(object): "Follow live" on a run (its folder).
        unfollow_requested(): "Stop following".
        curves_requested(object): "Show curves" of a run (its folder).
        rename_requested(), export_requested(), delete_requested(): for the selected run.
        reveal_requested(object): "Show in file manager" (the run's folder).
        selection_gone(): the selected run's folder no longer exists (checked every
            SELECTED_RUN_CHECK_MS): the list is to be made again.
    """

    selected = Signal(object, str)
    opened = Signal(object, str)
    follow_requested = Signal(object)
    unfollow_requested = Signal()
    curves_requested = Signal(object)
    rename_requested = Signal()
    export_requested = Signal()
    delete_requested = Signal()
    reveal_requested = Signal(object)
    selection_gone = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        #: The run the Train page follows live, or None.
        self.followed: Path | None = None
        #: Whether this window's engine child trains a run now (nothing else can be followed).
        self.training_here = False
        self.runs = QListWidget()
        self.runs.setObjectName("runs")
        self.runs.setWordWrap(True)
        self.runs.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.runs.setToolTip(HINT)
        #: The summaries listed, by folder (a live run's line is made again from its own).
        self._summaries: dict[Path, RunSummary] = {}
        self.empty_hint = QLabel(EMPTY_HINT)
        self.empty_hint.setWordWrap(True)
        self.runs.itemDoubleClicked.connect(
            lambda item: self.opened.emit(Path(item.data(Qt.UserRole)), item.data(STATUS_ROLE)))
        self.runs.currentItemChanged.connect(self._on_current_changed)
        self.runs.setContextMenuPolicy(Qt.CustomContextMenu)
        self.runs.customContextMenuRequested.connect(self._on_menu_requested)
        #: The last context menu shown (for tests).
        self.menu: QMenu | None = None
        self._selected_check = QTimer(self)
        self._selected_check.setInterval(SELECTED_RUN_CHECK_MS)
        self._selected_check.timeout.connect(self._check_selected_run)
        self._selected_check.start()
        title = QLabel("Runs")
        set_role(title, "heading")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 0, 0)
        layout.addWidget(title)
        layout.addWidget(self.empty_hint)
        layout.addWidget(self.runs, 1)
        self.setMinimumWidth(200)

    # --- contents ------------------------------------------------------------------------

    def show_runs(self, runs: list[RunSummary]) -> None:
        """List ``runs``, keeping the selected run selected (if it is still there) and the
        scroll position; no ``selected`` signal comes of it."""
        selected = self.selected_run()
        scrolled = self.runs.verticalScrollBar().value()
        self.runs.blockSignals(True)
        self.runs.clear()
        for run in runs:
            item = QListWidgetItem(run_text(run))
            item.setData(Qt.UserRole, str(run.path))
            item.setData(STATUS_ROLE, run.status)
            item.setToolTip(run_tip(run))
            self.runs.addItem(item)
            if run.path == selected:
                self.runs.setCurrentItem(item)
        self.runs.verticalScrollBar().setValue(scrolled)
        self.runs.blockSignals(False)
        self._summaries = {run.path: run for run in runs}
        self.empty_hint.setVisible(not runs)

    def show_progress(self, run_dir: Path | None, history: RunHistory) -> None:
        """Make the line of ``run_dir`` (trained or followed live) say where ``history``
        is: its step, loss and best kNN, between two listings of the runs folder."""
        run = self._summaries.get(Path(run_dir)) if run_dir is not None else None
        if run is None or history.position is None:
            return
        loss = next((v for v in reversed(history.curves["loss"]) if v == v), None)  # not NaN
        run = dataclasses.replace(
            run, steps=history.position, total_steps=history.total_steps or run.total_steps,
            last_loss=loss if loss is not None else run.last_loss,
            best_knn=history.best_knn if history.best_knn is not None else run.best_knn)
        self._summaries[run.path] = run
        for row in range(self.runs.count()):
            item = self.runs.item(row)
            if Path(item.data(Qt.UserRole)) == run.path:
                item.setText(run_text(run))
                return

    def selected_run(self) -> Path | None:
        item = self.runs.currentItem()
        return Path(item.data(Qt.UserRole)) if item is not None else None

    def selected_status(self) -> str:
        """The listed status of the selected run ("" when none is selected)."""
        item = self.runs.currentItem()
        return item.data(STATUS_ROLE) if item is not None else ""

    def select_run(self, run_dir: Path) -> None:
        for row in range(self.runs.count()):
            if Path(self.runs.item(row).data(Qt.UserRole)) == Path(run_dir):
                self.runs.setCurrentRow(row)
                return
        raise ValueError(f"{run_dir} is not in the runs list")

    def stop_checking(self) -> None:
        """No more checks of the selected run's folder (the window is closing)."""
        self._selected_check.stop()

    # --- the context menu ----------------------------------------------------------------

    def context_menu(self, item: QListWidgetItem) -> QMenu:
        """The menu of ``item``'s run (it is selected first)."""
        self.runs.setCurrentItem(item)
        # The list may be made again while the menu is open: keep the path, not the item.
        path, status = Path(item.data(Qt.UserRole)), item.data(STATUS_ROLE)
        menu = QMenu(self)
        menu.setToolTipsVisible(True)
        if self.followed == path:
            menu.addAction("Stop following", self.unfollow_requested.emit)
        elif status == RUNNING_ELSEWHERE:
            follow = menu.addAction("Follow live", lambda: self.follow_requested.emit(path))
            follow.setToolTip("Show this run, which another process trains, on the Train "
                              "page as it goes")
            if self.training_here:
                follow.setEnabled(False)
                follow.setToolTip("A run is training in this window: stop it first")
        menu.addAction("Show curves", lambda: self.curves_requested.emit(path))
        menu.addAction("Rename…", self.rename_requested.emit)
        menu.addAction("Export…", self.export_requested.emit)
        menu.addAction("Show in file manager", lambda: self.reveal_requested.emit(path))
        menu.addSeparator()
        menu.addAction("Delete…", self.delete_requested.emit)
        return menu

    def _on_menu_requested(self, position: QPoint) -> None:
        item = self.runs.itemAt(position)
        if item is None:
            return
        self.menu = self.context_menu(item)
        self.menu.popup(self.runs.viewport().mapToGlobal(position))

    # --- handlers ------------------------------------------------------------------------

    def _on_current_changed(self, current: QListWidgetItem | None, _previous=None) -> None:
        if current is None:
            self.selected.emit(None, "")
        else:
            self.selected.emit(Path(current.data(Qt.UserRole)), current.data(STATUS_ROLE))

    def _check_selected_run(self) -> None:
        run_dir = self.selected_run()
        if run_dir is not None and not run_dir.is_dir():
            self.selection_gone.emit()
