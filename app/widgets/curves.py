"""Live training curves: loss (raw and smoothed), learning rate, positive-pair similarity
with the embedding spread, kNN accuracy per epoch (with labels), and throughput.

The curves are created once and redrawn from a :class:`~app.model.run_model.RunHistory` by a
timer (about 15 times a second), never once per event, so a fast engine cannot flood the
GUI thread. Each tick redraws at most one plot whose data changed: repainting a plot after
its range changed costs about 15 ms (its axes are drawn again), so doing all four in one
pass would hold the event loop for 60 ms or more on a busy two-core machine.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QGridLayout, QWidget

from app.model.run_model import RunHistory

REDRAW_HZ = 15
COLLAPSE_STD = 0.2  # embedding_std below this suggests the embeddings are collapsing
#: The curves of each plot, in the order the plots are redrawn.
PLOT_CURVES = {"loss": ("loss", "smoothed"), "lr": ("lr",),
               "health": ("positive_pair_similarity", "embedding_std"),
               "speed": ("pairs_per_s",), "knn": ("knn",)}


class TrainingCurves(QWidget):
    """Four plots of one run, with optional overlays of earlier runs for comparison."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.history: RunHistory | None = None
        self._dirty: set[str] = set()
        layout = QGridLayout(self)
        self.plots: dict[str, pg.PlotWidget] = {}
        for key, title, row, column in [("loss", "Loss", 0, 0), ("lr", "Learning rate", 0, 1),
                                        ("health", "Positive-pair similarity / spread", 1, 0),
                                        ("knn", "kNN accuracy (%)", 1, 1),
                                        ("speed", "Pairs per second", 0, 2)]:
            plot = pg.PlotWidget(title=title)
            plot.setLabel("bottom", "step")
            plot.showGrid(x=True, y=True, alpha=0.2)
            plot.setDownsampling(auto=True, mode="peak")
            plot.setClipToView(True)
            plot.addLegend(offset=(-10, 10))
            layout.addWidget(plot, row, column)
            self.plots[key] = plot
        # Five plots: the speed plot spans the right column.
        layout.removeWidget(self.plots["speed"])
        layout.addWidget(self.plots["speed"], 0, 2, 2, 1)
        self.curves = {
            "loss": self.plots["loss"].plot(name="loss", pen=pg.mkPen((120, 160, 220), width=1)),
            "smoothed": self.plots["loss"].plot(name="smoothed",
                                                pen=pg.mkPen((30, 90, 200), width=2)),
            "lr": self.plots["lr"].plot(pen=pg.mkPen((200, 120, 30), width=2)),
            "positive_pair_similarity": self.plots["health"].plot(
                name="positive-pair cosine", pen=pg.mkPen((40, 160, 80), width=2)),
            "embedding_std": self.plots["health"].plot(
                name="embedding spread", pen=pg.mkPen((160, 60, 160), width=2)),
            "pairs_per_s": self.plots["speed"].plot(pen=pg.mkPen((90, 90, 90), width=2)),
            "knn": self.plots["knn"].plot(pen=pg.mkPen((200, 90, 40), width=2), symbol="o",
                                          symbolSize=6, symbolBrush=(200, 90, 40)),
        }
        self.plots["knn"].setToolTip(
            "Weighted kNN top-1 accuracy (k=20) of the frozen features on a fixed held-out "
            "split, measured at the end of each epoch; it needs class sub-folders.")
        self.no_labels = pg.TextItem("no labels: kNN accuracy needs class sub-folders",
                                     anchor=(0.5, 0.5), color=(130, 130, 130))
        self.no_labels.setPos(0.5, 0.5)  # the middle of an empty plot's default range
        self.plots["knn"].addItem(self.no_labels, ignoreBounds=True)
        self.no_labels.hide()
        self.collapse_line = pg.InfiniteLine(COLLAPSE_STD, angle=0, movable=False,
                                             pen=pg.mkPen((200, 60, 60), style=Qt.DashLine))
        self.plots["health"].addItem(self.collapse_line)
        self._overlays: list[tuple[pg.PlotWidget, pg.PlotDataItem]] = []
        self._timer = QTimer(self)
        self._timer.setInterval(1000 // REDRAW_HZ)
        self._timer.timeout.connect(self.redraw)
        self._timer.start()

    def show_history(self, history: RunHistory) -> None:
        self.history = history
        self.mark_dirty()
        self.redraw_all()

    def mark_dirty(self) -> None:
        """New events were folded into the history: redraw the plots over the next ticks."""
        self._dirty = set(PLOT_CURVES)

    def redraw_all(self) -> None:
        """Bring every plot up to date now (tests, screenshots, a newly shown history)."""
        while self._dirty and self.history is not None:
            self.redraw()

    def collapsing(self) -> bool:
        """Whether the latest embedding spread is below the collapse threshold."""
        if not self.history or not self.history.steps:
            return False
        value = self.history.curves["embedding_std"][-1]
        return bool(np.isfinite(value) and value < COLLAPSE_STD)

    def redraw(self) -> None:
        """Redraw the next plot whose data changed (one per tick, in turn)."""
        if not self._dirty or self.history is None:
            return
        plot = next(p for p in PLOT_CURVES if p in self._dirty)
        self._dirty.discard(plot)
        h = self.history
        if plot == "knn":
            self.no_labels.setVisible(h.has_labels is False)
            if h.knn:
                steps, top1 = zip(*h.knn)
                self.curves["knn"].setData(np.asarray(steps, dtype=np.float64),
                                           100 * np.asarray(top1))
            else:
                self.curves["knn"].setData([], [])
            return
        steps = np.asarray(h.steps, dtype=np.float64)
        for key in PLOT_CURVES[plot]:
            values = h.smoothed_loss if key == "smoothed" else h.curves[key]
            self.curves[key].setData(steps, np.asarray(values))

    def add_overlay(self, name: str, history: RunHistory) -> None:
        """Draw another run's smoothed loss (and kNN accuracy) faintly behind this one's."""
        pen = pg.mkPen((150, 150, 150), width=1, style=Qt.DashLine)
        item = self.plots["loss"].plot(np.asarray(history.steps, dtype=np.float64),
                                       np.asarray(history.smoothed_loss), name=name, pen=pen)
        self._overlays.append((self.plots["loss"], item))
        if history.knn:
            steps, top1 = zip(*history.knn)
            item = self.plots["knn"].plot(np.asarray(steps, dtype=np.float64),
                                          100 * np.asarray(top1), name=name, pen=pen)
            self._overlays.append((self.plots["knn"], item))

    def clear_overlays(self) -> None:
        for plot, item in self._overlays:
            plot.removeItem(item)
        self._overlays.clear()
