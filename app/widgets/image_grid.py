"""A virtualised grid of image thumbnails for lists of any length (a selection of 100,000
images, a ranking of every image): a QListView in icon mode over a list model that only
draws the rows in view and asks the :class:`~app.widgets.neighbours_panel.ThumbnailCache`
for their thumbnails as they are painted.

:class:`ThumbnailRequests` is the bookkeeping both this grid and the duplicates view use:
which painted rows wait for which file, and the small scaled copies drawn.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
from PySide6.QtCore import (
    QAbstractListModel,
    QItemSelection,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QListView, QVBoxLayout, QWidget

from app.widgets.neighbours_panel import ThumbnailCache

GRID_PX = 64
#: Scaled thumbnails kept for drawing (a few screens of tiles).
DRAWN_CACHE = 800
#: Thumbnail decodes one model asks for at once (a screen or two of tiles).
MAX_IN_FLIGHT = 64
INDEX_ROLE = Qt.UserRole + 1
PATH_ROLE = Qt.UserRole + 2
SCORE_ROLE = Qt.UserRole + 3


def placeholder(px: int, colour: str = "#8884") -> QPixmap:
    """A plain square drawn until a thumbnail arrives."""
    pixmap = QPixmap(px, px)
    pixmap.fill(QColor(colour))
    return pixmap


class ThumbnailRequests(QObject):
    """Thumbnails at ``px`` for the rows being drawn: :meth:`pixmap` returns the scaled
    thumbnail of a path (or None, then asks the cache and remembers the row); when the
    cache has it, ``on_ready`` gets the rows that wait for it.

    At most MAX_IN_FLIGHT decodes are asked for at once: rows drawn beyond that are told
    to draw again when one arrives, and only those still in view then ask. So scrolling
    fast through 100,000 rows queues no decode of the rows scrolled past.
    """

    def __init__(self, thumbnails: ThumbnailCache, px: int,
                 on_ready: Callable[[list[int]], None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.thumbnails, self.px, self._on_ready = thumbnails, px, on_ready
        self._waiting: dict[str, set[int]] = {}
        self._in_flight: set[str] = set()
        self._deferred: set[int] = set()
        self._drawn: OrderedDict[str, QPixmap] = OrderedDict()
        thumbnails.ready.connect(self._on_thumbnail)
        thumbnails.failed.connect(self._on_thumbnail)

    def pixmap(self, path: str, row: int) -> QPixmap | None:
        drawn = self._drawn.get(path)
        if drawn is not None:
            self._drawn.move_to_end(path)
            return drawn
        if path in self._in_flight:
            self._waiting.setdefault(path, set()).add(row)
            return None
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            self._deferred.add(row)
            return None
        image = self.thumbnails.get(path)
        if image is None:
            if self.thumbnails.reason(path) is None:
                self._in_flight.add(path)
                self._waiting.setdefault(path, set()).add(row)
            return None
        pixmap = QPixmap.fromImage(image)
        if pixmap.width() != self.px:
            pixmap = pixmap.scaled(self.px, self.px, Qt.KeepAspectRatio,
                                   Qt.SmoothTransformation)
        self._drawn[path] = pixmap
        while len(self._drawn) > DRAWN_CACHE:
            self._drawn.popitem(last=False)
        return pixmap

    def reason(self, path: str) -> str | None:
        return self.thumbnails.reason(path)

    def in_flight(self) -> int:
        """How many decodes this asked for and waits on."""
        return len(self._in_flight)

    def reset(self) -> None:
        """Forget the waiting rows (the rows changed; the decodes asked for go on)."""
        self._waiting.clear()
        self._deferred.clear()

    def _on_thumbnail(self, path: str, _reason: str = "") -> None:
        self._in_flight.discard(path)
        rows = self._waiting.pop(path, set()) | self._deferred
        self._deferred = set()
        if rows:
            self._on_ready(sorted(rows))


class PathsOf(Sequence[str]):
    """The absolute paths of chosen images (``indices`` into ``paths``, relative to
    ``root``), joined only for the rows drawn."""

    def __init__(self, root: str, paths: Sequence[str], indices: np.ndarray) -> None:
        self.root, self.paths, self.indices = root, paths, np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, row):  # type: ignore[override]
        return os.path.join(self.root, self.paths[int(self.indices[row])])


class ImageListModel(QAbstractListModel):
    """Rows of images: a run's image index, an absolute path (``root`` joined to ``paths``
    when given, only for the rows drawn), a caption, a tooltip and an optional score.

    Captions and tooltips are sequences aligned with the rows or functions of the row, so
    that 100,000 rows cost no string until they are drawn.
    """

    def __init__(self, thumbnails: ThumbnailCache, px: int = GRID_PX,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.px = px
        self.requests = ThumbnailRequests(thumbnails, px, self._on_thumbnails, self)
        self._placeholder = placeholder(px)
        self._failed = placeholder(px, "#c6282855")
        self.indices = np.zeros(0, np.int64)
        self._paths: Sequence[str] = []
        self._root: str | None = None
        self._captions: Sequence[str] | Callable[[int], str] | None = None
        self._tooltips: Sequence[str] | Callable[[int], str] | None = None
        self.scores: np.ndarray | None = None

    def set_images(self, indices: Sequence[int] | np.ndarray, paths: Sequence[str], *,
                   root: str | None = None,
                   captions: Sequence[str] | Callable[[int], str] | None = None,
                   tooltips: Sequence[str] | Callable[[int], str] | None = None,
                   scores: np.ndarray | None = None) -> None:
        """Show these rows (``paths`` aligned with ``indices``; relative to ``root`` when
        given). Default caption "#index", default tooltip "#index path"."""
        indices = np.asarray(indices, np.int64).ravel()
        if len(paths) != len(indices):
            raise ValueError(f"{len(paths)} paths for {len(indices)} images")
        self.beginResetModel()
        self.requests.reset()
        self.indices, self._paths, self._root = indices, paths, root
        self._captions, self._tooltips = captions, tooltips
        self.scores = None if scores is None else np.asarray(scores, np.float32)
        self.endResetModel()

    def clear(self) -> None:
        self.set_images([], [])

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.indices)

    def path(self, row: int) -> str:
        path = self._paths[row]
        return os.path.join(self._root, path) if self._root is not None else path

    def caption(self, row: int) -> str:
        if self._captions is None:
            return f"#{self.indices[row]}"
        return self._captions(row) if callable(self._captions) else self._captions[row]

    def tooltip(self, row: int) -> str:
        if self._tooltips is None:
            return f"#{self.indices[row]} {self.path(row)}"
        return self._tooltips(row) if callable(self._tooltips) else self._tooltips[row]

    def data(self, index: QModelIndex | QPersistentModelIndex,
             role: int = Qt.DisplayRole) -> object:
        row = index.row()
        if not index.isValid() or not 0 <= row < len(self.indices):
            return None
        if role == Qt.DisplayRole:
            return self.caption(row)
        if role == Qt.DecorationRole:
            path = self.path(row)
            pixmap = self.requests.pixmap(path, row)
            if pixmap is not None:
                return pixmap
            return self._failed if self.requests.reason(path) is not None else self._placeholder
        if role == Qt.ToolTipRole:
            path = self.path(row)
            reason = self.requests.reason(path)
            return self.tooltip(row) + (f"\nno preview: {reason}" if reason else "")
        if role == INDEX_ROLE:
            return int(self.indices[row])
        if role == PATH_ROLE:
            return self.path(row)
        if role == SCORE_ROLE:
            return None if self.scores is None else float(self.scores[row])
        return None

    def _on_thumbnails(self, rows: list[int]) -> None:
        for row in rows:
            if row < len(self.indices):
                at = self.index(row)
                self.dataChanged.emit(at, at, [Qt.DecorationRole])


class _GridView(QListView):
    """The list view, reporting Enter on the current row."""

    entered = Signal(QModelIndex)

    def keyPressEvent(self, event) -> None:
        if event.key() in (Qt.Key_Return, Qt.Key_Enter) and self.currentIndex().isValid():
            self.entered.emit(self.currentIndex())
            return
        super().keyPressEvent(event)


class ImageGrid(QWidget):
    """Thumbnails with captions in a wrapping grid that draws only what is in view: any
    number of rows opens at once.

    Signals:
        activated(int): a tile was clicked or Enter was pressed on it: its image index.
        selection_changed(object): the rows selected in the grid changed: their image
            indices (int64 array, in row order).
    """

    activated = Signal(int)
    selection_changed = Signal(object)

    def __init__(self, thumbnails: ThumbnailCache, px: int = GRID_PX,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = ImageListModel(thumbnails, px, self)
        view = self.view = _GridView()
        view.setViewMode(QListView.IconMode)
        view.setUniformItemSizes(True)
        view.setLayoutMode(QListView.Batched)
        view.setBatchSize(500)
        view.setMovement(QListView.Static)
        view.setResizeMode(QListView.Adjust)
        view.setWrapping(True)
        view.setWordWrap(True)
        view.setIconSize(QSize(px, px))
        view.setGridSize(QSize(px + 22, px + 36))
        view.setSelectionMode(QAbstractItemView.ExtendedSelection)
        view.setModel(self.model)
        view.clicked.connect(self._on_activated)
        view.entered.connect(self._on_activated)
        view.selectionModel().selectionChanged.connect(self._on_selection)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(view)

    def set_images(self, indices: Sequence[int] | np.ndarray, paths: Sequence[str], *,
                   root: str | None = None,
                   captions: Sequence[str] | Callable[[int], str] | None = None,
                   tooltips: Sequence[str] | Callable[[int], str] | None = None,
                   scores: np.ndarray | None = None) -> None:
        """Show these images (see :meth:`ImageListModel.set_images`), scrolled to the top."""
        self.model.set_images(indices, paths, root=root, captions=captions,
                              tooltips=tooltips, scores=scores)
        self.view.scrollToTop()

    def clear(self) -> None:
        self.model.clear()

    def count(self) -> int:
        return self.model.rowCount()

    def indices(self) -> np.ndarray:
        """The image indices of the rows, in row order."""
        return self.model.indices

    def selected_indices(self) -> np.ndarray:
        """The image indices of the selected rows, in row order (from the selection's
        ranges: no object per row)."""
        rows = [np.arange(r.top(), r.bottom() + 1)
                for r in self.view.selectionModel().selection()]
        if not rows:
            return np.zeros(0, np.int64)
        return self.model.indices[np.unique(np.concatenate(rows))]

    def _on_activated(self, index: QModelIndex) -> None:
        if index.isValid():
            self.activated.emit(int(self.model.indices[index.row()]))

    def _on_selection(self, _selected: QItemSelection, _deselected: QItemSelection) -> None:
        self.selection_changed.emit(self.selected_indices())
