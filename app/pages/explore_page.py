"""The Explore page: a map of a run's embeddings and the nearest neighbours of any image.

Heavy work runs in engine child processes, one at a time from a queue: ``map`` (which also
embeds the images when needed; a PCA map is shown at once, then UMAP replaces it),
``embed`` (a checkpoint's embeddings, before its neighbours can be read) and ``neighbours
--query FILE`` (an image from outside needs the encoder). Quick work on what is already on
disk (saved embeddings, a neighbour query over them, a saved map, thumbnails) runs in worker
threads.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QThreadPool, QTimer, Signal
from PySide6.QtGui import QCursor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.child.engine_jobs import EngineJob, EngineQueue
from app.child.workers import Call, Relay, Task
from app.model.explore_data import MapData, saved_map, saved_neighbours, warm_neighbour_index
from app.pages.explore_selection import SelectionActions
from app.widgets.checkpoint_box import CheckpointBox
from app.widgets.curate_panel import CuratePanel
from app.widgets.hover_preview import HoverPreview, HoverTip
from app.widgets.image_grid import ImageGrid, PathsOf
from app.widgets.job_status import JobStatus
from app.widgets.map_colours import ColourByBox, by_class, by_score, by_subfolder, by_tags
from app.widgets.map_settings import MapSettings
from app.widgets.map_view import MapView
from app.widgets.neighbours_panel import NeighboursPanel, ThumbnailCache
from app.widgets.space_chooser import SpaceChooser
from engine.evaluate.embed import checkpoint_name
from engine.evaluate.maps import MapParams
from engine.run.layout import LAST, RunDir

#: The map's and the side panel's widths at first (the panel's fits four columns of
#: neighbours); the panel's is kept when the window is resized (the map takes the rest).
SPLIT = (600, 520)


class ExplorePage(QWidget):
    """A run's embeddings map and the neighbours of a chosen image.

    Signals:
        image_selected(int): an image of the run was picked on this page (a point of the
            map, a neighbour or a selected thumbnail was clicked): its index.
        map_shown(str): the scatter now shows a new map (its method, "pca" or "umap").
        neighbours_shown(): the neighbours panel shows a new result.
        failed(str): something failed; the message is shown on the page.
        idle(): the last queued engine child has ended.
        retrain_requested(object, object, str): train a new run on a list of images: the
            list file (Path), the run whose settings to use (Path), what the list holds.
    """

    image_selected = Signal(int)
    map_shown = Signal(str)
    neighbours_shown = Signal()
    failed = Signal(str)
    idle = Signal()
    retrain_requested = Signal(object, object, str)

    def __init__(self, cache_dir: Path | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.run_dir: Path | None = None
        #: the current query: ("index", image index) or ("file", path), or None
        self.query: tuple[str, Any] | None = None
        #: the neighbours shown, as engine.evaluate.explore.neighbours returns them (query excluded)
        self.neighbours_result: dict[str, Any] | None = None
        self.status = JobStatus("Choose a run in the sidebar to explore it.", cancel=True)
        self.jobs = EngineQueue(self.cache_dir, self)
        self.status.follow(self.jobs)
        self.jobs.started.connect(lambda job: self._update_controls())
        self.jobs.failed.connect(lambda job, reason: self._fail(f"{job.describe} failed: {reason}"))
        self.jobs.idle.connect(self._on_jobs_idle)
        self._embedded: set[tuple[str, str]] = set()
        self._loading_run = False
        self._map_generation = self._query_generation = 0
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._map_relay = Relay(self)
        self._map_relay.done.connect(self._on_saved_map)
        self._map_relay.failed.connect(lambda g, text: None)  # no saved map: nothing to show
        self._query_relay = Relay(self)
        self._query_relay.done.connect(self._on_saved_neighbours)
        self._query_relay.failed.connect(self._on_query_failed)
        self.thumbnails = ThumbnailCache(parent=self)
        self._k_timer = QTimer(self)
        self._k_timer.setSingleShot(True)
        self._k_timer.setInterval(300)
        self._k_timer.timeout.connect(self._query_neighbours)

        self.checkpoint_box = CheckpointBox()
        self.checkpoint_box.currentIndexChanged.connect(lambda _: self._on_embeddings_changed())
        self.space_box = SpaceChooser()
        self.space_box.currentIndexChanged.connect(lambda _: self._on_embeddings_changed())
        self.map_settings = MapSettings()
        self.compute_button = QPushButton("Compute map")
        self.compute_button.setToolTip("Embed the images with this checkpoint if needed and "
                                       "make the map; saved maps load at once.")
        self.compute_button.clicked.connect(self.compute_map)
        self.cancel_button = self.status.cancel_button  # in the job's progress row
        self.status.cancel_requested.connect(self.cancel)
        self.k_box = QSpinBox()
        self.k_box.setRange(1, 100)
        self.k_box.setValue(12)
        self.k_box.setToolTip("How many nearest neighbours to show.")
        self.k_box.valueChanged.connect(lambda _: self._k_timer.start())

        self.map_view = MapView()
        self.map_view.point_clicked.connect(self._on_image_picked)
        self.map_view.point_hovered.connect(self._on_point_hovered)
        self.actions = SelectionActions(self.jobs, self)
        self.selection = self.actions.selection
        self.map_view.use_selection(self.selection)  # drags on the map select into it
        self.colour_box = ColourByBox()
        self.colour_box.colouring_chosen.connect(self._on_colouring)
        self.colour_box.failed.connect(self._fail)
        self.actions.tags_changed.connect(lambda _tags: self._update_colourings())
        self.selection.changed.connect(self._on_selection_changed)
        self.actions.said.connect(self._say)
        self.actions.failed.connect(self._fail)
        self.actions.retrain_ready.connect(self.retrain_requested)
        self.map_view.exported.connect(lambda path: self._say(f"Saved {path}."))
        self.map_view.export_failed.connect(self._fail)
        self.hover = HoverPreview(self.thumbnails)
        self.hover_tip = HoverTip(self.thumbnails, self)
        self.panel = NeighboursPanel(self.thumbnails)
        self.panel.file_dropped.connect(self.show_neighbours_of_file)
        self.panel.neighbour_activated.connect(self._on_image_picked)
        self.panel.select_requested.connect(
            lambda indices, what: self.actions.select(indices, self.actions.bar.mode(), what))
        self.selection_grid = ImageGrid(self.thumbnails, px=64)
        self.selection_grid.setToolTip("The selected images (all of them: only those in view "
                                       "are drawn). Click one to see its neighbours.")
        self.selection_grid.activated.connect(self._on_image_picked)
        self.curate = CuratePanel(self.jobs, self.thumbnails)
        self.curate.select_requested.connect(self.actions.select)
        self.curate.tag_requested.connect(self.actions.tag)
        self.curate.image_activated.connect(self._on_image_picked)
        #: per-image scores from the curation views ({"outliers": float32[N], ...})
        self.scores: dict[str, np.ndarray] = {}
        self.curate.scores_ready.connect(self._on_scores)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.panel, "Neighbours")
        self.tabs.addTab(self.selection_grid, "Selection")
        self.tabs.addTab(self.curate, "Curate")

        row1 = QHBoxLayout()
        for label, widget in (("Checkpoint", self.checkpoint_box), ("Space", self.space_box)):
            row1.addWidget(QLabel(label))
            row1.addWidget(widget)
        row1.addWidget(self.map_settings)
        row1.addWidget(QLabel("Colour by"))
        row1.addWidget(self.colour_box)
        row1.addWidget(self.compute_button)
        row1.addStretch(1)
        self.checkpoint_box.setMinimumContentsLength(12)
        hover = QHBoxLayout()
        hover.addWidget(self.hover, 1)
        hover.addWidget(QLabel("Neighbours"))
        hover.addWidget(self.k_box)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addLayout(hover)
        right_layout.addWidget(self.tabs, 1)
        body = self.splitter = QSplitter()
        body.addWidget(self.map_view)
        body.addWidget(right)
        body.setStretchFactor(0, 1)
        body.setStretchFactor(1, 0)
        body.setChildrenCollapsible(False)
        body.setSizes(list(SPLIT))
        layout = QVBoxLayout(self)
        layout.addLayout(row1)
        layout.addWidget(self.actions.bar)
        layout.addWidget(body, 1)
        layout.addWidget(self.status)
        self._update_controls()

    # --- public ----------------------------------------------------------------------------

    def set_run(self, run_dir: Path | None) -> None:
        """Explore ``run_dir`` (None: nothing); a saved map of the current settings is shown
        at once."""
        self.cancel(quiet=True)
        self.hover_tip.hide()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.map_view.export_folder = RunDir(self.run_dir).maps if self.run_dir else None
        self.query, self.neighbours_result = None, None
        self.panel.show_message("Click a point of the map or drop an image file here.",
                                clear=True)
        self.selection_grid.clear()
        self._loading_run = True  # set_run announces its new choice: handled once, below
        try:
            self.checkpoint_box.set_run(self.run_dir)
        finally:
            self._loading_run = False
        self._on_embeddings_changed()

    def refresh_checkpoints(self) -> None:
        """Read the run's checkpoints again (the window calls this when the run wrote one,
        ended, or the runs were refreshed): a run's first checkpoint makes it explorable;
        the map and neighbours shown stay while their checkpoint does."""
        if self.run_dir is None:
            return
        self._loading_run = True
        try:
            changed = self.checkpoint_box.refresh()
        finally:
            self._loading_run = False
        if changed:
            self._on_embeddings_changed()
        self._update_controls()

    def has_checkpoints(self) -> bool:
        return self.run_dir is not None and bool(RunDir(self.run_dir).checkpoint_names())

    def can_explore(self) -> bool:
        """Whether the run can be explored: a run folder, with or without checkpoints (the
        untrained encoder, random init, needs none)."""
        return self.run_dir is not None and RunDir(self.run_dir).is_run()

    def map_params(self) -> MapParams:
        """The map settings shown (ConfigError, a ValueError, if out of range)."""
        return self.map_settings.params()

    def compute_map(self) -> None:
        """Make the map in engine children: PCA first (shown at once), then UMAP if chosen."""
        if self._run_is_gone() or not self.can_explore():
            return
        try:
            params = self.map_params()
        except ValueError as exc:
            self._fail(str(exc))
            return
        self.jobs.cancel("map")
        base = ["map", "--run", str(self.run_dir), "--checkpoint", self._checkpoint(),
                "--space", self._space()]
        self.jobs.enqueue(EngineJob("map", base + ["--method", "pca"], "Making the PCA map",
                                on_result=self._on_map_result))
        if params.method == "umap":
            self.jobs.enqueue(EngineJob(
                "map", base + ["--method", "umap", "--n-neighbors", str(params.n_neighbors),
                               "--min-dist", repr(params.min_dist)],
                "PCA map shown; making the UMAP map", on_result=self._on_map_result))

    def show_neighbours(self, index: int) -> None:
        """Show the nearest neighbours of image ``index`` of the run (and ring it on the map)."""
        self.query = ("index", int(index))
        self.map_view.set_selected(int(index))
        self.map_view.set_neighbours([])  # until this query's neighbours come
        self._query_neighbours()

    def show_neighbours_of_file(self, path: str | Path) -> None:
        """Show the nearest neighbours of an image file from anywhere (an engine child
        embeds it with the checkpoint's encoder)."""
        self.query = ("file", str(path))
        self.map_view.set_selected(None)
        self.map_view.set_neighbours([])
        self._query_neighbours()

    def show_neighbours_of_image(self, path: str | Path) -> None:
        """Show the nearest neighbours of an image file: looked up on the map when it is one
        of the run's images there, otherwise embedded as a file."""
        data = self.map_view.data
        index = data.index_of(str(path)) if data is not None else None
        if index is not None:
            self.show_neighbours(index)
        else:
            self.show_neighbours_of_file(path)

    def cancel(self, quiet: bool = False) -> None:
        """Stop the running engine child and drop the queued ones (the status line says
        what was kept; ``quiet`` callers say what comes next, which replaces it)."""
        self.jobs.cancel()

    def is_busy(self) -> bool:
        """Whether an engine child is running."""
        return self.jobs.is_busy()

    # --- engine children -------------------------------------------------------------------

    def _on_jobs_idle(self) -> None:
        self._update_controls()
        self.idle.emit()

    def _on_map_result(self, result: dict) -> None:
        data = MapData.from_result(result)
        if (data.checkpoint, data.space) != (self._checkpoint_name(), self._space()):
            return  # made for settings the page has left since
        self._show_map(data)
        self._say(f"{data.describe()} made in {result.get('seconds', 0)} s.")

    # --- saved work, in worker threads -----------------------------------------------------

    def _on_embeddings_changed(self) -> None:
        """Checkpoint or space changed (or a new run): show its saved map, if any, and the
        neighbours of the same image there."""
        if self._loading_run:
            return
        self.jobs.cancel("map")
        self.jobs.cancel("embed")  # embeddings of the checkpoint left: no longer waited for
        self._map_generation += 1
        self.actions.set_map(self.run_dir, None)
        self._on_selection_changed()
        self.scores = {}
        self.curate.set_context(self.run_dir if self.can_explore() else None,
                                self._checkpoint(), self._space())
        if self.run_dir is None:
            self.map_view.clear("Choose a run in the sidebar to explore it.")
            self._say("Choose a run in the sidebar to explore it.")
        elif self._run_is_gone():
            self.map_view.clear("This run's folder is gone.")
        elif not self.can_explore():
            self.map_view.clear("This folder is not a run (no config.json).")
        else:
            self.map_view.clear("No map for this checkpoint yet: press Compute map.")
            if self.has_checkpoints():
                self._say("Press Compute map to embed the images and map them.")
            else:
                self._say(f"{self.run_dir.name} has no checkpoint yet (its first epoch has "
                          "not ended): you can map random init, the untrained encoder, now; "
                          "the trained checkpoints appear here after the first epoch.")
            run, ckpt, space = self.run_dir, self._checkpoint(), self._space()
            try:
                params = self.map_params()
            except ValueError:
                params = MapParams()
            candidates = [params] + ([dataclasses.replace(params, method="pca")]
                                     if params.method == "umap" else [])
            self._pool.start(Task(lambda: next(
                (m for p in candidates if (m := saved_map(run, ckpt, space, p)) is not None),
                None), self._map_generation, self._map_relay))
            if self.query is not None:
                self._query_neighbours()
        self._update_controls()

    def _on_saved_map(self, generation: int, data: MapData | None) -> None:
        if generation == self._map_generation and data is not None and self.map_view.data is None:
            self._show_map(data)
            self._say(f"Loaded the saved {data.describe()}.")

    def _query_neighbours(self) -> None:
        if self.query is None or self._run_is_gone() or not self.can_explore():
            return
        kind, value = self.query
        self._query_generation += 1
        if kind == "file":
            self.jobs.cancel("file")
            self.jobs.enqueue(EngineJob(
                "file", ["neighbours", "--run", str(self.run_dir), "--checkpoint",
                         self._checkpoint(), "--space", self._space(), "--query", value,
                         "-k", str(self.k_box.value())],
                f"Embedding {Path(value).name} to find its neighbours",
                on_result=self._show_neighbours_result, on_failed=self._on_file_failed))
            return
        run, ckpt, space, k = self.run_dir, self._checkpoint(), self._space(), self.k_box.value()
        self._pool.start(Task(lambda: saved_neighbours(run, ckpt, space, value, k),
                              self._query_generation, self._query_relay))

    def _on_saved_neighbours(self, generation: int, result: dict | None) -> None:
        if generation != self._query_generation:
            return
        if result is not None:
            self._show_neighbours_result(result)
            return
        key = (str(self.run_dir), self._checkpoint())
        if key in self._embedded:
            self._on_query_failed(generation, f"the embeddings of {key[1]} cannot be read")
        elif not self.jobs.has("embed", key[1]):
            self.jobs.enqueue(EngineJob(
                "embed", ["embed", "--run", key[0], "--checkpoint", key[1]],
                f"Embedding the images with {key[1]}", key=key[1],
                on_finished=lambda: (self._embedded.add(key), self._query_neighbours())))

    def _on_query_failed(self, generation: int, text: str) -> None:
        if generation == self._query_generation:
            self.panel.show_message(f"No neighbours: {text}", error=True, clear=True)
            self._fail(f"No neighbours: {text}")

    def _on_file_failed(self, reason: str) -> None:
        self.panel.show_message(reason, error=True, clear=True)
        self._fail(reason)

    # --- showing ---------------------------------------------------------------------------

    def _show_map(self, data: MapData) -> None:
        self.map_view.set_map(data)
        self.actions.set_map(self.run_dir, data)
        self._on_selection_changed()
        self._update_colourings()
        if self.query is not None and self.query[0] == "index":
            self.map_view.set_selected(self.query[1])
        self.map_view.mark_neighbours_of(self.neighbours_result)
        self._update_controls()
        if self.run_dir is not None:  # the first neighbour query then answers at once
            run, ckpt, space = self.run_dir, self._checkpoint(), self._space()
            self._pool.start(Call(lambda: warm_neighbour_index(run, ckpt, space)))
        self.map_shown.emit(data.method)

    def _show_neighbours_result(self, result: dict) -> None:
        self.neighbours_result = result
        title = self.panel.show_neighbours(result)
        self.map_view.mark_neighbours_of(self.neighbours_result)
        if not self.jobs.is_busy():
            self._say(f"Showing the {title}.")
        self.tabs.setCurrentWidget(self.panel)
        self.neighbours_shown.emit()

    def _on_image_picked(self, index: int) -> None:
        self.show_neighbours(index)
        self.image_selected.emit(index)

    def _on_point_hovered(self, index: int) -> None:
        if index >= 0 and self.map_view.data is not None:
            self.hover.show_point(self.map_view.data, index)
            self.hover_tip.show_point(self.map_view.data, index, QCursor.pos())
        else:
            self.hover_tip.hide()

    def _on_selection_changed(self) -> None:
        data, indices = self.map_view.data, self.selection.indices
        if data is None:
            self.selection_grid.clear()
            self.tabs.setTabText(1, "Selection")
            return
        self.selection_grid.set_images(indices, PathsOf(data.root, data.paths, indices),
                                       captions=lambda row: self._caption(int(indices[row])),
                                       tooltips=lambda row: self._tooltip(int(indices[row])))
        self.tabs.setTabText(1, f"Selection ({len(indices):,})")
        if len(indices) and self.tabs.currentWidget() is not self.curate:
            self.tabs.setCurrentWidget(self.selection_grid)

    def _caption(self, i: int) -> str:
        data = self.map_view.data
        name = data.class_name(i) if data is not None and i < len(data) else None
        return f"#{i}" + (f"\n{name}" if name else "")

    def _tooltip(self, i: int) -> str:
        data = self.map_view.data
        if data is None or i >= len(data):
            return f"#{i}"
        tags = [name for name, rows in self.actions.tags.items()
                if len(rows) and rows[min(np.searchsorted(rows, i), len(rows) - 1)] == i]
        return (f"#{i} {data.paths[i]}" + (f"\nclass {data.class_name(i)}"
                                           if data.class_name(i) else "")
                + (f"\ntags: {', '.join(tags)}" if tags else ""))

    def _on_scores(self, name: str, values: np.ndarray) -> None:
        self.scores[name] = values
        self._update_colourings()

    # --- colouring -------------------------------------------------------------------------

    #: What each curation score is called in the Colour by box.
    SCORE_NAMES = {"outliers": "outlier score (low: unusual)",
                   "mistakes": "label-mistake confidence"}

    def colourings(self) -> dict:
        """The Colour by entries for the map shown: name -> a function making the Colouring
        (made when chosen, so it uses the tags and scores of that moment)."""
        data = self.map_view.data
        if data is None:
            return {}
        entries = {"class": lambda: by_class(data), "sub-folder": lambda: by_subfolder(data)}
        if self.actions.tags:
            entries["tags"] = lambda: by_tags(data, self.actions.tags)
        for name, values in self.scores.items():
            if len(values) == len(data):
                entries[self.SCORE_NAMES.get(name, name)] = (
                    lambda name=name, values=values: by_score(self.SCORE_NAMES.get(name, name),
                                                              values))
        return entries

    def _update_colourings(self) -> None:
        """List the colourings of the map shown; the one chosen is drawn again (a new map
        of the same images, new tags or new scores change what it shows)."""
        self.colour_box.set_entries(self.colourings())
        current = self.colour_box.currentText()
        if current and current != "class":
            self.colour_box.choose(current)

    def _on_colouring(self, colouring) -> None:
        if self.map_view.data is not None:
            self.map_view.set_colouring(colouring)

    def hideEvent(self, event) -> None:
        self.hover_tip.hide()
        super().hideEvent(event)

    # --- small helpers ---------------------------------------------------------------------

    def _run_is_gone(self) -> bool:
        """Whether the run's folder was deleted or moved since it was chosen (said so)."""
        if self.run_dir is None or self.run_dir.is_dir():
            return False
        self._fail(f"The run folder {self.run_dir} is gone: it was deleted or moved outside "
                   "the app. Choose another run in the runs list.")
        return True

    def _checkpoint(self) -> str:
        return self.checkpoint_box.checkpoint() or LAST

    def _checkpoint_name(self) -> str:
        return checkpoint_name(self.run_dir, self._checkpoint()) if self.run_dir else ""

    def _space(self) -> str:
        return self.space_box.space()

    def _update_controls(self) -> None:
        ready = self.can_explore()
        for widget in (self.checkpoint_box, self.space_box, self.compute_button, self.k_box):
            widget.setEnabled(ready)
        self.cancel_button.setEnabled(self.jobs.is_busy())

    def _say(self, text: str) -> None:
        self.status.say(text)

    def _fail(self, text: str) -> None:
        self.status.fail(text)
        self.failed.emit(text)
