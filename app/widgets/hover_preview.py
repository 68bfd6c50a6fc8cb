"""The image of the map point under the mouse: a tooltip at the cursor (thumbnail, file
name, class) and a line beside the neighbours (thumbnail, index, path, class)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QGuiApplication, QPixmap
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from app.model.explore_data import MapData
from app.widgets.neighbours_panel import THUMBNAIL_PX, ThumbnailCache

#: Where the tooltip sits from the cursor (right and below, clear of the pointer).
TIP_OFFSET = QPoint(18, 18)


class HoverPreview(QWidget):
    """The image of the map point under the mouse: its thumbnail, index, path and class."""

    def __init__(self, thumbnails: ThumbnailCache, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.thumbnails = thumbnails
        self.thumbnails.ready.connect(self._on_thumbnail)
        self._path = ""
        self.image = QLabel()
        self.image.setFixedSize(THUMBNAIL_PX, THUMBNAIL_PX)
        self.image.setScaledContents(True)
        self.text = QLabel("Hover over a point to see its image.")
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextSelectableByMouse)
        # a long path without spaces cannot wrap: it is cut instead of widening the panel
        self.text.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.image)
        layout.addWidget(self.text, 1)

    def show_point(self, data: MapData, index: int) -> None:
        """Show image ``index`` of ``data``; its thumbnail comes when it is decoded."""
        self._path = data.absolute_path(index)
        name = data.class_name(index)
        self.text.setText(f"#{index} {data.paths[index]}" + (f"\n{name}" if name else ""))
        self.text.setToolTip(data.paths[index])
        self._on_thumbnail(self._path)

    def _on_thumbnail(self, path: str) -> None:
        if path == self._path:
            image = self.thumbnails.get(path)
            self.image.setPixmap(QPixmap.fromImage(image) if image else QPixmap())


class HoverTip(QFrame):
    """A small tooltip window beside the cursor: the hovered image's thumbnail, its file
    name and its class. It never takes focus or the mouse; :meth:`hide` when the mouse
    leaves the points."""

    def __init__(self, thumbnails: ThumbnailCache, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.ToolTip | Qt.FramelessWindowHint)
        self.setAttribute(Qt.WA_ShowWithoutActivating)
        self.setAttribute(Qt.WA_TransparentForMouseEvents)
        self.setFrameShape(QFrame.Box)
        self.setObjectName("hoverTip")
        self.thumbnails = thumbnails
        self.thumbnails.ready.connect(self._on_thumbnail)
        self._path = ""
        self.image = QLabel()
        self.image.setFixedSize(THUMBNAIL_PX, THUMBNAIL_PX)
        self.image.setScaledContents(True)
        self.image.setAlignment(Qt.AlignCenter)
        self.name = QLabel()
        self.name.setAlignment(Qt.AlignCenter)
        self.name.setMaximumWidth(2 * THUMBNAIL_PX)
        self.name.setWordWrap(True)
        self.class_label = QLabel()
        self.class_label.setAlignment(Qt.AlignCenter)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(2)
        layout.addWidget(self.image, 0, Qt.AlignHCenter)
        layout.addWidget(self.name)
        layout.addWidget(self.class_label)

    def show_point(self, data: MapData, index: int, at: QPoint) -> None:
        """Show image ``index`` of ``data`` beside the global position ``at`` (the cursor),
        kept on the screen."""
        self._path = data.absolute_path(index)
        self.name.setText(Path(data.paths[index]).name)
        name = data.class_name(index)
        self.class_label.setText(name or "")
        self.class_label.setVisible(bool(name))
        self.image.setText("…")
        self._on_thumbnail(self._path)
        self.adjustSize()
        pos = at + TIP_OFFSET
        screen = QGuiApplication.screenAt(at) or QGuiApplication.primaryScreen()
        if screen is not None:
            area = screen.availableGeometry()
            if pos.x() + self.width() > area.right():
                pos.setX(at.x() - TIP_OFFSET.x() - self.width())
            if pos.y() + self.height() > area.bottom():
                pos.setY(at.y() - TIP_OFFSET.y() - self.height())
        self.move(pos)
        self.show()
        self.raise_()

    def _on_thumbnail(self, path: str) -> None:
        if path == self._path:
            image = self.thumbnails.get(path)
            if image is not None:
                self.image.setPixmap(QPixmap.fromImage(image))
