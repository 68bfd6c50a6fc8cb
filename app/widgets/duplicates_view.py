"""The duplicates view: groups of near-duplicate images as rows of thumbnails, and a
threshold to move.

The engine (``duplicates``) lists every pair it found (engine.evaluate.curate.listed_pairs);
moving the threshold at or above the one the pairs were found from regroups them here at
once (app.model.curation.regroup); below it, "Find at this threshold" asks the engine
again. The groups are one list view with a delegate that paints each row's thumbnails:
thousands of groups cost no widget each.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import (
    QAbstractListModel,
    QEvent,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QRect,
    QSize,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QPushButton,
    QSlider,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from app.model.curation import CurationImages, DuplicateGroups, DuplicatePairs
from app.widgets.curation_view import CurationView
from app.widgets.image_grid import ThumbnailRequests, placeholder
from app.widgets.neighbours_panel import ThumbnailCache
from engine.evaluate.curate import split_of

GROUP_PX = 56
#: Steps of the threshold slider between its lowest value and 1.
SLIDER_STEPS = 1000
#: The slider reaches this far below the similarity the pairs were found from.
SLIDER_BELOW = 0.05
#: While the slider is dragged, the groups follow this long after it stops moving (a regroup
#: of 200,000 pairs over 100,000 images takes about 50 ms).
DRAG_MS = 60
#: "Find at this threshold" also lists the pairs this far below it (to move down again).
FIND_BELOW = 0.02
CROSS_CLASS_COLOUR = "#e08a00"
MEMBERS_ROLE = Qt.UserRole + 1


class GroupListModel(QAbstractListModel):
    """One row per duplicate group: its caption and its members' thumbnails."""

    def __init__(self, thumbnails: ThumbnailCache, px: int = GROUP_PX,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.px = px
        self.requests = ThumbnailRequests(thumbnails, px, self._on_thumbnails, self)
        self.placeholder = placeholder(px)
        self.failed = placeholder(px, "#c6282855")
        self.groups: DuplicateGroups | None = None
        self.images: CurationImages | None = None

    def set_groups(self, groups: DuplicateGroups | None, images: CurationImages | None) -> None:
        self.beginResetModel()
        self.requests.reset()
        self.groups, self.images = groups, images
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() or self.groups is None else len(self.groups)

    def members(self, row: int) -> np.ndarray:
        return self.groups.group(row) if self.groups is not None else np.zeros(0, np.int64)

    def path(self, i: int) -> str:
        return self.images.absolute_path(int(i)) if self.images is not None else ""

    def pixmap(self, i: int, row: int):
        path = self.path(i)
        pixmap = self.requests.pixmap(path, row)
        if pixmap is not None:
            return pixmap
        return self.failed if self.requests.reason(path) is not None else self.placeholder

    def classes_of(self, row: int) -> list[str]:
        if self.images is None:
            return []
        names = {self.images.class_name(int(i)) for i in self.members(row)}
        return sorted(n for n in names if n)

    def caption(self, row: int) -> str:
        g = self.groups
        text = (f"{len(self.members(row))} images, similarity "
                f"{g.min_similarity[row]:.4f}-{g.max_similarity[row]:.4f}")
        if g.cross_class[row]:
            text += ", across classes " + "/".join(self.classes_of(row))
        if self.images is not None:
            splits = {split_of(self.images.paths[int(i)]) for i in self.members(row)} - {None}
            if len(splits) > 1:
                text += ", across splits " + "/".join(sorted(splits)) + " (a leak)"
        return text

    def data(self, index: QModelIndex | QPersistentModelIndex,
             role: int = Qt.DisplayRole) -> object:
        row = index.row()
        if not index.isValid() or self.groups is None or not 0 <= row < len(self.groups):
            return None
        if role == Qt.DisplayRole:
            return self.caption(row)
        if role == Qt.ToolTipRole:
            members = self.members(row)
            lines = [f"#{i} {self.images.paths[i]}" if self.images else f"#{i}"
                     for i in members[:20].tolist()]
            more = [f"... {len(members) - 20} more"] if len(members) > 20 else []
            return "\n".join([self.caption(row), "kept: the first", *lines, *more])
        if role == MEMBERS_ROLE:
            return self.members(row)
        return None

    def _on_thumbnails(self, rows: list[int]) -> None:
        for row in rows:
            if row < self.rowCount():
                at = self.index(row)
                self.dataChanged.emit(at, at, [Qt.DecorationRole])


class GroupDelegate(QStyledItemDelegate):
    """Paints a group: its caption over its members' thumbnails (as many as fit the width,
    the last slot counting the others); a click on a thumbnail reports that image.

    Signals:
        member_clicked(int): the image index of a clicked thumbnail.
    """

    member_clicked = Signal(int)
    GAP = 4

    def __init__(self, model: GroupListModel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.model = model

    def _caption_height(self, option: QStyleOptionViewItem) -> int:
        return option.fontMetrics.height() + 4

    def sizeHint(self, option: QStyleOptionViewItem,
                 index: QModelIndex | QPersistentModelIndex) -> QSize:
        return QSize(200, self._caption_height(option) + self.model.px + 2 * self.GAP)

    def _slots(self, rect: QRect) -> int:
        return max(1, (rect.width() - 2 * self.GAP) // (self.model.px + self.GAP))

    def _slot_rect(self, option: QStyleOptionViewItem, k: int) -> QRect:
        px = self.model.px
        return QRect(option.rect.left() + self.GAP + k * (px + self.GAP),
                     option.rect.top() + self._caption_height(option) + self.GAP, px, px)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem,
              index: QModelIndex | QPersistentModelIndex) -> None:
        row = index.row()
        style = option.widget.style() if option.widget else QApplication.style()
        style.drawPrimitive(QStyle.PE_PanelItemViewItem, option, painter, option.widget)
        painter.save()
        groups = self.model.groups
        if groups is not None and groups.cross_class[row]:
            painter.fillRect(QRect(option.rect.left(), option.rect.top(), 3,
                                   option.rect.height()), QColor(CROSS_CLASS_COLOUR))
            painter.setPen(QColor(CROSS_CLASS_COLOUR))
        text_rect = QRect(option.rect.left() + self.GAP, option.rect.top() + 2,
                          option.rect.width() - 2 * self.GAP, self._caption_height(option))
        painter.drawText(text_rect, Qt.AlignLeft | Qt.AlignVCenter,
                         option.fontMetrics.elidedText(self.model.caption(row), Qt.ElideRight,
                                                       text_rect.width()))
        members = self.model.members(row)
        slots = self._slots(option.rect)
        shown = members if len(members) <= slots else members[:slots - 1]
        for k, i in enumerate(shown.tolist()):
            painter.drawPixmap(self._slot_rect(option, k), self.model.pixmap(i, row))
        if len(shown) < len(members):
            painter.setPen(option.palette.text().color())
            painter.drawText(self._slot_rect(option, len(shown)), Qt.AlignCenter,
                             f"+{len(members) - len(shown)}")
        painter.restore()

    def member_at(self, option: QStyleOptionViewItem, row: int, x: int, y: int) -> int | None:
        """The image index whose thumbnail is at (x, y) in the row, or None."""
        members = self.model.members(row)
        slots = self._slots(option.rect)
        shown = len(members) if len(members) <= slots else slots - 1
        for k in range(shown):
            if self._slot_rect(option, k).contains(x, y):
                return int(members[k])
        return None

    def editorEvent(self, event: QEvent, model: QAbstractListModel,
                    option: QStyleOptionViewItem,
                    index: QModelIndex | QPersistentModelIndex) -> bool:
        if event.type() == QEvent.MouseButtonRelease and event.button() == Qt.LeftButton:
            pos = event.position().toPoint()
            member = self.member_at(option, index.row(), pos.x(), pos.y())
            if member is not None:
                self.member_clicked.emit(member)
        return super().editorEvent(event, model, option, index)


class DuplicatesView(CurationView):
    """Near-duplicate groups (``duplicates``) with a threshold slider and spin box that
    regroup at once from the pairs the engine listed.

    Signals: those of :class:`~app.widgets.curation_view.CurationView`.
    """

    kind = "duplicates"

    def __init__(self, thumbnails: ThumbnailCache, parent: QWidget | None = None) -> None:
        super().__init__("Find duplicates", "Ask the engine for every pair of images at least "
                         "as similar as the threshold (by default one relative to the "
                         "folder), joined into groups.", parent)
        self.pairs: DuplicatePairs | None = None
        self.images: CurationImages | None = None
        self.groups: DuplicateGroups | None = None
        self._slider_low = 0.0
        self._threshold = 1.0
        self._syncing = False
        self.model = GroupListModel(thumbnails)
        self.delegate = GroupDelegate(self.model, self)
        self.delegate.member_clicked.connect(self.image_activated)
        self.list = QListView()
        self.list.setModel(self.model)
        self.list.setItemDelegate(self.delegate)
        self.list.setUniformItemSizes(True)
        self.list.setSelectionMode(QAbstractItemView.SingleSelection)
        self.list.setVerticalScrollMode(QAbstractItemView.ScrollPerPixel)
        self.list.selectionModel().currentRowChanged.connect(lambda *_: self._update_buttons())
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(0, SLIDER_STEPS)
        self.slider.setToolTip("Cosine similarity from which two images count as "
                               "near-duplicates: the groups follow at once.")
        self.slider.valueChanged.connect(self._on_slider)
        self.slider.sliderReleased.connect(self._regroup_now)
        self._drag_timer = QTimer(self)  # while dragging: regroup at the latest value only
        self._drag_timer.setSingleShot(True)
        self._drag_timer.setInterval(DRAG_MS)
        self._drag_timer.timeout.connect(self._regroup_now)
        self.spin = QDoubleSpinBox()
        self.spin.setRange(-1.0, 1.0)
        self.spin.setDecimals(6)
        self.spin.setSingleStep(0.001)
        self.spin.setToolTip(self.slider.toolTip())
        self.spin.valueChanged.connect(self._on_spin)
        self.find_here = QPushButton("Find at this threshold")
        self.find_here.setToolTip("The pairs were found from a higher similarity: ask the "
                                  "engine again at this threshold.")
        self.find_here.clicked.connect(self._on_find_here)
        self.select_redundant = QPushButton("Select redundant")
        self.select_redundant.setToolTip("Select every member but the kept (first) one of "
                                         "each group.")
        self.select_redundant.clicked.connect(
            lambda: self.select_requested.emit(self.redundant(), "duplicates: redundant"))
        self.tag_redundant = QPushButton("Tag redundant…")
        self.tag_redundant.setToolTip("Tag every member but the kept (first) one of each group "
                                      "(to leave them out of a subset).")
        self.tag_redundant.clicked.connect(
            lambda: self.tag_requested.emit(self.redundant(), "duplicate"))
        self.select_group = QPushButton("Select group")
        self.select_group.setToolTip("Select the members of the current group.")
        self.select_group.clicked.connect(self._on_select_group)

        top = QHBoxLayout()
        top.addWidget(self.run_button)
        top.addWidget(QLabel("Threshold"))
        top.addWidget(self.slider, 1)
        top.addWidget(self.spin)
        top.addWidget(self.find_here)
        buttons = QHBoxLayout()
        for button in (self.select_redundant, self.tag_redundant, self.select_group):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.summary)
        layout.addWidget(self.list, 1)
        layout.addLayout(buttons)
        self.clear("Press Find duplicates to look for near-duplicate images.")

    # --- public ----------------------------------------------------------------------------

    def show_data(self, pairs: DuplicatePairs, images: CurationImages | None) -> None:
        """Show a duplicates result's pairs, grouped at its own threshold."""
        self.pairs, self.images = pairs, images
        self._slider_low = max(-1.0, min(pairs.start, pairs.threshold) - SLIDER_BELOW)
        self.set_threshold(pairs.threshold)

    def clear(self, text: str = "") -> None:
        self.pairs = self.groups = None
        self.model.set_groups(None, None)
        super().clear(text)
        self._update_buttons()

    def has_data(self) -> bool:
        return self.pairs is not None

    def threshold(self) -> float:
        return self._threshold

    def set_threshold(self, threshold: float) -> None:
        """Move the threshold (slider and spin box) and regroup, or say that the engine
        must search again below the pairs' start."""
        self._threshold = round(float(threshold), 6)
        self._syncing = True
        try:
            self.spin.setValue(self._threshold)
            self.slider.setValue(self._slider_step(self._threshold))
        finally:
            self._syncing = False
        self._regroup(self._threshold)

    def redundant(self) -> np.ndarray:
        """Every member but the kept one of each group shown (sorted image indices)."""
        return self.groups.redundant() if self.groups is not None else np.zeros(0, np.int64)

    def current_group(self) -> np.ndarray | None:
        row = self.list.currentIndex().row()
        return self.model.members(row) if self.groups is not None and row >= 0 else None

    # --- handlers --------------------------------------------------------------------------

    def _slider_step(self, threshold: float) -> int:
        span = max(1e-9, 1.0 - self._slider_low)
        return int(round(np.clip((threshold - self._slider_low) / span, 0, 1) * SLIDER_STEPS))

    def _on_slider(self, step: int) -> None:
        if self._syncing:
            return
        self._threshold = round(self._slider_low + (1.0 - self._slider_low) * step
                                / SLIDER_STEPS, 6)
        self._syncing = True
        try:
            self.spin.setValue(self._threshold)
        finally:
            self._syncing = False
        if self.slider.isSliderDown():
            self._drag_timer.start()
        else:
            self._regroup(self._threshold)

    def _regroup_now(self) -> None:
        self._drag_timer.stop()
        self._regroup(self._threshold)

    def _on_spin(self, value: float) -> None:
        if self._syncing:
            return
        self._threshold = round(float(value), 6)
        self._syncing = True
        try:
            self.slider.setValue(self._slider_step(value))
        finally:
            self._syncing = False
        self._regroup(self._threshold)

    def _regroup(self, threshold: float) -> None:
        pairs = self.pairs
        if pairs is None:
            return
        if not pairs.can_regroup(threshold):
            self.groups = None
            self.model.set_groups(None, self.images)
            found = (f"The pairs were found from similarity {pairs.start:.4f}"
                     if np.isfinite(pairs.start) else "This result holds no list of pairs")
            self.show_message(f"{found}: press Find at this threshold to search from "
                              f"{threshold:.4f}.")
            self._update_buttons()
            return
        labels = self.images.labels if self.images is not None else None
        self.groups = pairs.groups(threshold, labels)
        self.model.set_groups(self.groups, self.images)
        groups = self.groups
        text = (f"{len(groups):,} groups at similarity >= {threshold:.4f}: "
                f"{len(groups.members) - len(groups):,} redundant images, "
                f"{int(groups.cross_class.sum()):,} groups across classes (marked).")
        if pairs.message:
            text += f" {pairs.message}."
        self.show_message(text)
        self._update_buttons()

    def _on_find_here(self) -> None:
        t = self.threshold()
        self.run_requested.emit(["--threshold", f"{t:.6g}", "--min-threshold",
                                 f"{max(-1.0, t - FIND_BELOW):.6g}"])

    def _on_select_group(self) -> None:
        members = self.current_group()
        if members is not None:
            row = self.list.currentIndex().row()
            self.select_requested.emit(members.copy(), f"duplicates: group {row + 1}")

    def _update_buttons(self) -> None:
        super()._update_buttons()
        if not hasattr(self, "select_group"):
            return  # (during construction)
        has_pairs = self.pairs is not None
        has_groups = self.groups is not None and len(self.groups) > 0
        self.slider.setEnabled(has_pairs)
        self.spin.setEnabled(has_pairs)
        self.find_here.setEnabled(self._ready and not self._busy and has_pairs
                                  and not self.pairs.can_regroup(self.threshold()))
        self.select_redundant.setEnabled(has_groups)
        self.tag_redundant.setEnabled(has_groups)
        self.select_group.setEnabled(has_groups and self.list.currentIndex().isValid())
