"""Thumbnails of a run's images: a decoding cache, a grid of captioned tiles and the
neighbours panel (a query image beside its nearest neighbours; image files can be dropped
on it). The previews of the map point under the mouse are in app/widgets/hover_preview.py.

Thumbnails are decoded in a worker thread (QImage, never QPixmap, off the GUI thread) and
kept in a bounded cache keyed by file path; tiles fill in as their thumbnails arrive.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Qt, QThreadPool, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from app.child.workers import Relay, Task
from app.model.explore_data import MapData
from app.style import set_role
from engine.data.cache import BadImage, decode_image

THUMBNAIL_PX = 96
#: Thumbnails kept in memory (96 px RGB: about 27 KB each).
THUMBNAIL_CACHE = 2000
#: The same guard as training (engine.config.train_config.TrainConfig.max_image_pixels).
MAX_PIXELS = 178_956_970


def decode_thumbnail(path: str, size: int) -> tuple[str, QImage | None, str]:
    """(path, the centre square of the image at ``size`` px or None, why not)."""
    try:
        rgb = np.ascontiguousarray(decode_image(path, size, max_pixels=MAX_PIXELS))
    except BadImage as exc:
        return path, None, str(exc)
    except Exception as exc:
        return path, None, f"cannot be read ({exc})"
    h, w = rgb.shape[:2]
    return path, QImage(rgb.data, w, h, 3 * w, QImage.Format_RGB888).copy(), ""


class ThumbnailCache(QObject):
    """Thumbnails by absolute file path, decoded in a worker thread on first request.

    Signals:
        ready(str): the thumbnail of this path is now available from :meth:`get`.
        failed(str, str): this path is not a usable image, and why.
    """

    ready = Signal(str)
    failed = Signal(str, str)

    def __init__(self, size: int = THUMBNAIL_PX, capacity: int = THUMBNAIL_CACHE,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.size, self.capacity = size, capacity
        self._images: OrderedDict[str, QImage | None] = OrderedDict()
        self._reasons: dict[str, str] = {}
        self._pending: set[str] = set()
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(2)
        self._relay = Relay(self)
        self._relay.done.connect(self._on_decoded)

    def get(self, path: str) -> QImage | None:
        """The cached thumbnail of ``path``, or None (then it is decoded and :attr:`ready`
        or :attr:`failed` follows)."""
        if path in self._images:
            self._images.move_to_end(path)
            return self._images[path]
        if path not in self._pending:
            self._pending.add(path)
            self._pool.start(Task(lambda: decode_thumbnail(path, self.size), 0, self._relay))
        return None

    def reason(self, path: str) -> str | None:
        """Why ``path`` has no thumbnail, if it failed."""
        return self._reasons.get(path)

    def wait(self, msecs: int = 10_000) -> bool:
        return self._pool.waitForDone(msecs)

    def _on_decoded(self, _generation: int, value: object) -> None:
        path, image, reason = value  # type: ignore[misc]
        self._pending.discard(path)
        self._images[path] = image
        while len(self._images) > self.capacity:
            old, _ = self._images.popitem(last=False)
            self._reasons.pop(old, None)
        if image is None:
            self._reasons[path] = reason
            self.failed.emit(path, reason)
        else:
            self.ready.emit(path)


@dataclass
class TileInfo:
    """One tile: an image of the run (``index``, or None for a file from elsewhere), its
    absolute path, a short caption and a longer tooltip."""

    index: int | None
    path: str
    caption: str
    tooltip: str = ""


class ImageTile(QFrame):
    """A thumbnail above its caption. Clicking it emits :attr:`clicked` with the tile's
    image index (tiles of outside files are not clickable).

    Signals:
        clicked(int): the image index of the clicked tile.
    """

    clicked = Signal(int)

    def __init__(self, info: TileInfo, px: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.info = info
        self.setFrameShape(QFrame.StyledPanel)
        self.image = QLabel()
        self.image.setFixedSize(px, px)
        self.image.setAlignment(Qt.AlignCenter)
        self.image.setScaledContents(True)
        self.caption = QLabel(info.caption)
        self.caption.setAlignment(Qt.AlignCenter)
        self.caption.setWordWrap(True)
        self.caption.setMaximumWidth(px + 16)
        self.setToolTip(info.tooltip or info.path)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(3, 3, 3, 3)
        layout.addWidget(self.image, 0, Qt.AlignHCenter)
        layout.addWidget(self.caption)

    def set_image(self, image: QImage | None, reason: str = "") -> None:
        if image is not None:
            self.image.setPixmap(QPixmap.fromImage(image))
        else:
            self.image.setText("no preview")
            self.image.setToolTip(reason)

    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.LeftButton and self.info.index is not None:
            self.clicked.emit(self.info.index)
        super().mousePressEvent(event)


class ThumbnailGrid(QScrollArea):
    """Tiles in rows of ``columns`` (None: as many as fit the width, re-flowed when it
    changes, so no column hides behind a horizontal scroll bar), thumbnails filled in from
    a :class:`ThumbnailCache`.

    Signals:
        activated(int): the image index of a clicked tile.
    """

    activated = Signal(int)

    def __init__(self, thumbnails: ThumbnailCache, columns: int | None = None,
                 px: int = THUMBNAIL_PX, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.thumbnails, self.px = thumbnails, px
        self.fixed_columns = columns
        self.columns = columns or 1
        self.tiles: list[ImageTile] = []
        self._tile_width: int | None = None
        self._body = QWidget()
        self._layout = QGridLayout(self._body)
        self._layout.setContentsMargins(4, 4, 4, 4)
        self._layout.setSpacing(6)
        self._layout.setAlignment(Qt.AlignTop | Qt.AlignLeft)
        self.setWidget(self._body)
        self.setWidgetResizable(True)
        if columns is None:
            self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        thumbnails.ready.connect(self._on_thumbnail)
        thumbnails.failed.connect(self._on_thumbnail)

    def tile_width(self) -> int:
        """The width one tile takes in the grid, spacing included."""
        if self._tile_width is None:
            probe = ImageTile(TileInfo(None, "", "0.000\nclass"), self.px, self._body)
            self._tile_width = probe.sizeHint().width() + max(0, self._layout.spacing())
            probe.deleteLater()
        return self._tile_width

    def fitting_columns(self) -> int:
        """How many tiles fit side by side in the width, room for the vertical scroll bar
        kept (so the bar's coming and going does not re-flow the tiles)."""
        margins = self._layout.contentsMargins()
        room = (self.width() - 2 * self.frameWidth() - margins.left() - margins.right()
                - self.verticalScrollBar().sizeHint().width() + self._layout.spacing())
        return max(1, room // self.tile_width())

    def set_tiles(self, infos: list[TileInfo]) -> None:
        for tile in self.tiles:
            tile.deleteLater()
        self.tiles = []
        for info in infos:
            tile = ImageTile(info, self.px)
            tile.clicked.connect(self.activated)
            self.tiles.append(tile)
            image = self.thumbnails.get(info.path)
            if image is not None or self.thumbnails.reason(info.path) is not None:
                tile.set_image(image, self.thumbnails.reason(info.path) or "")
        self._place_tiles()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self.fixed_columns is None and self.fitting_columns() != self.columns:
            self._place_tiles()

    def _place_tiles(self) -> None:
        self.columns = self.fixed_columns or self.fitting_columns()
        for tile in self.tiles:
            self._layout.removeWidget(tile)
        for i, tile in enumerate(self.tiles):
            self._layout.addWidget(tile, i // self.columns, i % self.columns)

    def show_points(self, data: MapData, indices: list[int]) -> int:
        """Tiles for images ``indices`` of a map, captioned by class (or index); returns
        how many."""
        self.set_tiles([TileInfo(i, data.absolute_path(i), data.class_name(i) or f"#{i}",
                                 f"#{i} {data.paths[i]}") for i in indices])
        return len(indices)

    def _on_thumbnail(self, path: str, _reason: str = "") -> None:
        for tile in self.tiles:
            if tile.info.path == path:
                tile.set_image(self.thumbnails.get(path), self.thumbnails.reason(path) or "")


class NeighboursPanel(QWidget):
    """The query image and its nearest neighbours (thumbnail, cosine similarity, class).

    An image file dropped on the panel asks for its neighbours; clicking a neighbour asks
    for that image's neighbours.

    Signals:
        file_dropped(str): a local file was dropped on the panel.
        neighbour_activated(int): a neighbour tile was clicked (its image index).
        select_requested(object, str): "Select these" was pressed: the image indices of the
            query (when it is one of the run's images) and its neighbours, and a description
            ("neighbours of #12").
    """

    file_dropped = Signal(str)
    neighbour_activated = Signal(int)
    select_requested = Signal(object, str)

    def __init__(self, thumbnails: ThumbnailCache, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.thumbnails = thumbnails
        self.setAcceptDrops(True)
        self.setToolTip("Click a point of the map, or drop an image file here, to see its "
                        "nearest neighbours by cosine similarity.")
        self.title = QLabel("Click a point of the map or drop an image file here.")
        self.title.setWordWrap(True)
        # a long file name cannot wrap: it is cut instead of widening the panel
        self.title.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.query = ThumbnailGrid(thumbnails, columns=1, px=THUMBNAIL_PX)
        self.query.setFixedSize(THUMBNAIL_PX + 30, THUMBNAIL_PX + 70)
        self.query.setFrameShape(QFrame.NoFrame)
        self.query.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.query.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.grid = ThumbnailGrid(thumbnails)
        self.grid.activated.connect(self.neighbour_activated)
        self.select_button = QPushButton("Select these")
        self.select_button.setToolTip("Select the query and its neighbours (on the map, for "
                                      "tagging, export or retraining).")
        self.select_button.clicked.connect(self._on_select)
        self.select_button.setEnabled(False)
        self._shown: tuple[list[int], str] = ([], "")
        side = QVBoxLayout()
        side.addWidget(self.title, 1)
        side.addWidget(self.select_button, 0, Qt.AlignLeft)
        top = QHBoxLayout()
        top.addWidget(self.query)
        top.addLayout(side, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.grid, 1)

    def show_result(self, title: str, query: TileInfo, neighbours: list[TileInfo]) -> None:
        set_role(self.title, "")
        self.title.setText(title)
        self.query.set_tiles([query])
        self.grid.set_tiles(neighbours)
        indices = [t.index for t in [query, *neighbours] if t.index is not None]
        what = (f"neighbours of #{query.index}" if query.index is not None else
                f"neighbours of {Path(query.path).name}")
        self._shown = (indices, what)
        self.select_button.setEnabled(bool(indices))

    def show_neighbours(self, result: dict) -> str:
        """Show a neighbours result (as engine.evaluate.explore.neighbours returns it, the
        query left out); returns its title."""
        root, q = Path(result["root"]), result["query"]
        if "index" in q:
            query = TileInfo(q["index"], str(root / q["path"]),
                             f"#{q['index']}" + (f"\n{q['class']}" if q.get("class") else ""),
                             q["path"])
            name = Path(q["path"]).name
        else:
            query = TileInfo(None, q["file"], "dropped file", q["file"])
            name = Path(q["file"]).name
        tiles = [TileInfo(n["index"], str(root / n["path"]),
                          f"{n['score']:.3f}" + (f"\n{n['class']}" if n["class"] else ""),
                          f"#{n['index']} {n['path']}\ncosine similarity {n['score']:.4f}"
                          + (f"\nclass {n['class']}" if n["class"] else ""))
                 for n in result["neighbours"]]
        title = (f"{len(tiles)} nearest neighbours of {name} ({result['checkpoint']}, "
                 f"{result['space']}) by cosine similarity")
        self.show_result(title, query, tiles)
        return title

    def show_message(self, text: str, *, error: bool = False, clear: bool = False) -> None:
        set_role(self.title, "error" if error else "")
        self.title.setText(text)
        if clear:
            self.query.set_tiles([])
            self.grid.set_tiles([])
            self._shown = ([], "")
            self.select_button.setEnabled(False)

    def _on_select(self) -> None:
        indices, what = self._shown
        if indices:
            self.select_requested.emit(list(indices), what)

    # --- drag and drop -------------------------------------------------------------------

    @staticmethod
    def _dropped_file(mime) -> str | None:
        for url in mime.urls() if mime.hasUrls() else []:
            if url.isLocalFile() and Path(url.toLocalFile()).is_file():
                return url.toLocalFile()
        return None

    def dragEnterEvent(self, event) -> None:
        if self._dropped_file(event.mimeData()) is not None:
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        path = self._dropped_file(event.mimeData())
        if path is not None:
            event.acceptProposedAction()
            self.file_dropped.emit(path)
