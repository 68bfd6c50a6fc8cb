"""The thumbnails of an image folder (the Data page's grid): a list model over a manifest's
images, in the order the page chose and filtered to a tag (an index array: the manifest's
images are never copied), whose decorations are decoded lazily in one worker thread,
newest request first, and kept in a small LRU cache; and the icon-mode view that shows it,
with a marker on tagged images.

Only QImage crosses threads; pixmaps are made on the GUI thread.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSize,
    Qt,
    QThreadPool,
    Signal,
)
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QListView,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QWidget,
)

from app.child.workers import Call
from engine.data.cache import BadImage, decode_image
from engine.data.scan import Manifest

THUMBNAIL_SIZE = 64
#: Thumbnails kept in memory (64 px RGB: about 12 KB each).
THUMBNAIL_CACHE = 2000
#: Thumbnail requests waiting to be decoded; older ones (scrolled past) are dropped first.
MAX_PENDING = 512
#: The same guard as training (engine.config.train_config.TrainConfig.max_image_pixels).
MAX_PIXELS = 178_956_970
#: Item data: the tag names of an image (a list, empty when untagged).
TAGS_ROLE = Qt.UserRole + 1
#: The colour of the marker on a tagged thumbnail.
TAG_MARK = QColor(230, 140, 20)


class ThumbnailLoader(QObject):
    """Decodes requested images' thumbnails in one worker thread, newest request first.
    An image is its index in the paths given to :meth:`reset` (the manifest's order).

    Signals:
        loaded(int generation, int image, QImage): a thumbnail is ready.
        failed(int generation, int image, str reason): the file is not a usable image.
    """

    loaded = Signal(int, int, QImage)
    failed = Signal(int, int, str)

    def __init__(self, size: int = THUMBNAIL_SIZE, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.size = size
        self.generation = 0
        self._paths: list[str] = []
        self._pending: OrderedDict[int, None] = OrderedDict()
        self._lock = threading.Lock()
        self._running = False
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)

    def reset(self, paths: list[str]) -> None:
        """Forget pending work; decode images of ``paths`` from now on."""
        with self._lock:
            self.generation += 1
            self._paths = list(paths)
            self._pending.clear()

    def request(self, image: int) -> None:
        with self._lock:
            self._pending[image] = None
            self._pending.move_to_end(image)
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)
            if self._running:
                return
            self._running = True
        self._pool.start(Call(self._work))

    def wait(self, msecs: int = 10_000) -> bool:
        with self._lock:
            self._pending.clear()
        return self._pool.waitForDone(msecs)

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._running = False
                    return
                image, _ = self._pending.popitem(last=True)
                generation, path = self.generation, self._paths[image]
            try:
                rgb = decode_image(path, self.size, max_pixels=MAX_PIXELS)
            except BadImage as exc:
                self.failed.emit(generation, image, str(exc))
                continue
            except Exception as exc:
                self.failed.emit(generation, image, f"cannot be read ({exc})")
                continue
            h, w = rgb.shape[:2]
            thumbnail = QImage(np.ascontiguousarray(rgb).data, w, h, 3 * w,
                               QImage.Format_RGB888).copy()  # copy: own the pixels
            self.loaded.emit(generation, image, thumbnail)


def thumbnail_paths(manifest: Manifest) -> list[str]:
    """The absolute path of each image of ``manifest``, in its order."""
    # Joined as text: pathlib takes about a second for 100,000 paths.
    prefix = os.path.join(str(Path(manifest.root)), "")
    return [prefix + r.path.replace("/", os.sep) for r in manifest.images]


def _placeholder(size: int, colour: str) -> QPixmap:
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor(colour))
    return pixmap


class ThumbnailModel(QAbstractListModel):
    """The manifest's images as a list, in the order of :meth:`set_rows` (all of them in the
    manifest's order until then); decorations are decoded lazily, only for the rows a view
    asks for, and kept in a small LRU cache by image, so a new order or filter keeps them.
    Qt.UserRole is the absolute path, TAGS_ROLE the image's tags (:meth:`set_tags`)."""

    def __init__(self, size: int = THUMBNAIL_SIZE, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.size = size
        self.manifest: Manifest | None = None
        self._paths: list[str] = []
        #: The manifest index of each row shown, and the row of each image (-1: not shown).
        self._rows = np.zeros(0, dtype=np.int64)
        self._row_of = np.zeros(0, dtype=np.int64)
        #: Tag name -> the manifest indices it names (sorted), and whether each image has one.
        self._tags: dict[str, np.ndarray] = {}
        self._tagged = np.zeros(0, dtype=bool)
        # Both by manifest index.
        self._cache: OrderedDict[int, QPixmap] = OrderedDict()
        self._failed: dict[int, str] = {}
        self.placeholder = _placeholder(size, "#d0d0d0")
        self.broken = _placeholder(size, "#e8a0a0")
        self.loader = ThumbnailLoader(size, self)
        self.loader.loaded.connect(self._on_loaded)
        self.loader.failed.connect(self._on_failed)

    def set_manifest(self, manifest: Manifest | None, paths: list[str] | None = None) -> None:
        """Show ``manifest``'s images (None: none); ``paths`` are their absolute paths when
        already made (:func:`thumbnail_paths`, in a worker thread: 40 ms at 100,000)."""
        if manifest is not None and paths is not None and len(paths) != len(manifest.images):
            raise ValueError(f"{len(paths)} paths for {len(manifest.images)} images")
        self.beginResetModel()
        self.manifest = manifest
        self._paths = ([] if manifest is None else paths if paths is not None
                       else thumbnail_paths(manifest))
        self._rows = np.arange(len(self._paths), dtype=np.int64)
        self._row_of = self._rows.copy()
        self._tags = {}
        self._tagged = np.zeros(len(self._paths), dtype=bool)
        self._cache.clear()
        self._failed.clear()
        self.loader.reset(self._paths)
        self.endResetModel()

    def set_rows(self, rows: np.ndarray) -> None:
        """Show the images at manifest indices ``rows``, in that order (an order, perhaps
        filtered to a tag); the thumbnails decoded so far are kept."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self._paths)):
            raise ValueError(f"rows must index the {len(self._paths)} images")
        self.beginResetModel()
        self._rows = rows
        self._row_of = np.full(len(self._paths), -1, dtype=np.int64)
        self._row_of[rows] = np.arange(rows.size)
        self.endResetModel()

    def set_tags(self, tags: dict[str, np.ndarray]) -> None:
        """The tags of the images: tag name -> the manifest indices it names."""
        self._tags = {name: np.unique(np.asarray(indices, dtype=np.int64))
                      for name, indices in tags.items()}
        self._tagged = np.zeros(len(self._paths), dtype=bool)
        for indices in self._tags.values():
            self._tagged[indices[(indices >= 0) & (indices < len(self._paths))]] = True
        if self._rows.size:
            self.dataChanged.emit(self.index(0), self.index(self._rows.size - 1),
                                  [TAGS_ROLE, Qt.ToolTipRole])

    def tags_of(self, image: int) -> list[str]:
        """The names of the tags on image ``image`` (a manifest index), in tag order."""
        if not (0 <= image < self._tagged.size and self._tagged[image]):
            return []
        return [name for name, indices in self._tags.items()
                if indices.size and indices[min(np.searchsorted(indices, image),
                                                indices.size - 1)] == image]

    def paths(self) -> list[str]:
        """The absolute path of every image of the manifest, in the manifest's order."""
        return self._paths

    def image(self, row: int) -> int:
        """The manifest index of the image shown at ``row``."""
        return int(self._rows[row])

    def path(self, row: int) -> str:
        return self._paths[self._rows[row]]

    def is_loaded(self, row: int) -> bool:
        return int(self._rows[row]) in self._cache

    def decoration(self, row: int) -> QPixmap:
        """The thumbnail of ``row`` when decoded; else a placeholder (and it is asked
        for) or, when the file cannot be shown, the broken-image tile."""
        image = int(self._rows[row])
        if image in self._cache:
            self._cache.move_to_end(image)
            return self._cache[image]
        if image in self._failed:
            return self.broken
        self.loader.request(image)
        return self.placeholder

    def has_tags(self, row: int) -> bool:
        return bool(self._tagged[self._rows[row]])

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else int(self._rows.size)

    def data(self, index: QModelIndex | QPersistentModelIndex,
             role: int = Qt.DisplayRole) -> object:
        if not index.isValid() or self.manifest is None:
            return None
        image = int(self._rows[index.row()])
        if role == Qt.DecorationRole:
            return self.decoration(index.row())
        if role == Qt.ToolTipRole:
            label = self.manifest.images[image].label
            text = self._paths[image] + "\nclass: " + (
                "none (unlabelled)" if label is None else self.manifest.classes[label])
            if self._tagged[image]:
                text += "\ntags: " + ", ".join(self.tags_of(image))
            if image in self._failed:
                text += "\ncannot show: " + self._failed[image]
            return text
        if role == Qt.UserRole:
            return self._paths[image]
        if role == TAGS_ROLE:
            return self.tags_of(image)
        return None

    def _changed(self, image: int, roles: list[int]) -> None:
        row = int(self._row_of[image]) if image < self._row_of.size else -1
        if row >= 0:
            index = self.index(row)
            self.dataChanged.emit(index, index, roles)

    def _on_loaded(self, generation: int, image: int, thumbnail: QImage) -> None:
        if generation != self.loader.generation:
            return  # for a folder no longer shown
        self._cache[image] = QPixmap.fromImage(thumbnail)
        self._cache.move_to_end(image)
        while len(self._cache) > THUMBNAIL_CACHE:
            self._cache.popitem(last=False)
        self._changed(image, [Qt.DecorationRole])

    def _on_failed(self, generation: int, image: int, reason: str) -> None:
        if generation != self.loader.generation:
            return
        self._failed[image] = reason
        self._changed(image, [Qt.DecorationRole, Qt.ToolTipRole])


class ThumbnailDelegate(QStyledItemDelegate):
    """Draws a cell straight from its :class:`ThumbnailModel`: the thumbnail centred, the
    selection's highlight, and a small marker in the corner when the image has tags (which
    its tooltip names). Two model calls a cell: the style's own drawing asks the model for
    every role of every cell (in Python), which took most of a page-down's time at
    100,000 images."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem,
              index: QModelIndex | QPersistentModelIndex) -> None:
        r = option.rect
        if option.state & QStyle.State_Selected:
            painter.fillRect(r, option.palette.highlight())
        model, row = index.model(), index.row()
        pixmap = model.decoration(row)
        painter.drawPixmap(r.x() + (r.width() - pixmap.width()) // 2,
                           r.y() + (r.height() - pixmap.height()) // 2, pixmap)
        if not model.has_tags(row):
            return
        side = max(8, r.width() // 6)
        painter.save()
        painter.setRenderHint(QPainter.Antialiasing)
        painter.setPen(QColor("white"))
        painter.setBrush(TAG_MARK)
        painter.drawEllipse(r.right() - side - 3, r.top() + 3, side, side)
        painter.restore()

    def sizeHint(self, option: QStyleOptionViewItem,
                 index: QModelIndex | QPersistentModelIndex) -> QSize:
        size = index.model().size
        return QSize(size, size)


class FolderThumbnails(QListView):
    """The model's thumbnails in a grid (icon mode, uniform cells: 10k rows stay fast)."""

    def __init__(self, model: ThumbnailModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        size = model.size
        self.setViewMode(QListView.IconMode)
        self.setResizeMode(QListView.Adjust)
        self.setMovement(QListView.Static)
        self.setUniformItemSizes(True)  # no size query per row
        self.setLayoutMode(QListView.Batched)
        self.setIconSize(QSize(size, size))
        self.setGridSize(QSize(size + 8, size + 8))
        self.setSelectionMode(QAbstractItemView.SingleSelection)
        self.setToolTip("")
        self.setItemDelegate(ThumbnailDelegate(self))
        self.setModel(model)
