"""The embeddings map: a 2-D scatter of a run's images (UMAP or PCA), coloured by class or
by any :class:`app.widgets.map_colours.Colouring` (tag, sub-folder, a score).

:class:`MapView` draws an :class:`app.model.explore_data.MapData` with pyqtgraph, reports
hovered and clicked points by image index, selects images with a box or a free-hand lasso
(replacing, adding to, removing from or intersecting a :class:`app.model.selection.Selection`),
shows a selection of any size by dimming the rest, and saves the map as PNG or CSV. Its
graphics items (:mod:`app.widgets.map_items`) keep it responsive at 100,000 points.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QButtonGroup,
    QFileDialog,
    QGraphicsItem,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from app.model.explore_data import MapData
from app.model.map_regions import points_in_polygon, points_in_rect
from app.model.selection import REPLACE, Selection
from app.widgets.map_colours import (  # noqa: F401 (the class palette, importable from here too)
    PALETTE,
    UNLABELLED,
    Colouring,
    by_class,
    class_colour,
)
from app.widgets.map_items import (
    BOX,
    LASSO,
    PAN,
    POINT_SIZE,
    TOOLS,
    MapScatter,
    MapViewBox,
    mark_colours,
)

#: How many of a query's neighbours carry their rank as a number on the map.
NUMBERED_NEIGHBOURS = 20
#: The opacity (0-255) of the points outside a selection while there is one.
DIM_ALPHA = 40
#: Selections up to this size are also outlined point by point (a few selected points
#: among 100,000 dimmed ones are easy to miss); larger ones are shown by the dimming alone.
MAX_OUTLINED = 64


def drawn_copy(colouring: Colouring) -> Colouring:
    """A copy of ``colouring`` that later changes to its arrays do not reach."""
    return dataclasses.replace(
        colouring, names=list(colouring.names),
        codes=None if colouring.codes is None else colouring.codes.copy(),
        values=None if colouring.values is None else colouring.values.copy())


def same_colouring(a: Colouring, b: Colouring) -> bool:
    """Whether ``a`` and ``b`` colour every point and the legend alike."""
    def same(x: np.ndarray | None, y: np.ndarray | None) -> bool:
        if x is None or y is None:
            return x is y
        return np.array_equal(x, y, equal_nan=x.dtype.kind == "f")

    return ((a.name, a.names, a.none_name) == (b.name, b.names, b.none_name)
            and same(a.codes, b.codes) and same(a.values, b.values))


class MapView(QWidget):
    """The scatter of a :class:`MapData`, coloured by a :class:`Colouring` with a legend (by
    class at first; grey without labels); zoom with the wheel; the toolbar's tool makes a
    drag pan, select a box or draw a lasso (Shift+drag selects a box while panning). On
    release, no modifier replaces the selection, Shift adds, Ctrl removes, Shift+Ctrl
    intersects. The selection (the map's own, or a shared one given to
    :meth:`use_selection`) is shown by dimming every other point.

    Signals:
        point_hovered(int): the image index under the mouse, -1 when it leaves the points.
        point_clicked(int): a point was clicked (its image index).
        selection_made(object, str): a box or lasso was drawn: the image indices inside it
            (sorted int64 array) and how they combine with the selection (replace, add,
            remove, intersect); the map applies it to its selection itself.
        box_selected(object): the selection after a box or lasso (sorted int64 array).
        exported(str): the map was saved (PNG or CSV) to this path.
        export_failed(str): saving the map failed; the message says why and what to do.
    """

    point_hovered = Signal(int)
    point_clicked = Signal(int)
    selection_made = Signal(object, str)
    box_selected = Signal(object)
    exported = Signal(str)
    export_failed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.data: MapData | None = None
        self.colouring: Colouring | None = None
        #: a copy of the colouring the points and the legend show
        self._drawn: Colouring | None = None
        #: the images selected (a Selection; the map's own until use_selection gives one)
        self.selection = Selection(self)
        self.selection.changed.connect(self._on_selection_changed)
        self._own_selection = True
        #: the image indices shown as selected (sorted int64)
        self.selected = np.zeros(0, np.int64)
        #: Where the export buttons propose to save (a run's maps/ folder), or None.
        self.export_folder: Path | None = None
        self._hovered = -1
        self._query: int | None = None
        self._colours: list[QColor] = []
        self._colour_index = np.zeros(0, np.intp)
        self._brushes: dict[int, QBrush] = {}  # by RGBA: the same colour, the same brush
        self.view_box = MapViewBox()
        self.view_box.region_selected.connect(self._on_region)
        self.view_box.box_selected.connect(lambda rect: self._on_region(rect, REPLACE))
        self.plot = pg.PlotWidget(viewBox=self.view_box)
        self.plot.hideAxis("left")
        self.plot.hideAxis("bottom")
        self.plot.setAspectLocked(True)  # distances on the map mean the same both ways
        self.legend = self.plot.addLegend(offset=(10, 10))
        self.scatter = MapScatter()
        # hovering, a lasso or a mark repaints from this cache, not all 100,000 points
        self.scatter.setCacheMode(QGraphicsItem.DeviceCoordinateCache)
        self.scatter.sigClicked.connect(self._on_clicked)
        self.scatter.sigHovered.connect(self._on_hovered)
        self.plot.addItem(self.scatter)
        outline, halo = mark_colours()
        #: the marks, drawn in this order (later on top): the selected points (squares, up
        #: to MAX_OUTLINED of them), the hovered point (enlarged), the query's neighbours
        #: (rings, numbered by rank), the query (enlarged, in its colour, inside a thick
        #: outline with a halo)
        self.box_marks = pg.ScatterPlotItem(size=POINT_SIZE + 4, symbol="s",
                                            pen=pg.mkPen(outline, width=1.5), brush=None)
        self.hover_mark = pg.ScatterPlotItem(size=POINT_SIZE + 6, pen=None)
        self.neighbour_marks = pg.ScatterPlotItem(size=POINT_SIZE + 6,
                                                  pen=pg.mkPen(outline, width=2), brush=None)
        self.selected_halo = pg.ScatterPlotItem(size=POINT_SIZE + 16,
                                                pen=pg.mkPen(halo, width=6), brush=None)
        self.selected_mark = pg.ScatterPlotItem(size=POINT_SIZE + 10,
                                                pen=pg.mkPen(outline, width=3))
        for item in (self.box_marks, self.hover_mark, self.neighbour_marks,
                     self.selected_halo, self.selected_mark):
            item.setEnabled(False)  # clicks go through a mark to the point under it
            self.plot.addItem(item, ignoreBounds=True)
        self.neighbour_numbers: list[pg.TextItem] = []
        #: image indices of the marked neighbours, nearest first
        self.neighbours: list[int] = []

        self.caption = QLabel("No map yet.")
        # a long caption wraps beside the buttons instead of widening the map's column
        self.caption.setWordWrap(True)
        self.caption.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self._caption_base = "No map yet."
        self.tool_buttons: dict[str, QPushButton] = {}
        self._tools = QButtonGroup(self)
        self._tools.setExclusive(True)
        for tool, text, tip in (
                (PAN, "Pan", "Dragging pans the map (Shift+drag selects a rectangle)."),
                (BOX, "Box", "Dragging selects the images inside a rectangle."),
                (LASSO, "Lasso", "Dragging draws a free-hand outline; the images inside it "
                                 "are selected.")):
            button = QPushButton(text)
            button.setCheckable(True)
            button.setToolTip(tip + " On release: Shift adds to the selection, Ctrl removes "
                              "from it, Shift+Ctrl keeps only what is in both.")
            button.toggled.connect(lambda on, tool=tool: on and self.set_tool(tool))
            self._tools.addButton(button)
            self.tool_buttons[tool] = button
        self.tool_buttons[PAN].setChecked(True)
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
        for button in (*self.tool_buttons.values(), self.fit_button, self.png_button,
                       self.csv_button):
            top.addWidget(button)
        self.toolbar = top
        self._update_tooltip()
        self._update_export_buttons()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.plot, 1)

    # --- the map ---------------------------------------------------------------------------

    def set_map(self, data: MapData) -> None:
        """Draw ``data``, replacing the current map, coloured by class; the view fits the
        new points. The map's own selection is cleared; a shared one is shown as it is."""
        self.data = data
        self.colouring = by_class(data)
        self._drawn = drawn_copy(self.colouring)
        self._colours, self._colour_index = self.colouring.colours()
        if self._own_selection:
            self.selection.blockSignals(True)  # shown below, with the new points
            self.selection.clear()
            self.selection.blockSignals(False)
        self.selected = self._valid(self.selection.indices)
        self._hovered = -1
        self.hover_mark.clear()
        self.scatter.set_points(data.coords, *self._palette())
        self._update_legend()
        self._update_outlines()
        self.set_selected(None)
        self.set_neighbours([])
        self._caption_base = data.describe() + ("" if data.has_labels else
                                                "; no labels, so no colours")
        self._update_caption()
        self.plot.autoRange()
        self._update_export_buttons()

    def clear(self, message: str) -> None:
        self.data = None
        self.colouring = self._drawn = None
        self.scatter.set_points(np.zeros((0, 2), np.float32), [], np.zeros(0, np.intp))
        self.legend.clear()
        if self._own_selection:
            self.selection.blockSignals(True)
            self.selection.clear()
            self.selection.blockSignals(False)
        self.selected = np.zeros(0, np.int64)
        self._hovered = -1
        self.hover_mark.clear()
        self.box_marks.clear()
        self.set_selected(None)
        self.set_neighbours([])
        self._caption_base = message
        self._update_caption()
        self._update_export_buttons()

    def set_colouring(self, colouring: Colouring) -> None:
        """Colour the points by ``colouring`` (one code or value per image of the map); the
        legend follows. The colouring shown already (equal codes or values, names) is not
        drawn again: at 100,000 points the legend and the brushes take tens of ms."""
        if self.data is None:
            raise ValueError("there is no map to colour yet: compute one first")
        if len(colouring) != len(self.data):
            raise ValueError(f"the colouring by {colouring.name} has {len(colouring):,} "
                             f"entries but the map has {len(self.data):,} images; make it "
                             "from this map's images")
        if self._drawn is not None and same_colouring(self._drawn, colouring):
            self.colouring = colouring
            return
        self.colouring = colouring
        self._drawn = drawn_copy(colouring)
        self._colours, self._colour_index = colouring.colours()
        self.scatter.set_brushes(*self._palette())
        self._update_legend()
        self.set_selected(self._query)  # the query in its new colour

    def point_brush(self, i: int) -> QColor:
        """The fill colour of point ``i`` as drawn (dimmed outside a selection)."""
        return self.scatter.data["brush"][i].color()

    def point_colour(self, i: int) -> QColor:
        """The colour of point ``i`` in the current colouring (never dimmed)."""
        return QColor(self._colours[self._colour_index[i]])

    # --- selection -------------------------------------------------------------------------

    def set_tool(self, tool: str) -> None:
        """What a drag does: "pan", "box" or "lasso" (the toolbar's choice)."""
        if tool not in TOOLS:
            raise ValueError(f"unknown map tool {tool!r}; use one of {', '.join(TOOLS)}")
        self.view_box.tool = tool
        if not self.tool_buttons[tool].isChecked():
            self.tool_buttons[tool].setChecked(True)
        self._update_tooltip()

    @property
    def tool(self) -> str:
        return self.view_box.tool

    def use_selection(self, selection: Selection) -> None:
        """Select into the shared ``selection`` (and show it) instead of the map's own."""
        self.selection.changed.disconnect(self._on_selection_changed)
        self.selection = selection
        self._own_selection = False
        selection.changed.connect(self._on_selection_changed)
        self._on_selection_changed()

    def set_selection(self, indices: np.ndarray) -> None:
        """Show the images ``indices`` as selected: every other point dimmed, up to
        :data:`MAX_OUTLINED` of them outlined, their count in the caption (indices outside
        the map are ignored). This draws; the selection itself is :attr:`selection`."""
        selected = self._valid(indices)
        if np.array_equal(selected, self.selected):
            return
        self.selected = selected
        if self.data is not None:
            self.scatter.set_brushes(*self._palette())
        self._update_outlines()
        self._update_caption()

    #: the name this had when only boxes selected
    set_box_selection = set_selection

    def points_in(self, rect: QRectF) -> np.ndarray:
        """Image indices of the points inside ``rect`` (data coordinates)."""
        if self.data is None:
            return np.zeros(0, np.int64)
        return points_in_rect(self.data.coords, rect.left(), rect.top(), rect.right(),
                              rect.bottom())

    def points_in_polygon(self, polygon: np.ndarray) -> np.ndarray:
        """Image indices of the points inside ``polygon`` ((V, 2) data coordinates,
        even-odd rule)."""
        if self.data is None:
            return np.zeros(0, np.int64)
        return points_in_polygon(self.data.coords, polygon)

    # --- marks -----------------------------------------------------------------------------

    def set_selected(self, index: int | None) -> None:
        """Mark the point of image ``index``, the query (None: no mark): drawn larger, in
        its colour, inside a thick outline."""
        if index is None or self.data is None or not 0 <= index < len(self.data):
            self._query = None
            self.selected_mark.clear()
            self.selected_halo.clear()
        else:
            self._query = int(index)
            pos = self.data.coords[index:index + 1]
            self.selected_halo.setData(pos=pos)
            self.selected_mark.setData(pos=pos, brush=[self._brush(self.point_colour(index))])

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

    def mark_neighbours_of(self, result: dict | None) -> None:
        """Mark the neighbours of a neighbours result (as engine.evaluate.explore.neighbours
        gives it) when they are of this map's embeddings; otherwise none."""
        data = self.data
        same = (result is not None and data is not None
                and (result["checkpoint"], result["space"]) == (data.checkpoint, data.space))
        self.set_neighbours([n["index"] for n in result["neighbours"]] if same else [])

    # --- export ----------------------------------------------------------------------------

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

    # --- drawing helpers -------------------------------------------------------------------

    def _brush(self, colour: QColor) -> QBrush:
        """One QBrush per colour, reused: pyqtgraph caches a rendered symbol per brush."""
        key = colour.rgba()
        if key not in self._brushes:
            self._brushes[key] = pg.mkBrush(colour)
        return self._brushes[key]

    def _palette(self) -> tuple[list[QBrush], np.ndarray]:
        """The scatter's palette and each point's index into it: the colouring's colours,
        and while something is selected, the same dimmed for the points outside it."""
        full = [self._brush(c) for c in self._colours]
        if not len(self.selected):
            return full, self._colour_index
        dim = []
        for colour in self._colours:
            faded = QColor(colour)
            faded.setAlpha(DIM_ALPHA)
            dim.append(self._brush(faded))
        outside = np.ones(len(self._colour_index), bool)
        outside[self.selected] = False
        return full + dim, self._colour_index + outside * len(full)

    def _update_legend(self) -> None:
        self.legend.clear()
        for colour, text in self.colouring.legend() if self.colouring is not None else []:
            brush = pg.mkBrush(colour) if colour is not None else None
            self.legend.addItem(pg.ScatterPlotItem(size=10, pen=None, brush=brush), text)

    def _update_outlines(self) -> None:
        if self.data is None or not 0 < len(self.selected) <= MAX_OUTLINED:
            self.box_marks.clear()
        else:
            self.box_marks.setData(pos=self.data.coords[self.selected])

    def _update_caption(self) -> None:
        text = self._caption_base
        if len(self.selected):
            text += f"; {len(self.selected):,} selected"
        self.caption.setText(text)
        self.caption.setToolTip(text)

    def _update_tooltip(self) -> None:
        drag = {PAN: "Drag: pan (Shift+drag: select a rectangle).",
                BOX: "Drag: select a rectangle.",
                LASSO: "Drag: draw an outline to select what it encloses."}[self.tool]
        self.plot.setToolTip(f"Wheel: zoom. {drag} Click a point: its neighbours. On "
                             "release, Shift adds, Ctrl removes, Shift+Ctrl intersects.")

    def _update_export_buttons(self) -> None:
        self.png_button.setEnabled(self.data is not None)
        self.csv_button.setEnabled(self.data is not None)

    def _valid(self, indices: np.ndarray) -> np.ndarray:
        n = len(self.data) if self.data is not None else 0
        indices = np.asarray(indices, dtype=np.int64).ravel()
        if len(indices) > 1 and not (indices[1:] > indices[:-1]).all():
            indices = np.unique(indices)  # a Selection's are sorted and unique already
        return indices[(indices >= 0) & (indices < n)]

    # --- handlers --------------------------------------------------------------------------

    def _on_clicked(self, _item, points, _ev) -> None:
        if len(points):
            self.point_clicked.emit(int(points[0].index()))

    def _on_hovered(self, _item, points, _ev) -> None:
        index = int(points[0].index()) if len(points) else -1
        if index == self._hovered:
            return
        self._hovered = index
        if index >= 0 and self.data is not None:
            self.hover_mark.setData(pos=self.data.coords[index:index + 1],
                                    brush=[self._brush(self.point_colour(index))])
        else:
            self.hover_mark.clear()
        self.point_hovered.emit(index)

    def leaveEvent(self, event) -> None:
        if self._hovered != -1:
            self._hovered = -1
            self.hover_mark.clear()
            self.point_hovered.emit(-1)
        super().leaveEvent(event)

    def _on_region(self, region: object, mode: str) -> None:
        if isinstance(region, QRectF):
            indices, source = self.points_in(region), "box"
        else:
            indices, source = self.points_in_polygon(np.asarray(region)), "lasso"
        self.selection_made.emit(indices, mode)
        self.selection.set(indices, mode, source)
        self.box_selected.emit(self.selection.indices)

    def _on_selection_changed(self) -> None:
        self.set_selection(self.selection.indices)
