"""The grid of positive pairs: a row per image, original | view 1 | view 2."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPainter, QPixmap
from PySide6.QtWidgets import QGridLayout, QLabel, QScrollArea, QWidget

_GAP = 4  # pixels between cells in the saved image


def to_qimage(array: np.ndarray) -> QImage:
    """uint8 (H, W, 3) RGB -> a QImage that owns a copy of the pixels."""
    array = np.ascontiguousarray(array)
    h, w, _ = array.shape
    return QImage(array.data, w, h, 3 * w, QImage.Format_RGB888).copy()


class PairGrid(QScrollArea):
    """Originals and their two views, each cell ``cell_px`` square, under a title row."""

    def __init__(self, cell_px: int = 128, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cell_px = cell_px
        self.grid_widget = QWidget()
        self.grid_layout = QGridLayout(self.grid_widget)
        self._cells: list[list[QLabel]] = []
        self.setWidget(self.grid_widget)
        self.setWidgetResizable(True)

    def show_pairs(self, pairs: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        """Show (originals, view 1, view 2), each uint8 (N, side, side, 3)."""
        n = len(pairs[0])
        if len(self._cells) != n:
            self._build_grid(n)
        for r in range(n):
            for c in range(3):
                self._cells[r][c].setPixmap(self._cell_pixmap(pairs[c][r]))

    def image(self) -> QImage:
        """The grid as one image: a row per image, original | view 1 | view 2, each cell
        ``cell_px`` square with a 4 px gap."""
        rows = len(self._cells)
        side = self.cell_px
        image = QImage(max(1, 3 * side + 2 * _GAP), max(1, rows * side + (rows - 1) * _GAP),
                       QImage.Format_RGB32)
        image.fill(Qt.white)
        painter = QPainter(image)
        for r, cells in enumerate(self._cells):
            for c, label in enumerate(cells):
                painter.drawPixmap(c * (side + _GAP), r * (side + _GAP), label.pixmap())
        painter.end()
        return image

    def _build_grid(self, rows: int) -> None:
        self.grid_widget = QWidget()
        self.grid_layout = QGridLayout(self.grid_widget)
        for c, title in enumerate(("original", "view 1", "view 2")):
            self.grid_layout.addWidget(QLabel(title, alignment=Qt.AlignCenter), 0, c)
        self._cells = []
        for r in range(rows):
            cells = [QLabel() for _ in range(3)]
            for c, cell in enumerate(cells):
                cell.setFixedSize(self.cell_px, self.cell_px)
                self.grid_layout.addWidget(cell, r + 1, c)
            self._cells.append(cells)
        self.grid_layout.setAlignment(Qt.AlignTop | Qt.AlignLeft)
        self.setWidget(self.grid_widget)  # deletes the previous grid

    def _cell_pixmap(self, array: np.ndarray) -> QPixmap:
        image = to_qimage(array)
        # Enlarging small views shows their real pixels; shrinking is smoothed.
        mode = Qt.FastTransformation if image.width() <= self.cell_px else \
            Qt.SmoothTransformation
        return QPixmap.fromImage(image.scaled(self.cell_px, self.cell_px,
                                              Qt.IgnoreAspectRatio, mode))
