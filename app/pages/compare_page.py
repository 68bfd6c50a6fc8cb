"""The Compare page: two embeddings of the same images side by side (two checkpoints of a
run, random init against trained, or two runs), with linked hover and selection, and how
much each image's neighbourhood changed between them.

Each side (app.widgets.compare_side) is a run, a checkpoint and a space, and their map. The
two maps are linked by the images' paths relative to their folders (app.model.compare_data
PointLinks, made in a worker thread): hovering an image on one map rings it on the other, a
box selected on one marks the same images on both, and a picked image is marked on both
with its nearest neighbours in A and in B beside each other.

Engine children, one at a time: ``map`` for each side (PCA, then UMAP) and ``compare``
(engine.evaluate.compare: each image's k nearest neighbours in A and in B and their
overlap), whose most changed images are shown as thumbnails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, QThreadPool, Signal
from PySide6.QtGui import QCursor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.child.engine_jobs import EngineJob, EngineQueue
from app.child.workers import Relay, Task
from app.model.compare_data import PointLinks, overlap_on_a, summary
from app.model.explore_data import MapData, saved_neighbours
from app.model.run_model import list_runs
from app.widgets.compare_side import CompareSide
from app.widgets.hover_preview import HoverTip
from app.widgets.job_status import JobStatus
from app.widgets.map_settings import MapSettings
from app.widgets.neighbours_panel import NeighboursPanel, ThumbnailCache, ThumbnailGrid, TileInfo
from engine.evaluate.maps import MapParams
from engine.run.layout import RANDOM_INIT

#: The most changed images shown as tiles (the result file holds them all).
MAX_CHANGED_TILES = 100
#: The widths of the most changed tiles and of the two neighbour panels at first.
BELOW_SPLIT = (460, 470, 470)
A, B = 0, 1


class ComparePage(QWidget):
    """Two maps side by side (:attr:`sides`, A and B), linked by image, and the comparison
    of their neighbourhoods.

    :attr:`overlap` is the last comparison's overlap per image of side A's map (float64,
    NaN where an image is not in B; None before a comparison or after a side changed);
    :attr:`result` is that comparison (``contrastive-engine compare --json``'s result).
    :attr:`picked` is the picked image as (index on A, index on B), -1 where it is not on
    that side.

    Signals:
        maps_linked(): both maps are shown and their points are matched (:attr:`links`).
        compared(object): a comparison is shown (the result dict).
        neighbours_shown(int): the neighbours of the picked image on side 0 (A) or 1 (B)
            are shown.
        failed(str): something failed; the message is shown on the page.
        idle(): the last queued engine child has ended.
    """

    maps_linked = Signal()
    compared = Signal(object)
    neighbours_shown = Signal(int)
    failed = Signal(str)
    idle = Signal()

    def __init__(self, runs_root: Path, cache_dir: Path | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runs_root = Path(runs_root)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.links: PointLinks | None = None
        self.result: dict | None = None
        self.overlap: np.ndarray | None = None
        self.picked = (-1, -1)
        #: the neighbours results shown for the picked image, per side (None: none)
        self._neighbours: list[dict | None] = [None, None]
        self._links_generation = self._query_generation = 0
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(2)
        self._links_relay = Relay(self)
        self._links_relay.done.connect(self._on_links)
        self._links_relay.failed.connect(lambda g, text: self._fail(
            f"The two maps' images could not be matched: {text}"))
        self._query_relays = (Relay(self), Relay(self))
        for side, relay in enumerate(self._query_relays):
            relay.done.connect(lambda g, r, side=side: self._on_neighbours(side, g, r))
            relay.failed.connect(lambda g, text, side=side: self._on_neighbours_failed(
                side, g, text))
        self.status = JobStatus("Choose the two runs and checkpoints to compare.",
                                cancel=True)
        self.jobs = EngineQueue(self.cache_dir, self)
        self.status.follow(self.jobs)
        self.jobs.started.connect(lambda job: self._update_controls())
        self.jobs.failed.connect(lambda job, reason: self._fail(f"{job.describe} failed: "
                                                                f"{reason}"))
        self.jobs.idle.connect(self._on_jobs_idle)
        self.thumbnails = ThumbnailCache(parent=self)
        self.hover_tip = HoverTip(self.thumbnails, self)

        self.map_settings = MapSettings()
        self.sides = (CompareSide("A", self._pool, self._map_params),
                      CompareSide("B", self._pool, self._map_params))
        for side, widget in enumerate(self.sides):
            widget.choice_changed.connect(lambda side=side: self._on_choice_changed(side))
            widget.map_shown.connect(self._relink)
            view = widget.map_view
            view.point_hovered.connect(lambda i, side=side: self._on_hovered(side, i))
            view.point_clicked.connect(lambda i, side=side: self.pick(side, i))
            view.box_selected.connect(lambda idx, side=side: self._on_box(side, idx))
        self.compute_button = QPushButton("Compute maps")
        self.compute_button.setToolTip("Embed the images of both sides if needed and map "
                                       "them; saved maps load at once.")
        self.compute_button.clicked.connect(self.compute_maps)
        self.k_box = QSpinBox()
        self.k_box.setRange(1, 100)
        self.k_box.setValue(10)
        self.k_box.setToolTip("How many nearest neighbours of each image are compared (and "
                              "shown for a picked image).")
        self.compare_button = QPushButton("Compare neighbourhoods")
        self.compare_button.setToolTip("For each image in both A and B: its k nearest "
                                       "neighbours in A and in B, and the share they have in "
                                       "common (the overlap).")
        self.compare_button.clicked.connect(self.compare_neighbourhoods)
        self.cancel_button = self.status.cancel_button  # in the job's progress row
        self.status.cancel_requested.connect(lambda: self.cancel())

        self.summary = QLabel("Press Compare neighbourhoods to see how each image's nearest "
                              "neighbours differ between A and B.")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.changed_title = QLabel("Most changed neighbourhoods")
        self.changed_title.setWordWrap(True)
        # a long title wraps instead of widening the column
        self.changed_title.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.changed = ThumbnailGrid(self.thumbnails, px=64)
        self.changed.setToolTip("The images whose neighbours changed most (lowest overlap "
                                "first). Click one to mark it on both maps and see its "
                                "neighbours in A and in B.")
        self.changed.activated.connect(lambda i: self.pick(A, i))
        self.panels = (NeighboursPanel(self.thumbnails), NeighboursPanel(self.thumbnails))
        for side, panel in enumerate(self.panels):
            panel.setAcceptDrops(False)
            panel.setToolTip(f"The nearest neighbours of the picked image in "
                             f"{'AB'[side]}. Click one to pick it.")
            panel.show_message(f"Neighbours in {'AB'[side]}: click a point or a tile.")
            panel.neighbour_activated.connect(lambda i, side=side: self.pick(side, i))

        controls = QHBoxLayout()
        controls.addWidget(self.map_settings)
        controls.addWidget(self.compute_button)
        controls.addWidget(QLabel("Neighbours"))
        controls.addWidget(self.k_box)
        controls.addWidget(self.compare_button)
        controls.addStretch(1)
        maps = QSplitter()
        for widget in self.sides:
            maps.addWidget(widget)
        maps.setChildrenCollapsible(False)
        changed = QWidget()
        changed_layout = QVBoxLayout(changed)
        changed_layout.setContentsMargins(0, 0, 0, 0)
        changed_layout.addWidget(self.changed_title)
        changed_layout.addWidget(self.changed, 1)
        below = QSplitter()
        for widget in (changed, *self.panels):
            below.addWidget(widget)
        below.setChildrenCollapsible(False)
        for i in range(3):
            below.setStretchFactor(i, 1)
        below.setSizes(list(BELOW_SPLIT))
        body = QSplitter(Qt.Vertical)
        body.addWidget(maps)
        body.addWidget(below)
        body.setStretchFactor(0, 3)
        body.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(controls)
        layout.addWidget(self.summary)
        layout.addWidget(body, 1)
        layout.addWidget(self.status)
        self._update_controls()

    # --- public ----------------------------------------------------------------------------

    def set_run(self, run_dir: Path | None) -> None:
        """Make ``run_dir`` side A (its newest checkpoint). Side B becomes the same run's
        random init, the untrained encoder, unless a run of its own was chosen for it."""
        a, b = self.sides
        follows = b.run_dir() is None or b.run_dir() == a.run_dir()
        self.refresh_runs()
        a.set_choice(run_dir)
        if follows:
            b.set_choice(run_dir, RANDOM_INIT if run_dir is not None else None)

    def refresh_runs(self) -> None:
        """List the runs under the runs folder again in both run choosers."""
        runs = [(r.path, r.name) for r in list_runs(self.runs_root)]
        for side in self.sides:
            side.set_runs(runs)

    def compute_maps(self) -> None:
        """Make both sides' maps in engine children: PCA first (shown at once), then UMAP
        if chosen."""
        try:
            params = self.map_settings.params()
        except ValueError as exc:
            self._fail(str(exc))
            return
        ready = [s for s in (A, B) if self.sides[s].is_ready()]
        if not ready:
            self._fail("Choose a run for each side first.")
            return
        methods = ["pca"] + (["umap"] if params.method == "umap" else [])
        for method in methods:
            for s in ready:
                side = self.sides[s]
                args = ["map", "--run", str(side.run_dir()), "--checkpoint", side.checkpoint(),
                        "--space", side.space(), "--method", method]
                if method == "umap":
                    args += ["--n-neighbors", str(params.n_neighbors), "--min-dist",
                             repr(params.min_dist)]
                self.jobs.enqueue(EngineJob(
                    f"map-{s}", args, f"Making the {method.upper()} map of {side.name}",
                    on_result=lambda r, s=s, g=side.generation: self._on_map_result(s, g, r)))

    def compare_neighbourhoods(self) -> None:
        """Compare A's and B's neighbourhoods (k from the spin box) in an engine child."""
        a, b = self.sides
        if not (a.is_ready() and b.is_ready()):
            self._fail("Choose a run for each side first.")
            return
        self.jobs.cancel("compare")
        args = ["compare", "--run", str(a.run_dir()), "--checkpoint", a.checkpoint(),
                "--space", a.space(), "--other", str(b.run_dir()), "--other-checkpoint",
                b.checkpoint(), "--other-space", b.space(), "-k", str(self.k_box.value()),
                "--top", str(MAX_CHANGED_TILES)]
        generations = (a.generation, b.generation)
        self.jobs.enqueue(EngineJob(
            "compare", args, "Comparing the neighbourhoods of A and B",
            on_result=lambda r: self._on_compare_result(generations, r)))

    def pick(self, side: int, index: int) -> None:
        """Pick image ``index`` of side ``side`` (0: A, 1: B): marked on both maps, its
        nearest neighbours in A and in B shown beside each other (from the saved
        embeddings)."""
        other = self._other_index(side, index)
        self.picked = (index, other) if side == A else (other, index)
        self._query_generation += 1
        self._neighbours = [None, None]
        for s, widget in enumerate(self.sides):
            i = self.picked[s]
            widget.map_view.set_selected(i if i >= 0 else None)
            widget.map_view.set_neighbours([])
            panel = self.panels[s]
            if i < 0:
                panel.show_message(f"This image is not in {widget.name}"
                                   + ("" if self.links is not None or self.result is not None
                                      else " (or the maps are not both shown yet)") + ".",
                                   clear=True)
                continue
            run, ckpt, space, k = (widget.run_dir(), widget.checkpoint(), widget.space(),
                                   self.k_box.value())
            self._pool.start(Task(lambda run=run, ckpt=ckpt, space=space, i=i, k=k:
                                  saved_neighbours(run, ckpt, space, i, k),
                                  self._query_generation, self._query_relays[s]))

    def _other_index(self, side: int, index: int) -> int:
        """The index on the other side of image ``index`` of ``side``: by the maps' links,
        else by the comparison shown (whose images are matched the same way), else -1."""
        if self.links is not None:
            return self.links.other(side, index)
        if self.result is not None:
            mine, theirs = (np.asarray(self.result[key], np.int64)
                            for key in (("index_a", "index_b") if side == A
                                        else ("index_b", "index_a")))
            found = np.flatnonzero(mine == index)
            return int(theirs[found[0]]) if len(found) else -1
        return -1

    def cancel(self, quiet: bool = False) -> None:
        """Stop the running engine child and drop the queued ones (the status line says
        what was kept; ``quiet`` callers say what comes next, which replaces it)."""
        self.jobs.cancel()

    def is_busy(self) -> bool:
        """Whether an engine child is running."""
        return self.jobs.is_busy()

    # --- engine children -------------------------------------------------------------------

    def _on_map_result(self, side: int, generation: int, result: dict) -> None:
        widget = self.sides[side]
        if generation != widget.generation:
            return  # made for a choice the side has left since
        data = MapData.from_result(result)
        widget.show_map(data)
        self._say(f"{widget.name}: {data.describe()} made in {result.get('seconds', 0)} s.")

    def _on_compare_result(self, generations: tuple[int, int], result: dict) -> None:
        if generations != (self.sides[A].generation, self.sides[B].generation):
            return  # a side changed since it was asked for
        self.result = result
        self.overlap = overlap_on_a(result, int(result["a"]["images"]))
        self.summary.setText(summary(result))
        root = Path(result["a"]["root"])
        tiles = [TileInfo(c["index"], str(root / c["path"]),
                          f"{c['overlap']:.2f}" + (f"\n{c['class']}" if c["class"] else ""),
                          f"#{c['index']} {c['path']}\noverlap {c['overlap']:.2f}: "
                          f"{round(c['overlap'] * result['k'])} of {result['k']} neighbours "
                          "the same in A and B")
                 for c in result["changed"][:MAX_CHANGED_TILES]]
        self.changed.set_tiles(tiles)
        self.changed_title.setText(f"Most changed neighbourhoods (the first {len(tiles)} of "
                                   f"{result['images']:,}, lowest overlap first)")
        self.changed_title.setToolTip(f"Every image's overlap is saved in {result['path']}.")
        self._say(f"Compared {result['images']:,} images in {result['seconds']} s: mean "
                  f"overlap {result['mean_overlap']:.3f}.")
        self.compared.emit(result)

    def _on_jobs_idle(self) -> None:
        self._update_controls()
        self.idle.emit()

    # --- linking the maps ------------------------------------------------------------------

    def _on_choice_changed(self, side: int) -> None:
        self.jobs.cancel(f"map-{side}")
        self.jobs.cancel("compare")
        self.links = None
        self._links_generation += 1
        self.result, self.overlap = None, None
        self.picked = (-1, -1)
        self._neighbours = [None, None]
        self.changed.set_tiles([])
        self.changed_title.setText("Most changed neighbourhoods")
        self.summary.setText("Press Compare neighbourhoods to see how each image's nearest "
                             "neighbours differ between A and B.")
        for s, panel in enumerate(self.panels):
            panel.show_message(f"Neighbours in {'AB'[s]}: click a point or a tile.",
                               clear=True)
        for widget in self.sides:
            widget.map_view.set_selected(None)
            widget.map_view.set_neighbours([])
        self._update_controls()

    def _relink(self) -> None:
        """Match the two maps' points by path, in a worker thread (100,000 paths take
        about 0.2 s)."""
        self.links = None
        self._links_generation += 1
        for s, widget in enumerate(self.sides):  # a new map drew no marks yet
            if widget.map_view.data is not None and self.picked[s] >= 0:
                widget.map_view.set_selected(self.picked[s])
                widget.map_view.mark_neighbours_of(self._neighbours[s])
        data_a, data_b = (s.map_view.data for s in self.sides)
        if data_a is None or data_b is None:
            return
        paths_a, paths_b = data_a.paths, data_b.paths
        self._pool.start(Task(lambda: PointLinks.of_paths(paths_a, paths_b),
                              self._links_generation, self._links_relay))

    def _on_links(self, generation: int, links: PointLinks) -> None:
        if generation != self._links_generation:
            return
        self.links = links
        n_a, n_b = len(links.a_to_b), len(links.b_to_a)
        self._say(f"{links.matched:,} images are on both maps (A has {n_a:,}, B {n_b:,}): "
                  "hover or select on one to see them on the other.")
        self.maps_linked.emit()

    def _on_hovered(self, side: int, index: int) -> None:
        """Show the hovered image beside the cursor and ring it on the other map; when the
        mouse leaves, the picked image is marked there again."""
        data = self.sides[side].map_view.data
        if index >= 0 and data is not None:
            self.hover_tip.show_point(data, index, QCursor.pos())
        else:
            self.hover_tip.hide()
        other = 1 - side
        j = self.links.other(side, index) if self.links is not None and index >= 0 else -1
        if j < 0:
            j = self.picked[other]
        self.sides[other].map_view.set_selected(j if j >= 0 else None)

    def _on_box(self, side: int, indices: np.ndarray) -> None:
        """A box selected on one map selects the same images on both."""
        source = f"box on {self.sides[side].name}"
        self.sides[side].selection.set(indices, source=source)
        other = self.sides[1 - side]
        if self.links is None:
            other.selection.clear()
        else:
            other.selection.set(self.links.others(side, indices), source=source)
        a, b = (len(s.selection) for s in self.sides)
        self._say(f"Selected {a:,} images on A and {b:,} on B.")

    # --- the picked image's neighbours -----------------------------------------------------

    def _on_neighbours(self, side: int, generation: int, result: dict | None) -> None:
        if generation != self._query_generation:
            return
        widget, panel = self.sides[side], self.panels[side]
        if result is None:
            panel.show_message(f"No saved embeddings of {widget.checkpoint()} in "
                               f"{widget.name} yet: press Compute maps or Compare "
                               "neighbourhoods.", clear=True)
            return
        self._neighbours[side] = result
        panel.title.setText(f"{widget.name}: {panel.show_neighbours(result)}")
        widget.map_view.mark_neighbours_of(result)
        self.neighbours_shown.emit(side)

    def _on_neighbours_failed(self, side: int, generation: int, text: str) -> None:
        if generation == self._query_generation:
            self.panels[side].show_message(f"No neighbours: {text}", error=True, clear=True)
            self._fail(f"No neighbours in {self.sides[side].name}: {text}")

    # --- small helpers ---------------------------------------------------------------------

    def _map_params(self) -> MapParams:
        """The map settings shown (their defaults while a value is out of range)."""
        try:
            return self.map_settings.params()
        except ValueError:
            return MapParams()

    def hideEvent(self, event) -> None:
        self.hover_tip.hide()
        super().hideEvent(event)

    def showEvent(self, event) -> None:
        self.refresh_runs()  # runs trained since the page was last shown
        super().showEvent(event)

    def _update_controls(self) -> None:
        ready = all(side.is_ready() for side in self.sides)
        self.compute_button.setEnabled(any(side.is_ready() for side in self.sides))
        self.compare_button.setEnabled(ready)
        self.cancel_button.setEnabled(self.jobs.is_busy())

    def _say(self, text: str) -> None:
        self.status.say(text)

    def _fail(self, text: str) -> None:
        self.status.fail(text)
        self.failed.emit(text)
