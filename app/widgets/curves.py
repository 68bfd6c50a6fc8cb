"""Live training curves: loss (raw and smoothed), learning rate, positive-pair similarity
with the embedding spread, kNN accuracy per epoch (with labels), and throughput (raw, faint,
and smoothed as the loss is; the title gives the smoothed rate).

Each plot's title names its curves in their colours (a key that covers no data, unlike a
legend); the points carry symbols while there are few of them, so the first logged steps
show; the throughput axis starts at zero and the others keep a minimum span, so noise of a
few percent does not look like a swing.

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
from engine.methods.base import COLLAPSE_SPREAD

REDRAW_HZ = 15
COLLAPSE_STD = COLLAPSE_SPREAD  # embedding_std below this: the embeddings are collapsing
#: Up to this many points a curve draws a symbol at each (one point alone is visible).
SYMBOLS_UP_TO = 40
#: The smallest span of the kNN plot's y axis (in %).
MIN_SPAN = {"knn": 10.0}
NO_LABELS = "no labels: kNN accuracy\nneeds class sub-folders"
NO_KNN_YET = "kNN accuracy: measured\nat the end of each epoch"
#: Colours of the curves, also used in the plot titles as their key.
COLOURS = {"loss": (120, 160, 220), "smoothed": (30, 90, 200), "lr": (200, 120, 30),
           "positive_pair_similarity": (40, 160, 80), "embedding_std": (160, 60, 160),
           "pairs_per_s": (205, 205, 205), "smoothed_rate": (60, 60, 60),
           "knn": (200, 90, 40)}
#: Raw curves drawn thin and without symbols, behind their smoothed curve.
RAW_CURVES = ("loss", "pairs_per_s")
TITLE_SIZE = "10pt"
#: The curves of each plot, in the order the plots are redrawn.
PLOT_CURVES = {"loss": ("loss", "smoothed"), "lr": ("lr",),
               "health": ("positive_pair_similarity", "embedding_std"),
               "speed": ("pairs_per_s", "smoothed_rate"), "knn": ("knn",)}
#: The smoothed curves and the RunHistory lists they are drawn from.
SMOOTHED = {"smoothed": "smoothed_loss", "smoothed_rate": "smoothed_rate"}


class TrainingCurves(QWidget):
    """Four plots of one run, with optional overlays of earlier runs for comparison."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.history: RunHistory | None = None
        self._dirty: set[str] = set()
        self._overlay_names: list[str] = []
        #: The smoothed pairs per second in the speed plot's title (rounded), or None.
        self._rate_shown: int | None = None
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.plots: dict[str, pg.PlotWidget] = {}
        for key, row, column in [("loss", 0, 0), ("lr", 0, 1), ("health", 1, 0),
                                 ("knn", 1, 1), ("speed", 0, 2)]:
            plot = pg.PlotWidget()
            plot.setLabel("bottom", "step")
            plot.showGrid(x=True, y=True, alpha=0.2)
            plot.setDownsampling(auto=True, mode="peak")
            plot.setClipToView(True)
            plot.setMinimumSize(160, 140)
            # Room right of the x axis for half of its last tick label.
            plot.getPlotItem().layout.setContentsMargins(2, 2, 12, 2)
            layout.addWidget(plot, row, column)
            self.plots[key] = plot
        for column in range(3):
            layout.setColumnStretch(column, 1)
        # Five plots: the speed plot spans the right column.
        layout.removeWidget(self.plots["speed"])
        layout.addWidget(self.plots["speed"], 0, 2, 2, 1)
        self.curves = {
            "loss": self._curve("loss", "loss", width=1),
            "smoothed": self._curve("loss", "smoothed"),
            "lr": self._curve("lr", "lr"),
            "positive_pair_similarity": self._curve("health", "positive_pair_similarity"),
            "embedding_std": self._curve("health", "embedding_std"),
            "pairs_per_s": self._curve("speed", "pairs_per_s", width=1),
            "smoothed_rate": self._curve("speed", "smoothed_rate"),
            "knn": self._curve("knn", "knn"),
        }
        self.curves["knn"].setSymbol("o")  # one point per evaluation: always marked
        self.curves["knn"].setSymbolSize(6)
        self._set_titles()
        self.plots["knn"].setToolTip(
            "Weighted kNN top-1 accuracy (k=20) of the frozen features on a fixed held-out "
            "split, measured at the end of each epoch; it needs class sub-folders.")
        self.plots["health"].setToolTip(
            "Positive-pair cosine: how alike the two views' projections are. Spread: the "
            "per-dimension spread of the projections, about 1 when they use the whole "
            f"space; below the dashed line ({COLLAPSE_STD}) every image is being mapped to "
            "nearly the same point (collapse).")
        self.plots["speed"].setToolTip("Image pairs trained per second, not counting the "
                                       "checkpoints and the kNN evaluations: each logged "
                                       "step (light grey) and smoothed (dark grey; the "
                                       "title's figure).")
        self.no_labels = pg.TextItem(NO_LABELS, anchor=(0.5, 0.5), color=(130, 130, 130))
        self.no_labels.setPos(0.5, 0.5)  # the middle of an empty plot's default range
        self.plots["knn"].addItem(self.no_labels, ignoreBounds=True)
        self.no_labels.hide()
        self.collapse_line = pg.InfiniteLine(
            COLLAPSE_STD, angle=0, movable=False,
            pen=pg.mkPen((200, 60, 60), style=Qt.DashLine),
            label=f"collapse below {COLLAPSE_STD}",
            labelOpts={"position": 0.98, "anchors": [(1, 1), (1, 1)],
                       "color": (200, 60, 60)})
        self.plots["health"].addItem(self.collapse_line)
        self._overlays: list[tuple[pg.PlotWidget, pg.PlotDataItem]] = []
        self._timer = QTimer(self)
        self._timer.setInterval(1000 // REDRAW_HZ)
        self._timer.timeout.connect(self.redraw)
        self._timer.start()

    def _curve(self, plot: str, key: str, width: int = 2) -> pg.PlotDataItem:
        colour = COLOURS[key]
        return self.plots[plot].plot(pen=pg.mkPen(colour, width=width), symbolBrush=colour,
                                     symbolPen=colour)

    def _set_titles(self) -> None:
        """Each plot's title, naming its curves in their colours (and the overlays), and
        the latest smoothed rate in the speed plot's."""
        def key(name: str, text: str) -> str:
            r, g, b = COLOURS[name]
            return f"<span style='color:#{r:02x}{g:02x}{b:02x}'>{text}</span>"

        earlier = (" <span style='color:#969696'>- - earlier</span>"
                   if self._overlay_names else "")
        titles = {"loss": f"Loss: {key('loss', 'raw')}, {key('smoothed', 'smoothed')}"
                          + earlier,
                  "lr": "Learning rate",
                  "health": f"{key('positive_pair_similarity', 'Pair cosine')}, "
                            f"{key('embedding_std', 'spread')}",
                  "knn": "kNN accuracy (%)" + earlier,
                  "speed": "Pairs per second" + (
                      f": {key('smoothed_rate', format(self._rate_shown, ','))}"
                      if self._rate_shown is not None else "")}
        for name, title in titles.items():
            self.plots[name].setTitle(title, size=TITLE_SIZE)

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
            # Without points: why (no labels), or when the first one comes.
            self.no_labels.setText(NO_LABELS if h.has_labels is False else NO_KNN_YET)
            self.no_labels.setVisible(h.has_labels is False or not h.knn)
            if h.knn:
                steps, top1 = zip(*h.knn)
                values = 100 * np.asarray(top1)
                self.curves["knn"].setData(np.asarray(steps, dtype=np.float64), values)
                self._keep_span("knn", values, low=0.0, high=100.0)
            else:
                self.curves["knn"].setData([], [])
            return
        steps = np.asarray(h.steps, dtype=np.float64)
        few = len(steps) <= SYMBOLS_UP_TO
        drawn = []
        for key in PLOT_CURVES[plot]:
            values = np.asarray(getattr(h, SMOOTHED[key]) if key in SMOOTHED
                                else h.curves[key], dtype=np.float64)
            curve = self.curves[key]
            curve.setSymbol("o" if few and key not in RAW_CURVES else None)
            curve.setSymbolSize(5)
            curve.setData(steps, values)
            drawn.append(values)
        if plot == "speed":
            self._rate_range(drawn[0], drawn[1])
            self._show_rate(drawn[1][-1] if len(drawn[1]) else None)
        elif plot == "health":
            self._health_range(np.concatenate(drawn))

    def _health_range(self, values: np.ndarray) -> None:
        """Cosine and spread from 0 (where the collapse line is) to at least 1."""
        finite = values[np.isfinite(values)]
        low = min(0.0, float(finite.min())) if finite.size else 0.0
        high = max(1.0, float(finite.max())) if finite.size else 1.0
        self.plots["health"].setYRange(low, high, padding=0.04)

    def _rate_range(self, rates: np.ndarray, smoothed: np.ndarray) -> None:
        """Pairs per second from zero, so a few percent of noise reads as noise; the top
        follows the smoothed rate and most raw points (a rare spike goes off the top)."""
        raw = rates[np.isfinite(rates)]
        finite = smoothed[np.isfinite(smoothed)]
        top = max(float(finite.max()) if finite.size else 0.0,
                  float(np.percentile(raw, 90)) if raw.size else 0.0)
        self.plots["speed"].setYRange(0.0, max(top, 1.0) * 1.15, padding=0)

    def _show_rate(self, rate: float | None) -> None:
        """The smoothed rate in the speed plot's title (set again only when it changes)."""
        shown = None if rate is None or not np.isfinite(rate) else round(rate)
        if shown != self._rate_shown:
            self._rate_shown = shown
            self._set_titles()

    def _keep_span(self, plot: str, values: np.ndarray, *, low: float | None = None,
                   high: float | None = None) -> None:
        """Autoscale, but to at least MIN_SPAN[plot] around the data (within low..high)."""
        finite = values[np.isfinite(values)]
        view = self.plots[plot]
        if not finite.size:
            view.enableAutoRange(axis="y")
            return
        lo, hi = float(finite.min()), float(finite.max())
        span = MIN_SPAN[plot]
        if hi - lo >= span:
            view.enableAutoRange(axis="y")
            return
        middle = (lo + hi) / 2
        lo, hi = middle - span / 2, middle + span / 2
        if low is not None and lo < low:
            lo, hi = low, low + span
        if high is not None and hi > high:
            lo, hi = high - span, high
        view.setYRange(lo, hi, padding=0.05)

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
        self._overlay_names.append(name)
        self._set_titles()
        self.plots["loss"].setToolTip("Dashed grey: " + ", ".join(self._overlay_names))

    def clear_overlays(self) -> None:
        for plot, item in self._overlays:
            plot.removeItem(item)
        self._overlays.clear()
        self._overlay_names.clear()
        self._set_titles()
        self.plots["loss"].setToolTip("")
