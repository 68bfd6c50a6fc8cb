"""The embeddings map: a 2-D scatter of a run's images (UMAP or PCA), coloured by class.

:class:`MapView` draws an :class:`app.model.explore_data.MapData` with pyqtgraph, reports
hovered, clicked and box-selected points by image index, and saves the map as PNG or CSV.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPen
from PySide6.QtWidgets import (
    QFileDialog,
    QGraphicsRectItem,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from app.model.explore_data import MapData

#: Class colours (a qualitative palette that stays readable on light and dark backgrounds);
#: beyond ten classes the hues are spread evenly.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")
UNLABELLED = "#9a9a9a"
POINT_SIZE = 8
#: How many of a query's neighbours carry their rank as a number on the map.
NUMBERED_NEIGHBOURS = 20


def mark_colours() -> tuple[QColor, QColor]:
    """(outline, halo) of the selection marks: the full contrast to the plot's background
    (black on a light theme, white on a dark one), unlike every class colour, and a ring of
    the background around it so the outline stays visible over points of any colour."""
    background = pg.mkColor(pg.getConfigOption("background"))
    outline = QColor("#000000" if background.lightnessF() >= 0.5 else "#ffffff")
    return outline, background


def class_colour(label: int, n_classes: int) -> QColor:
    """The colour of class ``label`` (grey for -1, no label)."""
    if label < 0:
        return QColor(UNLABELLED)
    if n_classes <= len(PALETTE):
        return QColor(PALETTE[label])
    return pg.intColor(label, hues=n_classes)


class MapViewBox(pg.ViewBox):
    """A ViewBox whose left-drag selects a rectangle (with Shift held, or always in select
    mode) instead of panning.

    Signals:
        box_selected(object): the selected rectangle (QRectF, data coordinates).
    """

    box_selected = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.select_mode = False
        self._band = QGraphicsRectItem()
        outline, _halo = mark_colours()
        pen = QPen(outline)
        pen.setCosmetic(True)
        pen.setStyle(Qt.DashLine)
        self._band.setPen(pen)
        fill = QColor(outline)
        fill.setAlpha(30)
        self._band.setBrush(fill)
        self._band.hide()
        self.addItem(self._band, ignoreBounds=True)

    def mouseDragEvent(self, ev, axis=None) -> None:
        selecting = self.select_mode or bool(ev.modifiers() & Qt.ShiftModifier)
        if ev.button() != Qt.LeftButton or not selecting:
            super().mouseDragEvent(ev, axis)
            return
        ev.accept()
        rect = QRectF(self.mapToView(ev.buttonDownPos()), self.mapToView(ev.pos())).normalized()
        if ev.isFinish():
            self._band.hide()
            self.box_selected.emit(rect)
        else:
            self._band.setRect(rect)
            self._band.show()


class MapView(QWidget):
    """The scatter of a :class:`MapData`: one colour per class with a legend (grey without
    labels); zoom with the wheel, pan by dragging, Shift+drag (or "Box select") selects.

    Signals:
        point_hovered(int): the image index under the mouse, -1 when it leaves the points.
        point_clicked(int): a point was clicked (its image index).
        box_selected(object): image indices (int64 array) inside a selected rectangle.
        exported(str): the map was saved (PNG or CSV) to this path.
        export_failed(str): saving the map failed; the message says why and what to do.
    """

    point_hovered = Signal(int)
    point_clicked = Signal(int)
    box_selected = Signal(object)
    exported = Signal(str)
    export_failed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.data: MapData | None = None
        #: Where the export buttons propose to save (a run's maps/ folder), or None.
        self.export_folder: Path | None = None
        self._hovered = -1
        self.view_box = MapViewBox()
        self.view_box.box_selected.connect(self._on_box)
        self.plot = pg.PlotWidget(viewBox=self.view_box)
        self.plot.setToolTip("Wheel: zoom. Drag: pan. Click a point: its neighbours. "
                             "Shift+drag (or Box select): the images inside a rectangle.")
        self.plot.hideAxis("left")
        self.plot.hideAxis("bottom")
        self.plot.setAspectLocked(True)  # distances on the map mean the same both ways
        self.legend = self.plot.addLegend(offset=(10, 10))
        self.scatter = pg.ScatterPlotItem(size=POINT_SIZE, pen=None, hoverable=True,
                                          hoverSize=POINT_SIZE + 6, tip=None)
        self.scatter.sigClicked.connect(self._on_clicked)
        self.scatter.sigHovered.connect(self._on_hovered)
        self.plot.addItem(self.scatter)
        outline, halo = mark_colours()
        #: the selection's marks, drawn in this order (later on top): box-selected points
        #: (squares), the query's neighbours (rings, numbered by rank), the query (enlarged,
        #: in its class colour, inside a thick outline with a halo)
        self.box_marks = pg.ScatterPlotItem(size=POINT_SIZE + 4, symbol="s",
                                            pen=pg.mkPen(outline, width=1.5), brush=None)
        self.neighbour_marks = pg.ScatterPlotItem(size=POINT_SIZE + 6,
                                                  pen=pg.mkPen(outline, width=2), brush=None)
        self.selected_halo = pg.ScatterPlotItem(size=POINT_SIZE + 16,
                                                pen=pg.mkPen(halo, width=6), brush=None)
        self.selected_mark = pg.ScatterPlotItem(size=POINT_SIZE + 10,
                                                pen=pg.mkPen(outline, width=3))
        for item in (self.box_marks, self.neighbour_marks, self.selected_halo,
                     self.selected_mark):
            self.plot.addItem(item, ignoreBounds=True)
        self.neighbour_numbers: list[pg.TextItem] = []
        #: image indices of the marked neighbours, nearest first
        self.neighbours: list[int] = []

        self.caption = QLabel("No map yet.")
        # a long caption wraps beside the buttons instead of widening the map's column
        self.caption.setWordWrap(True)
        self.caption.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.select_button = QPushButton("Box select")
        self.select_button.setCheckable(True)
        self.select_button.setToolTip("When on, dragging selects the images inside a "
                                      "rectangle instead of panning (Shift+drag always "
                                      "selects).")
        self.select_button.toggled.connect(self._on_select_mode)
        self.fit_button = QPushButton("Fit")
        self.fit_button.setToolTip("Zoom out to show every point.")
        self.fit_button.clicked.connect(lambda: self.plot.autoRange())
        self.png_button = QPushButton("Export PNG…")
        self.png_button.setToolTip("Save the map as a PNG image.")
        self.png_button.clicked.connect(lambda: self._export("PNG image (*.png)", ".png",
                                                             self.export_png))
        self.csv_button = QPushButton("Export CSV…")
        self.csv_button.setToolTip("Save the map's coordinates as CSV: path, label, class, x, y.")
        self.csv_button.clicked.connect(lambda: self._export("CSV file (*.csv)", ".csv",
                                                             self.export_csv))
        top = QHBoxLayout()
        top.addWidget(self.caption, 1)
        for button in (self.select_button, self.fit_button, self.png_button, self.csv_button):
            top.addWidget(button)
        self.toolbar = top
        self._update_export_buttons()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.plot, 1)

    def set_map(self, data: MapData) -> None:
        """Draw ``data``, replacing the current map; the view fits the new points."""
        self.data = data
        n_classes = len(data.classes)
        colours = {int(label): class_colour(int(label), n_classes)
                   for label in np.unique(data.labels)}
        brushes = {label: pg.mkBrush(colour) for label, colour in colours.items()}
        self.scatter.setData(pos=data.coords, data=np.arange(len(data)),
                             brush=[brushes[int(label)] for label in data.labels])
        self.legend.clear()
        if data.has_labels:
            for label, name in enumerate(data.classes):
                sample = pg.ScatterPlotItem(size=10, pen=None,
                                            brush=pg.mkBrush(class_colour(label, n_classes)))
                self.legend.addItem(sample, name)
            if (data.labels < 0).any():
                self.legend.addItem(pg.ScatterPlotItem(size=10, pen=None,
                                                       brush=pg.mkBrush(UNLABELLED)), "no label")
        self.set_selected(None)
        self.set_neighbours([])
        self.set_box_selection(np.zeros(0, np.int64))
        self.caption.setText(data.describe() + ("" if data.has_labels else
                                                "; no labels, so no colours"))
        self.caption.setToolTip(self.caption.text())
        self.plot.autoRange()
        self._update_export_buttons()

    def clear(self, message: str) -> None:
        self.data = None
        self.scatter.clear()
        self.legend.clear()
        self.set_selected(None)
        self.set_neighbours([])
        self.set_box_selection(np.zeros(0, np.int64))
        self.caption.setText(message)
        self.caption.setToolTip(message)
        self._update_export_buttons()

    def point_brush(self, i: int) -> QColor:
        """The fill colour of point ``i`` as drawn."""
        return self.scatter.data["brush"][i].color()

    def set_selected(self, index: int | None) -> None:
        """Mark the point of image ``index``, the query (None: no mark): drawn larger, in
        its class colour, inside a thick outline."""
        if index is None or self.data is None or not 0 <= index < len(self.data):
            self.selected_mark.clear()
            self.selected_halo.clear()
        else:
            pos = self.data.coords[index:index + 1]
            self.selected_halo.setData(pos=pos)
            self.selected_mark.setData(pos=pos, brush=[self.scatter.data["brush"][index]])

    def set_neighbours(self, indices: list[int]) -> None:
        """Ring the points of images ``indices`` (a query's neighbours, nearest first) and
        number the first :data:`NUMBERED_NEIGHBOURS` by rank; replaces the last ones."""
        for text in self.neighbour_numbers:
            self.plot.removeItem(text)
        self.neighbour_numbers = []
        data = self.data
        self.neighbours = [int(i) for i in indices
                           if data is not None and 0 <= int(i) < len(data)]
        if not self.neighbours:
            self.neighbour_marks.clear()
            return
        assert data is not None
        coords = data.coords[self.neighbours]
        self.neighbour_marks.setData(pos=coords)
        outline, _halo = mark_colours()
        for rank, (x, y) in enumerate(coords[:NUMBERED_NEIGHBOURS].tolist(), 1):
            text = pg.TextItem(str(rank), color=outline, anchor=(-0.15, 1.0))
            text.setPos(x, y)
            self.plot.addItem(text, ignoreBounds=True)
            self.neighbour_numbers.append(text)

    def set_box_selection(self, indices: np.ndarray) -> None:
        if self.data is None or len(indices) == 0:
            self.box_marks.clear()
        else:
            self.box_marks.setData(pos=self.data.coords[indices])

    def mark_neighbours_of(self, result: dict | None) -> None:
        """Mark the neighbours of a neighbours result (as engine.evaluate.explore.neighbours
        gives it) when they are of this map's embeddings; otherwise none."""
        data = self.data
        same = (result is not None and data is not None
                and (result["checkpoint"], result["space"]) == (data.checkpoint, data.space))
        self.set_neighbours([n["index"] for n in result["neighbours"]] if same else [])

    def points_in(self, rect: QRectF) -> np.ndarray:
        """Image indices of the points inside ``rect`` (data coordinates)."""
        if self.data is None:
            return np.zeros(0, np.int64)
        x, y = self.data.coords[:, 0], self.data.coords[:, 1]
        inside = ((x >= rect.left()) & (x <= rect.right())
                  & (y >= rect.top()) & (y <= rect.bottom()))
        return np.flatnonzero(inside)

    def export_png(self, path: Path, width: int = 1600) -> None:
        """Save the plot (points, legend) as a PNG ``width`` pixels wide."""
        from pyqtgraph.exporters import ImageExporter

        exporter = ImageExporter(self.plot.plotItem)
        exporter.parameters()["width"] = width
        Path(path).unlink(missing_ok=True)
        exporter.export(str(path))
        if not Path(path).is_file():
            raise OSError(f"the image could not be written to {path}")

    def export_csv(self, path: Path) -> None:
        """Save the map's coordinates as CSV: path, label, class, x, y."""
        if self.data is None:
            raise ValueError("there is no map to export yet: compute one first")
        self.data.write_csv(Path(path))

    def _export(self, filter_: str, suffix: str, write: Callable[[Path], None]) -> None:
        data = self.data
        if data is None:
            return
        name = f"map-{data.checkpoint}-{data.space}-{data.method}"
        default = self.export_folder / name if self.export_folder is not None else Path(name)
        path, _ = QFileDialog.getSaveFileName(self, "Export the map", str(default) + suffix,
                                              filter_)
        if not path:
            return
        try:
            write(Path(path))
        except (OSError, ValueError) as exc:
            self.export_failed.emit(f"The map could not be saved to {path}: {exc}. Choose "
                                    "another folder.")
        else:
            self.exported.emit(path)

    def _update_export_buttons(self) -> None:
        self.png_button.setEnabled(self.data is not None)
        self.csv_button.setEnabled(self.data is not None)

    # --- handlers --------------------------------------------------------------------------

    def _on_clicked(self, _item, points, _ev) -> None:
        if len(points):
            self.point_clicked.emit(int(points[0].data()))

    def _on_hovered(self, _item, points, _ev) -> None:
        index = int(points[0].data()) if len(points) else -1
        if index != self._hovered:
            self._hovered = index
            self.point_hovered.emit(index)

    def leaveEvent(self, event) -> None:
        if self._hovered != -1:
            self._hovered = -1
            self.point_hovered.emit(-1)
        super().leaveEvent(event)

    def _on_box(self, rect: QRectF) -> None:
        indices = self.points_in(rect)
        self.set_box_selection(indices)
        self.box_selected.emit(indices)

    def _on_select_mode(self, on: bool) -> None:
        self.view_box.select_mode = on
