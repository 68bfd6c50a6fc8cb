"""The curate panel of the Explore page: near-duplicates, outliers and a diverse subset,
likely label mistakes, one tab each (app/widgets/duplicates_view.py, outliers_view.py,
mistakes_view.py).

The engine's verbs run as children through the page's :class:`EngineQueue`; their saved
answers (the run's curation/ folder) are read in a worker thread, at once when the panel is
shown a run, checkpoint and space that has them. The panel selects, tags and shows images
only through its signals: the page owns the selection, the tags and the neighbours.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QThreadPool, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.child.engine_jobs import EngineJob, EngineQueue
from app.child.workers import Relay, Task
from app.model.curation import KINDS, load_curation
from app.model.selection import ADD, INTERSECT, REMOVE, REPLACE
from app.widgets.curation_view import CurationView
from app.widgets.duplicates_view import DuplicatesView
from app.widgets.mistakes_view import MistakesView
from app.widgets.neighbours_panel import ThumbnailCache
from app.widgets.outliers_view import OutliersView

#: How a curation view's images combine with the selection, as the mode box offers it.
MODE_NAMES = ((REPLACE, "Replace the selection"), (ADD, "Add to the selection"),
              (REMOVE, "Remove from the selection"), (INTERSECT, "Intersect the selection"))
DESCRIBE = {"duplicates": "Finding near-duplicates", "outliers": "Ranking outliers",
            "mistakes": "Looking for label mistakes"}
NONE_SAVED = {"duplicates": "No duplicates found for this checkpoint and space yet: press "
                            "Find duplicates.",
              "outliers": "No outlier ranking for this checkpoint and space yet: press Find "
                          "outliers.",
              "mistakes": "No label check for this checkpoint and space yet: press Find label "
                          "mistakes."}


class CuratePanel(QWidget):
    """Duplicates, outliers and label mistakes of one run, checkpoint and space.

    ``ask_tag_name(default)`` asks for a tag's name (a dialog; None when cancelled); tests
    replace it.

    Signals:
        select_requested(object, str, str): select these image indices (int64 array),
            combined with the selection by this mode (app.model.selection: replace, add,
            remove, intersect); what chose them ("duplicates: redundant").
        tag_requested(str, object): tag these image indices (int64 array) with this name.
        image_activated(int): an image was clicked: show its neighbours.
        scores_ready(str, object): a score per image of the run (float32 array over all
            images), to colour the map by: "outliers" (mean similarity to the k nearest;
            low = unusual) or "mistakes" (the suggested class's share of the vote, 0 for
            images not suspected).
        loaded(): the saved results of a context, or a child's result, are shown.
    """

    select_requested = Signal(object, str, str)
    tag_requested = Signal(str, object)
    image_activated = Signal(int)
    scores_ready = Signal(str, object)
    loaded = Signal()

    def __init__(self, jobs: EngineQueue, thumbnails: ThumbnailCache,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.jobs = jobs
        self.run_dir: Path | None = None
        self.checkpoint = ""
        self.space = "h"
        self.root: str | None = None
        self.ask_tag_name: Callable[[str], str | None] = self._ask_tag_name
        self._generation = 0
        self._diverse_asked: int | None = None
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._relay = Relay(self)
        self._relay.done.connect(self._on_loaded)
        self._relay.failed.connect(self._on_load_failed)

        self.duplicates = DuplicatesView(thumbnails)
        self.outliers = OutliersView(thumbnails)
        self.mistakes = MistakesView(thumbnails)
        self.views: dict[str, CurationView] = {v.kind: v for v in (
            self.duplicates, self.outliers, self.mistakes)}
        self.tabs = QTabWidget()
        for view, title in ((self.duplicates, "Duplicates"), (self.outliers, "Outliers"),
                            (self.mistakes, "Label mistakes")):
            self.tabs.addTab(view, title)
            view.run_requested.connect(lambda extra, v=view: self.run(v.kind, extra))
            view.select_requested.connect(self._on_select)
            view.tag_requested.connect(self._on_tag)
            view.image_activated.connect(self.image_activated)
            view.scores_ready.connect(self.scores_ready)
        self.duplicates.model.modelReset.connect(self._update_tabs)  # regrouped
        self.mode_box = QComboBox()
        for mode, name in MODE_NAMES:
            self.mode_box.addItem(name, mode)
        self.mode_box.setToolTip("How the images a button selects combine with the "
                                 "selection.")
        row = QHBoxLayout()
        row.addWidget(QLabel("Selecting:"))
        row.addWidget(self.mode_box)
        row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.tabs, 1)
        self.set_context(None, "", "h")

    # --- public ----------------------------------------------------------------------------

    def set_context(self, run_dir: Path | None, checkpoint: str, space: str,
                    root: str | None = None) -> None:
        """Show the curation of ``run_dir`` at ``checkpoint`` ("last", "epoch-NNNN",
        "random") in ``space`` (h or z): its saved results are read in a worker thread and
        shown when they exist; the views are cleared otherwise. ``root``: the image folder
        where it now is (default: where the embeddings say)."""
        self._generation += 1
        for kind in KINDS:
            self.jobs.cancel(kind)
        self._diverse_asked = None
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.checkpoint, self.space, self.root = checkpoint, space, root
        ready = self.run_dir is not None and self.run_dir.is_dir()
        for view in self.views.values():
            view.set_busy(False)
            view.set_ready(ready)
            view.clear("Choose a run to curate its folder." if self.run_dir is None
                       else "Reading the saved results…")
        self._update_tabs()
        if not ready:
            return
        run, ckpt = self.run_dir, checkpoint
        self._pool.start(Task(lambda: load_curation(run, ckpt, space), self._generation,
                              self._relay))

    def mode(self) -> str:
        """The selection mode chosen (app.model.selection)."""
        return str(self.mode_box.currentData())

    def run(self, kind: str, extra: list[str] | None = None) -> None:
        """Run the engine verb ``kind`` (duplicates, outliers, mistakes) for the current
        context, with ``extra`` arguments; its result is shown when it comes."""
        if self.run_dir is None:
            return
        view = self.views[kind]
        extra = list(extra or [])
        if kind == "outliers":
            self._diverse_asked = (int(extra[extra.index("--diverse") + 1])
                                   if "--diverse" in extra else None)
        generation = self._generation
        self.jobs.cancel(kind)
        args = [kind, "--run", str(self.run_dir), "--checkpoint", self.checkpoint,
                "--space", self.space, *extra]
        view.set_busy(True)
        view.show_message(f"{DESCRIBE[kind]}…")
        self.jobs.enqueue(EngineJob(
            kind, args, f"{DESCRIBE[kind]} ({self.checkpoint}, {self.space})",
            on_result=lambda result: self._on_result(kind, generation, result),
            on_finished=lambda: self._on_ended(kind, generation),
            on_failed=lambda reason: self._on_failed(kind, generation, reason)))

    def is_busy(self) -> bool:
        """Whether one of the panel's engine children runs or waits."""
        return any(self.jobs.has(kind, "") for kind in KINDS)

    # --- engine children and saved results -------------------------------------------------

    def _on_result(self, kind: str, generation: int, result: dict) -> None:
        if generation != self._generation or self.run_dir is None:
            return  # made for a context the panel has left since
        run, ckpt, space = self.run_dir, self.checkpoint, self.space
        self._pool.start(Task(lambda: load_curation(run, ckpt, space, (kind,), {kind: result}),
                              generation, self._relay))

    def _on_ended(self, kind: str, generation: int) -> None:
        if generation == self._generation:
            self.views[kind].set_busy(False)

    def _on_failed(self, kind: str, generation: int, reason: str) -> None:
        if generation != self._generation:
            return
        view = self.views[kind]
        view.set_busy(False)
        view.show_message(reason, error=True)

    def _on_loaded(self, generation: int, out: dict[str, Any]) -> None:
        if generation != self._generation:
            return
        images = out["images"]
        if images is not None and self.root is not None:
            images.root = str(self.root)
        for kind in out.get("kinds", KINDS):
            view = self.views[kind]
            data = out.get(kind)
            if data is None:
                view.clear(NONE_SAVED[kind])
            elif kind == "outliers":
                self.outliers.show_data(data, images, self._diverse_asked)
                self._diverse_asked = None
            else:
                view.show_data(data, images)
        self._update_tabs()
        self.loaded.emit()

    def _on_load_failed(self, generation: int, text: str) -> None:
        if generation == self._generation:
            for view in self.views.values():
                if not view.has_data():
                    view.show_message(f"The saved results cannot be read: {text}", error=True)

    # --- selecting and tagging -------------------------------------------------------------

    def _on_select(self, indices: object, source: str) -> None:
        self.select_requested.emit(indices, self.mode(), source)

    def _on_tag(self, indices: object, default: str) -> None:
        if not len(indices):  # type: ignore[arg-type]
            return
        name = self.ask_tag_name(default)
        if name and name.strip():
            self.tag_requested.emit(name.strip(), indices)

    def _ask_tag_name(self, default: str) -> str | None:
        name, ok = QInputDialog.getText(self, "Tag images", "Tag name:", QLineEdit.Normal,
                                        default)
        return name if ok else None

    def _update_tabs(self) -> None:
        d, m = self.duplicates, self.mistakes
        self.tabs.setTabText(0, f"Duplicates ({len(d.groups)})" if d.groups is not None
                             else "Duplicates")
        self.tabs.setTabText(2, f"Label mistakes ({len(m.suspects.index)})"
                             if m.suspects is not None else "Label mistakes")

