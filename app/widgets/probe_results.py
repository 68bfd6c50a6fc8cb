"""The Probe page's results: a table of every saved evaluation, and the per-class accuracy
and confusion matrix of the one selected."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.model.probe_records import ProbeRecord, RunOrigin, percent
from app.style import set_role

COLUMNS = ("evaluation", "checkpoint", "space", "labels", "top-1", "top-5", "majority",
           "train / test", "saved")
#: Colour of the bars and of their values.
BAR_COLOUR = (70, 130, 200)
#: Above this many classes the confusion matrix is drawn without a count in each cell.
MAX_ANNOTATED_CLASSES = 20


class RunOriginNote(QWidget):
    """Beside the results: the weights the run started from ("init: imagenet"), and, when
    its method read the labels while training, that its accuracy is not self-supervised."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.init_label = QLabel()
        self.init_label.setWordWrap(True)
        self.labels_label = QLabel()
        self.labels_label.setWordWrap(True)
        set_role(self.labels_label, "error")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.init_label)
        layout.addWidget(self.labels_label)
        self.show_origin(None)

    def show_origin(self, origin: RunOrigin | None) -> None:
        self.init_label.setText(origin.describe() if origin is not None else "")
        self.init_label.setVisible(origin is not None)
        warning = origin.labels_warning() if origin is not None else ""
        self.labels_label.setText(warning)
        self.labels_label.setVisible(bool(warning))


class ProbeTable(QTableWidget):
    """One row per saved evaluation, in the order given (newest first).

    Signals:
        record_selected(object): the ProbeRecord of the selected row, or None.
    """

    record_selected = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(COLUMNS), parent)
        self.records: list[ProbeRecord] = []
        self.setHorizontalHeaderLabels(COLUMNS)
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setSelectionMode(QAbstractItemView.SingleSelection)
        self.verticalHeader().hide()
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)
        self.setToolTip("Every evaluation saved in this run's probes/ folder, newest first, "
                        "then the kNN accuracy measured during training (first, best and "
                        "last epoch). Select one to see its per-class accuracy and confusion "
                        "matrix. 'majority': the share of the largest class in the test "
                        "split, what always answering that class would score.")
        self.itemSelectionChanged.connect(self._on_selection)

    def show_records(self, records: list[ProbeRecord]) -> None:
        self.records = list(records)
        self.setRowCount(0)
        for record in self.records:
            r = record.result
            row = self.rowCount()
            self.insertRow(row)
            fraction = "" if record.kind != "linear probe" else percent(record.label_fraction)
            split = f"{r.get('train', '?')} / {r.get('test', '?')}"
            if record.from_training:
                split = f"{r.get('test', '?')} held out"
            values = (record.kind, record.checkpoint, str(r.get("space", "h")), fraction,
                      percent(r.get("top1")), percent(r.get("top5")),
                      percent(r.get("majority")), split, record.saved_at())
            tip = ("measured by the engine during training (events.jsonl)"
                   if record.from_training else str(record.path))
            for column, text in enumerate(values):
                item = QTableWidgetItem(text)
                item.setToolTip(tip)
                self.setItem(row, column, item)

    def _on_selection(self) -> None:
        rows = self.selectionModel().selectedRows()
        self.record_selected.emit(self.records[rows[0].row()] if rows else None)


class ProbeDetails(QWidget):
    """A note on one evaluation, its accuracy per class (bars with their values, and the
    majority-class share as a dashed line) and its confusion matrix (a heatmap, rows true
    and columns predicted, with counts up to MAX_ANNOTATED_CLASSES classes). Without a
    result the plots hide their axes and say why they are empty."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.per_class_plot = pg.PlotWidget(title="Accuracy per class")
        self.per_class_plot.setLabel("left", "top-1 %")
        self.per_class_plot.setMouseEnabled(x=False, y=False)
        self.confusion_plot = pg.PlotWidget(title="Confusion: rows true, columns predicted")
        self.confusion_plot.setAspectLocked(True)
        self.confusion_plot.invertY(True)
        self.confusion_plot.setMouseEnabled(x=False, y=False)
        self.confusion_image = pg.ImageItem(axisOrder="row-major")
        self.confusion_image.setColorMap(pg.colormap.get("viridis"))
        self.confusion_plot.addItem(self.confusion_image)
        self._cell_texts: list[pg.TextItem] = []
        self.bar_texts: list[pg.TextItem] = []
        self.empty_texts = {}
        for plot in (self.per_class_plot, self.confusion_plot):
            text = pg.TextItem("", anchor=(0.5, 0.5), color=(130, 130, 130))
            plot.addItem(text, ignoreBounds=True)
            self.empty_texts[plot] = text
        self.note = QLabel()
        self.note.setWordWrap(True)
        plots = QSplitter()
        plots.addWidget(self.per_class_plot)
        plots.addWidget(self.confusion_plot)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.note)
        layout.addWidget(plots, 1)
        self.show_record(None)

    def _set_empty(self, why: str) -> None:
        """Hide the axes and say ``why`` in the middle of each plot ("": show the axes)."""
        for plot, text in self.empty_texts.items():
            for axis in ("left", "bottom"):
                plot.showAxis(axis, not why)
            text.setText(why)
            text.setVisible(bool(why))
            if why:
                plot.getPlotItem().getViewBox().setRange(xRange=(0, 1), yRange=(0, 1),
                                                         padding=0)
                text.setPos(0.5, 0.5)

    def show_record(self, record: ProbeRecord | None) -> None:
        for item in self.per_class_plot.getPlotItem().items[:]:
            if item not in self.empty_texts.values():
                self.per_class_plot.removeItem(item)
        for item in self._cell_texts:
            self.confusion_plot.removeItem(item)
        self._cell_texts = []
        self.bar_texts = []
        self.confusion_image.clear()
        if record is None:
            self.note.setText("")
            self._set_empty("No result yet: run kNN + linear probe")
            return
        r = record.result
        per_class = r.get("per_class")
        confusion = r.get("confusion")
        if not per_class or confusion is None:
            where = ("measured during training" if record.from_training
                     else f"({record.checkpoint})")
            self.note.setText(f"{record.kind} {where}: top-1 {percent(r.get('top1'))}. "
                              "Per-class accuracy and the confusion matrix come with the "
                              "linear probe.")
            self._set_empty("Per class: select a linear-probe row")
            return
        self._set_empty("")
        names = list(per_class)
        majority = r.get("majority")
        floor = (f"; always answering the largest class would score {percent(majority)}"
                 if isinstance(majority, (int, float)) else "")
        self.note.setText(
            f"{record.kind} ({record.checkpoint}, {r.get('space', 'h')}, "
            f"{percent(record.label_fraction)} of the labels): top-1 {percent(r.get('top1'))} "
            f"on {r.get('test')} held-out images{floor}")
        values = [100 * v if v is not None else 0.0 for v in per_class.values()]
        bars = pg.BarGraphItem(x=np.arange(len(names)), height=values, width=0.7,
                               brush=pg.mkBrush(*BAR_COLOUR))
        self.per_class_plot.addItem(bars)
        for i, (value, raw) in enumerate(zip(values, per_class.values(), strict=True)):
            text = pg.TextItem("n/a" if raw is None else f"{value:.1f}%", anchor=(0.5, 1.0),
                               color=(40, 40, 40))
            text.setPos(i, value)
            self.per_class_plot.addItem(text)
            self.bar_texts.append(text)
        if isinstance(majority, (int, float)):
            line = pg.InfiniteLine(
                100 * majority, angle=0, movable=False,
                pen=pg.mkPen((200, 60, 60), style=Qt.DashLine),
                label=f"majority class {percent(majority)}",
                labelOpts={"position": 0.02, "anchors": [(0, 1), (0, 1)],
                           "color": (200, 60, 60), "fill": (255, 255, 255, 210)})
            self.per_class_plot.addItem(line)
        ticks = [list(enumerate(names))]
        self.per_class_plot.getAxis("bottom").setTicks(ticks)
        self.per_class_plot.setXRange(-0.6, len(names) - 0.4, padding=0)
        self.per_class_plot.setYRange(0, 110, padding=0)  # room for the values on top
        matrix = np.asarray(confusion, dtype=np.float64)
        self.confusion_image.setImage(matrix, levels=(0, max(1.0, matrix.max())))
        self.confusion_image.setRect(-0.5, -0.5, len(names), len(names))
        for axis in ("bottom", "left"):
            self.confusion_plot.getAxis(axis).setTicks(ticks)
        if len(names) <= MAX_ANNOTATED_CLASSES:
            top = matrix.max()
            for i in range(len(names)):
                for j in range(len(names)):
                    colour = (0, 0, 0) if matrix[i, j] > 0.6 * top else (255, 255, 255)
                    text = pg.TextItem(f"{int(matrix[i, j])}", color=colour, anchor=(0.5, 0.5))
                    text.setPos(j, i)
                    self.confusion_plot.addItem(text)
                    self._cell_texts.append(text)
        self.confusion_plot.autoRange()

    def confusion_shown(self) -> np.ndarray | None:
        """The matrix drawn in the heatmap (rows: true class), or None."""
        image = self.confusion_image.image
        return None if image is None else np.asarray(image)
