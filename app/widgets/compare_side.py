"""One side of the Compare page: a run, its checkpoint and embedding space, and their map.

A saved map of the choice loads at once in a worker thread (app.model.explore_data
saved_map); the page makes missing ones with engine children and hands them to
:meth:`CompareSide.show_map`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, QThreadPool, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from app.child.workers import Relay, Task
from app.model.explore_data import MapData, saved_map
from app.model.selection import Selection
from app.widgets.checkpoint_box import CheckpointBox
from app.widgets.map_view import MapView
from app.widgets.space_chooser import SpaceChooser
from engine.evaluate.embed import RunError, checkpoint_name
from engine.evaluate.maps import MapParams
from engine.run.layout import LAST, RunDir


class CompareSide(QWidget):
    """A run chooser, a :class:`CheckpointBox` (with random init), a :class:`SpaceChooser`
    and the :class:`MapView` of that choice, plus the side's :attr:`selection` (image
    indices of this side's run, drawn as the map's box selection).

    :attr:`generation` grows with every new choice: work started for an older one is
    dropped when it comes back.

    Signals:
        choice_changed(): the run, checkpoint or space changed (the map was cleared).
        map_shown(): the map shows a new :class:`MapData`.
    """

    choice_changed = Signal()
    map_shown = Signal()

    def __init__(self, name: str, pool: QThreadPool,
                 map_params: Callable[[], MapParams] = MapParams,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.name = name
        #: The map parameters a saved map is looked up with (the page's map settings).
        self.map_params = map_params
        self.generation = 0
        self._pool = pool
        self._loading = False
        self._map_relay = Relay(self)
        self._map_relay.done.connect(self._on_saved_map)
        self._map_relay.failed.connect(lambda g, text: None)  # no saved map: nothing to show
        self.selection = Selection(self)
        self.run_box = QComboBox()
        self.run_box.setToolTip(f"The run of side {name}.")
        self.run_box.setMinimumContentsLength(16)
        # long run names are cut rather than squeezing the checkpoint and space boxes
        self.run_box.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.run_box.currentIndexChanged.connect(self._on_run_chosen)
        self.checkpoint_box = CheckpointBox()
        self.checkpoint_box.setMinimumContentsLength(14)
        self.checkpoint_box.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.checkpoint_box.currentIndexChanged.connect(lambda _: self._on_choice())
        self.space_box = SpaceChooser()
        self.space_box.currentIndexChanged.connect(lambda _: self._on_choice())
        self.map_view = MapView()
        self.map_view.clear(f"Choose the run of side {name}.")
        self.selection.changed.connect(
            lambda: self.map_view.set_box_selection(self.selection.indices))

        # two rows, so that both sides' choices fit beside each other in a 1,400 px window
        row = QHBoxLayout()
        row.addWidget(QLabel(f"<b>{name}</b>"))
        row.addWidget(QLabel("Run"))
        row.addWidget(self.run_box, 1)
        second = QHBoxLayout()
        for label, widget in (("Checkpoint", self.checkpoint_box), ("Space", self.space_box)):
            second.addWidget(QLabel(label))
            second.addWidget(widget)
        second.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addLayout(second)
        layout.addWidget(self.map_view, 1)

    # --- the choice ------------------------------------------------------------------------

    def run_dir(self) -> Path | None:
        data = self.run_box.currentData()
        return Path(data) if data else None

    def checkpoint(self) -> str:
        """The checkpoint name the engine's verbs take ("last", "epoch-0002", "random")."""
        return self.checkpoint_box.checkpoint() or LAST

    def checkpoint_name(self) -> str:
        """The checkpoint as the engine names its results ("last" for last.pt)."""
        run = self.run_dir()
        try:
            return checkpoint_name(run, self.checkpoint()) if run is not None else ""
        except RunError:
            return self.checkpoint()

    def space(self) -> str:
        return self.space_box.space()

    def is_ready(self) -> bool:
        """Whether the chosen run is a run folder (random init needs no checkpoint)."""
        run = self.run_dir()
        return run is not None and RunDir(run).is_run()

    def set_runs(self, runs: list[tuple[Path, str]]) -> None:
        """List ``runs`` (folder, name shown) in the run chooser, keeping the current run
        (listed even when it is not among them)."""
        current = self.run_dir()
        self._loading = True
        self.run_box.blockSignals(True)
        try:
            self.run_box.clear()
            for path, name in runs:
                self.run_box.addItem(name, str(path))
                self.run_box.setItemData(self.run_box.count() - 1, str(path), Qt.ToolTipRole)
            if current is not None:
                self._select_run(current)
        finally:
            self.run_box.blockSignals(False)
            self._loading = False

    def set_choice(self, run_dir: Path | None, checkpoint: str | None = None) -> None:
        """Choose ``run_dir`` and ``checkpoint`` (None: its newest); one choice_changed
        follows."""
        self._loading = True
        try:
            self.run_box.blockSignals(True)
            try:
                if run_dir is None:
                    self.run_box.setCurrentIndex(-1)
                else:
                    self._select_run(Path(run_dir))
            finally:
                self.run_box.blockSignals(False)
            self.checkpoint_box.set_run(self.run_dir())
            if checkpoint is not None and self.run_dir() is not None:
                self.checkpoint_box.set_checkpoint(checkpoint)
        finally:
            self._loading = False
        self._on_choice()

    def _select_run(self, run_dir: Path) -> None:
        index = self.run_box.findData(str(run_dir))
        if index < 0:
            self.run_box.addItem(run_dir.name, str(run_dir))
            index = self.run_box.count() - 1
        self.run_box.setCurrentIndex(index)

    def _on_run_chosen(self, _index: int) -> None:
        if self._loading:
            return
        self._loading = True
        try:
            self.checkpoint_box.set_run(self.run_dir())
        finally:
            self._loading = False
        self._on_choice()

    def _on_choice(self) -> None:
        if self._loading:
            return
        self.generation += 1
        self.selection.clear()
        run = self.run_dir()
        if run is None:
            self.map_view.clear(f"Choose the run of side {self.name}.")
        elif not self.is_ready():
            self.map_view.clear(f"{run} is not a run (no config.json), or it is gone.")
        else:
            self.map_view.clear("No map of this choice yet: press Compute maps.")
            self.load_saved_map()
        self.choice_changed.emit()

    # --- the map ---------------------------------------------------------------------------

    def load_saved_map(self) -> None:
        """Show the saved map of the choice (:attr:`map_params`, or its PCA map while UMAP's is
        missing), read in a worker thread; nothing when there is none."""
        if not self.is_ready():
            return
        run, ckpt, space = self.run_dir(), self.checkpoint(), self.space()
        params = self.map_params()
        candidates = [params] + ([dataclasses.replace(params, method="pca")]
                                 if params.method == "umap" else [])
        self._pool.start(Task(lambda: next(
            (m for p in candidates if (m := saved_map(run, ckpt, space, p)) is not None),
            None), self.generation, self._map_relay))

    def _on_saved_map(self, generation: int, data: MapData | None) -> None:
        if generation == self.generation and data is not None and self.map_view.data is None:
            self.show_map(data)

    def show_map(self, data: MapData) -> None:
        """Draw ``data`` (a map of this side's choice) and keep the selection's marks."""
        self.map_view.set_map(data)
        self.map_view.set_box_selection(self.selection.indices[self.selection.indices
                                                               < len(data)])
        self.map_shown.emit()
