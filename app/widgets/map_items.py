"""The map's graphics items: :class:`MapScatter`, the points (styled from a palette, drawn
and picked with numpy, so 100,000 of them stay responsive), and :class:`MapViewBox`, whose
drags pan, select a rectangle or draw a free-hand lasso.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from pyqtgraph.graphicsItems.ScatterPlotItem import SpotItem
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QPainterPath, QPen, QPolygonF
from PySide6.QtWidgets import QGraphicsPathItem, QGraphicsRectItem

from app.model.map_regions import NearestPoint, simplify_path
from app.model.selection import ADD, INTERSECT, REMOVE, REPLACE

POINT_SIZE = 8
#: A point is under the mouse within this many pixels of its centre.
PICK_RADIUS_PX = POINT_SIZE / 2 + 1
#: The lasso takes a vertex each time the mouse has moved this many pixels.
LASSO_STEP_PX = 2.0
#: The selection tools of the map's toolbar: drag pans, drags a rectangle, or draws a lasso.
PAN, BOX, LASSO = "pan", "box", "lasso"
TOOLS = (PAN, BOX, LASSO)


def mark_colours() -> tuple[QColor, QColor]:
    """(outline, halo) of the selection marks: the full contrast to the plot's background
    (black on a light theme, white on a dark one), unlike every class colour, and a ring of
    the background around it so the outline stays visible over points of any colour."""
    background = pg.mkColor(pg.getConfigOption("background"))
    outline = QColor("#000000" if background.lightnessF() >= 0.5 else "#ffffff")
    return outline, background


def selection_mode(modifiers: Qt.KeyboardModifier) -> str:
    """How a drag released with ``modifiers`` combines with the selection: none replaces,
    Shift adds, Ctrl removes, Shift+Ctrl intersects (Meta counts as Ctrl, so the Control
    key works on macOS too, where Qt calls Command "Ctrl")."""
    shift = bool(modifiers & Qt.ShiftModifier)
    ctrl = bool(modifiers & (Qt.ControlModifier | Qt.MetaModifier))
    if shift and ctrl:
        return INTERSECT
    return ADD if shift else REMOVE if ctrl else REPLACE


class MapScatter(pg.ScatterPlotItem):
    """A ScatterPlotItem whose points share one symbol, size and pen and take their brushes
    from a small palette (an index per point): styles are set, and the points drawn, with
    numpy over arrays kept for the purpose instead of pyqtgraph's per-point records, and the
    point under the mouse is found among the few near it (:class:`NearestPoint`) instead
    of testing every point on each move.

    Signals (pyqtgraph's, with at most one point, the nearest):
        sigHovered(object, object, object): (item, [SpotItem] or [], event), when the point
            under the mouse changes.
        sigClicked(object, object, object): (item, [SpotItem], event), a point was clicked.
    """

    def __init__(self) -> None:
        super().__init__(size=POINT_SIZE, pen=None, hoverable=False, tip=None)
        self._palette: list[QBrush] = []
        self._index = np.zeros(0, np.intp)
        self._picker: NearestPoint | None = None
        self._hovered = -1
        self._xy = np.zeros((0, 2))
        #: each point's symbol in the atlas pixmap (left, top, width, height), as floats
        self._frag_rects: np.ndarray | None = None

    def set_points(self, coords: np.ndarray, palette: list[QBrush],
                   index: np.ndarray) -> None:
        """Show the points ``coords`` (N, 2), point i filled with ``palette[index[i]]``."""
        self._palette, self._index = list(palette), np.asarray(index, np.intp)
        self._hovered = -1
        self._xy = np.ascontiguousarray(coords, dtype=np.float64).reshape(-1, 2)
        if len(coords) != len(self.data):
            # pyqtgraph's setData fills each object field of its new per-point records one
            # by one (50 ms at 100,000 points); repeating one blank record is 4x faster
            blank = np.empty(1, self.data.dtype)
            blank["size"], blank["visible"] = -1, True
            self.data = np.repeat(blank, len(coords))
        self.data["x"], self.data["y"] = coords[:, 0], coords[:, 1]
        self.data["item"] = None  # SpotItems of old positions
        self.prepareGeometryChange()
        self.informViewBoundsChanged()
        self.bounds = [None, None]
        self.updateSpots()
        self.sigPlotChanged.emit(self)
        self._picker = NearestPoint(coords) if len(coords) else None

    def set_brushes(self, palette: list[QBrush], index: np.ndarray) -> None:
        """Fill point i with ``palette[index[i]]`` (an index per point)."""
        if len(index) != len(self.data):
            raise ValueError(f"{len(index)} brush indices for {len(self.data)} points")
        self._palette, self._index = list(palette), np.asarray(index, np.intp)
        self.updateSpots()

    def updateSpots(self, dataSet=None) -> None:
        data = self.data if dataSet is None else dataSet
        palette = getattr(self, "_palette", None)  # None while pyqtgraph's __init__ runs
        if (not (self.opts["pxMode"] and self.opts["useCache"]) or not palette
                or len(data) != len(self.data) or len(self._index) != len(data)):
            super().updateSpots(dataSet)
            return
        # one atlas look-up per palette entry, then numpy indexing for every point
        symbol, size, pen = self.opts["symbol"], self.opts["size"], self.opts["pen"]
        rects = self.fragmentAtlas[[(symbol, size, pen, b) for b in self._palette]]
        table = np.empty(len(self._palette), object)
        table[:] = self._palette
        data["brush"] = table[self._index]
        self._frag_rects = np.array(rects, dtype=np.float64).reshape(-1, 4)[self._index]
        rects = np.array(rects, dtype=data["sourceRect"].dtype)
        source = data["sourceRect"]
        for part in rects.dtype.names:  # field by field: 5x faster than whole records
            source[part] = rects[part][self._index]
        self._updateMaxSpotSizes(data=data)
        self.invalidate()

    def paint(self, p, option, widget) -> None:
        rects, atlas = self._frag_rects, self.fragmentAtlas
        view = self.viewRect()
        px, py = self.pixelVectors()
        if (rects is None or len(rects) != len(self._xy) or len(self._xy) != len(self.data)
                or view is None or px is None or py is None
                or not (self.opts["pxMode"] and self.opts["useCache"])
                or (widget is not None
                    and widget.devicePixelRatioF() != atlas.devicePixelRatio())):
            super().paint(p, option, widget)  # e.g. a screen of another pixel ratio
            return
        # pyqtgraph's fragment drawing, from the kept arrays: the points in view (padded by
        # half a symbol), mapped to device pixels, each a fragment of the symbol atlas. An
        # export (a PNG wider than the screen) scales the fragments: pyqtgraph's own export
        # draws each point with a Python call, and at 100,000 points PySide crashes there
        # ("deallocating None")
        scale = 1.0
        if self._exportOpts is not False:
            scale = float(self._exportOpts.get("resolutionScale", 1.0))
        half = atlas.maxWidth / 2 * max(scale, 1.0)
        pad_x, pad_y = half * px.length(), half * py.length()
        x, y = self._xy[:, 0], self._xy[:, 1]
        shown = ((x > view.left() - pad_x) & (x < view.right() + pad_x)
                 & (y > view.top() - pad_y) & (y < view.bottom() + pad_y))
        if not shown.all():
            x, y, rects = x[shown], y[shown], rects[shown]
        t = p.transform()
        self._pixmapFragments.resize(len(x))
        frags = self._pixmapFragments.ndarray()
        frags[:, 0] = np.clip(t.m11() * x + t.m21() * y + t.dx(), -2 ** 30, 2 ** 30)
        frags[:, 1] = np.clip(t.m12() * x + t.m22() * y + t.dy(), -2 ** 30, 2 ** 30)
        frags[:, 2:6] = rects
        dpr = atlas.devicePixelRatio()
        frags[:, 6:10] = [scale / dpr, scale / dpr, 0.0, 1.0]
        p.resetTransform()
        p.drawPixmapFragments(*self._pixmapFragments.drawargs(), atlas.pixmap)

    def index_at(self, pos: QPointF) -> int:
        """The point drawn at ``pos`` (item coordinates), the nearest when several are;
        -1 for none."""
        if self._picker is None:
            return -1
        px, py = self.pixelVectors()
        if px is None or py is None:
            return -1
        return self._picker.nearest(pos.x(), pos.y(), PICK_RADIUS_PX * px.length(),
                                    PICK_RADIUS_PX * py.length())

    def spot(self, index: int) -> SpotItem:
        """The SpotItem of point ``index`` (made alone: ``points()`` would make all)."""
        return SpotItem(self.data[index], self, index)

    def hoverEvent(self, ev) -> None:
        if ev.exit:
            index = -1
        elif ev.buttons():
            return  # mid-drag (panning, a lasso): no hover
        else:
            index = self.index_at(ev.pos())
        if index != self._hovered:
            self._hovered = index
            self.sigHovered.emit(self, [self.spot(index)] if index >= 0 else [], ev)

    def mouseClickEvent(self, ev) -> None:
        index = self.index_at(ev.pos()) if ev.button() == Qt.LeftButton else -1
        if index < 0:
            ev.ignore()
            return
        ev.accept()
        self.sigClicked.emit(self, [self.spot(index)], ev)


class MapViewBox(pg.ViewBox):
    """A ViewBox whose left-drag pans (tool "pan"), draws a rectangle ("box") or a free-hand
    lasso ("lasso"); Shift+drag draws a rectangle with any tool but the lasso. The
    modifiers held on release give the mode (:func:`selection_mode`).

    Signals:
        region_selected(object, str): a drawn region, in data coordinates (a QRectF, or a
            (V, 2) float array of the lasso's vertices), and its mode.
        box_selected(object): emit a rectangle (QRectF, data coordinates) here to replace
            the selection with the points inside it, as a plain box drag does.
    """

    region_selected = Signal(object, str)
    box_selected = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.tool = PAN
        self._gesture: str | None = None
        self._lasso: list[tuple[float, float]] = []
        self._lasso_last = QPointF()
        outline, _halo = mark_colours()
        pen = QPen(outline)
        pen.setCosmetic(True)
        pen.setStyle(Qt.DashLine)
        fill = QColor(outline)
        fill.setAlpha(30)
        self._band = QGraphicsRectItem()
        self._band.setPen(pen)
        self._band.setBrush(fill)
        self._lasso_item = QGraphicsPathItem()
        self._lasso_item.setPen(pen)
        self._lasso_item.setBrush(fill)
        for item in (self._band, self._lasso_item):
            item.hide()
            self.addItem(item, ignoreBounds=True)

    def mouseDragEvent(self, ev, axis=None) -> None:
        if ev.isStart():
            shift = bool(ev.modifiers() & Qt.ShiftModifier)
            self._gesture = (None if ev.button() != Qt.LeftButton
                             else LASSO if self.tool == LASSO
                             else BOX if self.tool == BOX or shift else None)
        if self._gesture is None:
            super().mouseDragEvent(ev, axis)
            return
        ev.accept()
        if self._gesture == BOX:
            self._drag_box(ev)
        else:
            self._drag_lasso(ev)
        if ev.isFinish():
            self._gesture = None

    def _drag_box(self, ev) -> None:
        rect = QRectF(self.mapToView(ev.buttonDownPos()), self.mapToView(ev.pos())).normalized()
        if ev.isFinish():
            self._band.hide()
            self.region_selected.emit(rect, selection_mode(ev.modifiers()))
        else:
            self._band.setRect(rect)
            self._band.show()

    def _drag_lasso(self, ev) -> None:
        pos = ev.pos()
        if ev.isStart():
            self._lasso = []
            self._add_lasso_vertex(ev.buttonDownPos())
        if (pos - self._lasso_last).manhattanLength() >= LASSO_STEP_PX or ev.isFinish():
            self._add_lasso_vertex(pos)
        if ev.isFinish():
            self._lasso_item.hide()
            polygon = simplify_path(np.array(self._lasso, dtype=np.float64))
            self._lasso = []
            self.region_selected.emit(polygon, selection_mode(ev.modifiers()))
            return
        path = QPainterPath()
        path.addPolygon(QPolygonF([QPointF(x, y) for x, y in self._lasso]))
        path.closeSubpath()
        self._lasso_item.setPath(path)
        self._lasso_item.show()

    def _add_lasso_vertex(self, pos: QPointF) -> None:
        self._lasso_last = QPointF(pos)
        point = self.mapToView(pos)
        self._lasso.append((point.x(), point.y()))
