"""The thumbnails of an image folder (the Data page's grid): a list model over a manifest's
images whose decorations are decoded lazily in one worker thread, newest request first,
and kept in a small LRU cache; and the icon-mode view that shows it.

Only QImage crosses threads; pixmaps are made on the GUI thread.
"""

from __future__ import annotations

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
from PySide6.QtGui import QColor, QImage, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QListView, QWidget

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


class ThumbnailLoader(QObject):
    """Decodes requested rows' thumbnails in one worker thread, newest request first.

    Signals:
        loaded(int generation, int row, QImage): a thumbnail is ready.
        failed(int generation, int row, str reason): the file is not a usable image.
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
        """Forget pending work; decode rows of ``paths`` from now on."""
        with self._lock:
            self.generation += 1
            self._paths = list(paths)
            self._pending.clear()

    def request(self, row: int) -> None:
        with self._lock:
            self._pending[row] = None
            self._pending.move_to_end(row)
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
                row, _ = self._pending.popitem(last=True)
                generation, path = self.generation, self._paths[row]
            try:
                rgb = decode_image(path, self.size, max_pixels=MAX_PIXELS)
            except BadImage as exc:
                self.failed.emit(generation, row, str(exc))
                continue
            except Exception as exc:
                self.failed.emit(generation, row, f"cannot be read ({exc})")
                continue
            h, w = rgb.shape[:2]
            image = QImage(np.ascontiguousarray(rgb).data, w, h, 3 * w,
                           QImage.Format_RGB888).copy()  # copy: own the pixels
            self.loaded.emit(generation, row, image)


def _placeholder(size: int, colour: str) -> QPixmap:
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor(colour))
    return pixmap


class ThumbnailModel(QAbstractListModel):
    """The manifest's images as a list; decorations are decoded lazily, only for the rows
    a view asks for, and kept in a small LRU cache. Qt.UserRole is the absolute path."""

    def __init__(self, size: int = THUMBNAIL_SIZE, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.size = size
        self.manifest: Manifest | None = None
        self._paths: list[str] = []
        self._cache: OrderedDict[int, QPixmap] = OrderedDict()
        self._failed: dict[int, str] = {}
        self.placeholder = _placeholder(size, "#d0d0d0")
        self.broken = _placeholder(size, "#e8a0a0")
        self.loader = ThumbnailLoader(size, self)
        self.loader.loaded.connect(self._on_loaded)
        self.loader.failed.connect(self._on_failed)

    def set_manifest(self, manifest: Manifest | None) -> None:
        self.beginResetModel()
        self.manifest = manifest
        root = Path(manifest.root) if manifest else Path()
        self._paths = [str(root / r.path) for r in manifest.images] if manifest else []
        self._cache.clear()
        self._failed.clear()
        self.loader.reset(self._paths)
        self.endResetModel()

    def path(self, row: int) -> str:
        return self._paths[row]

    def is_loaded(self, row: int) -> bool:
        return row in self._cache

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._paths)

    def data(self, index: QModelIndex | QPersistentModelIndex,
             role: int = Qt.DisplayRole) -> object:
        if not index.isValid() or self.manifest is None:
            return None
        row = index.row()
        if role == Qt.DecorationRole:
            if row in self._cache:
                self._cache.move_to_end(row)
                return self._cache[row]
            if row in self._failed:
                return self.broken
            self.loader.request(row)
            return self.placeholder
        if role == Qt.ToolTipRole:
            label = self.manifest.images[row].label
            text = self._paths[row] + "\nclass: " + (
                "none (unlabelled)" if label is None else self.manifest.classes[label])
            if row in self._failed:
                text += "\ncannot show: " + self._failed[row]
            return text
        if role == Qt.UserRole:
            return self._paths[row]
        return None

    def _on_loaded(self, generation: int, row: int, image: QImage) -> None:
        if generation != self.loader.generation:
            return  # for a folder no longer shown
        self._cache[row] = QPixmap.fromImage(image)
        self._cache.move_to_end(row)
        while len(self._cache) > THUMBNAIL_CACHE:
            self._cache.popitem(last=False)
        index = self.index(row)
        self.dataChanged.emit(index, index, [Qt.DecorationRole])

    def _on_failed(self, generation: int, row: int, reason: str) -> None:
        if generation != self.loader.generation:
            return
        self._failed[row] = reason
        index = self.index(row)
        self.dataChanged.emit(index, index, [Qt.DecorationRole, Qt.ToolTipRole])




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
        self.setModel(model)
