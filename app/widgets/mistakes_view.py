"""The label mistakes view: images whose nearest labelled neighbours vote for another class
than their folder's (``mistakes``), most confident first, in a sortable table with a check
box per row."""

from __future__ import annotations

from pathlib import PurePath

import numpy as np
from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSize,
    Qt,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.model.curation import CurationImages, LabelSuspects
from app.widgets.curation_view import CurationView
from app.widgets.image_grid import ThumbnailRequests, placeholder
from app.widgets.neighbours_panel import ThumbnailCache

ROW_PX = 40
COLUMNS = ("", "File", "Folder class", "Suggested", "Confidence")
THUMB, FILE, CLASS, SUGGESTED, CONFIDENCE = range(5)


class SuspectsModel(QAbstractTableModel):
    """The suspects as table rows (in ``order``, a permutation of the suspects), each with a
    check box; sorting reorders with numpy (no comparison through Qt per pair)."""

    def __init__(self, thumbnails: ThumbnailCache, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.requests = ThumbnailRequests(thumbnails, ROW_PX, self._on_thumbnails, self)
        self.placeholder = placeholder(ROW_PX)
        self.failed = placeholder(ROW_PX, "#c6282855")
        self.suspects: LabelSuspects | None = None
        self.images: CurationImages | None = None
        self.order = np.zeros(0, np.int64)
        self.checked = np.zeros(0, bool)

    def set_suspects(self, suspects: LabelSuspects | None,
                     images: CurationImages | None) -> None:
        self.beginResetModel()
        self.requests.reset()
        self.suspects, self.images = suspects, images
        n = len(suspects.index) if suspects is not None else 0
        self.order = np.arange(n)  # the engine's order: most confident first
        self.checked = np.zeros(n, bool)
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.order)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def image_index(self, row: int) -> int:
        return int(self.suspects.index[self.order[row]])

    def _path(self, i: int) -> str:
        return self.images.paths[i] if self.images is not None else f"#{i}"

    def _class(self, i: int) -> str:
        name = self.images.class_name(i) if self.images is not None else None
        return name or ""

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.DisplayRole) -> object:
        if orientation == Qt.Horizontal and role == Qt.DisplayRole:
            return COLUMNS[section]
        return None

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        flags = super().flags(index)
        return flags | Qt.ItemIsUserCheckable if index.column() == THUMB else flags

    def data(self, index: QModelIndex | QPersistentModelIndex,
             role: int = Qt.DisplayRole) -> object:
        row, column = index.row(), index.column()
        if not index.isValid() or self.suspects is None or not 0 <= row < len(self.order):
            return None
        s = int(self.order[row])
        i = int(self.suspects.index[s])
        if column == THUMB:
            if role == Qt.CheckStateRole:
                return Qt.Checked if self.checked[s] else Qt.Unchecked
            if role == Qt.DecorationRole and self.images is not None:
                path = self.images.absolute_path(i)
                pixmap = self.requests.pixmap(path, row)
                if pixmap is not None:
                    return pixmap
                return self.failed if self.requests.reason(path) else self.placeholder
            return None
        if role == Qt.DisplayRole:
            if column == FILE:
                return PurePath(self._path(i)).name
            if column == CLASS:
                return self._class(i)
            if column == SUGGESTED:
                return self.suspects.suggested[s]
            return f"{100 * self.suspects.confidence[s]:.0f}%"
        if role == Qt.ToolTipRole:
            return (f"#{i} {self._path(i)}\nin folder {self._class(i) or '-'}; "
                    f"{100 * self.suspects.confidence[s]:.1f}% of the neighbours' vote for "
                    f"{self.suspects.suggested[s]}")
        if role == Qt.TextAlignmentRole and column == CONFIDENCE:
            return int(Qt.AlignRight | Qt.AlignVCenter)
        return None

    def setData(self, index: QModelIndex | QPersistentModelIndex, value: object,
                role: int = Qt.EditRole) -> bool:
        if role != Qt.CheckStateRole or index.column() != THUMB or self.suspects is None:
            return False
        state = value.value if hasattr(value, "value") else value
        self.checked[self.order[index.row()]] = state == Qt.Checked.value
        self.dataChanged.emit(index, index, [Qt.CheckStateRole])
        return True

    def sort(self, column: int, order: Qt.SortOrder = Qt.AscendingOrder) -> None:
        if self.suspects is None:
            return
        n = len(self.suspects.index)
        if column in (THUMB, CONFIDENCE):
            key: np.ndarray = self.suspects.confidence
        elif column == FILE:
            key = np.array([PurePath(self._path(int(i))).name for i in self.suspects.index])
        elif column == CLASS:
            key = np.array([self._class(int(i)) for i in self.suspects.index])
        else:
            key = np.array(self.suspects.suggested)
        if n == 0:
            return
        rank = np.unique(key, return_inverse=True)[1].ravel()
        if order == Qt.DescendingOrder:
            rank = -rank  # ties keep the engine's order either way
        self.layoutAboutToBeChanged.emit()
        self.requests.reset()
        before = self.persistentIndexList()  # the view's current row and selection
        suspects = [int(self.order[i.row()]) for i in before]
        self.order = np.argsort(rank, kind="stable")
        row_of = np.empty(n, np.int64)
        row_of[self.order] = np.arange(n)
        self.changePersistentIndexList(before, [self.index(int(row_of[s]), i.column())
                                                for s, i in zip(suspects, before)])
        self.layoutChanged.emit()

    def checked_indices(self) -> np.ndarray:
        if self.suspects is None:
            return np.zeros(0, np.int64)
        return np.sort(self.suspects.index[self.checked])

    def _on_thumbnails(self, rows: list[int]) -> None:
        for row in rows:
            if row < self.rowCount():
                at = self.index(row, THUMB)
                self.dataChanged.emit(at, at, [Qt.DecorationRole])


class MistakesView(CurationView):
    """Likely label mistakes (``mistakes``): thumbnail, file name, folder class, suggested
    class and the share of the vote, most confident first; sortable by any column.

    Signals: those of :class:`~app.widgets.curation_view.CurationView`; scores_ready is
    ("mistakes", the confidence of each image, 0 for those not suspected).
    """

    kind = "mistakes"

    def __init__(self, thumbnails: ThumbnailCache, parent: QWidget | None = None) -> None:
        super().__init__("Find label mistakes", "Ask the engine which images' nearest "
                         "neighbours vote for another class than their folder's.", parent)
        self.suspects: LabelSuspects | None = None
        self.model = SuspectsModel(thumbnails, self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(CONFIDENCE, Qt.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setIconSize(QSize(ROW_PX, ROW_PX))
        self.table.verticalHeader().setDefaultSectionSize(ROW_PX + 4)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(FILE, QHeaderView.Stretch)
        header.resizeSection(THUMB, ROW_PX + 36)
        self.table.clicked.connect(self._on_clicked)
        self.select_all = QPushButton("Select all")
        self.select_all.setToolTip("Select every suspected image.")
        self.select_all.clicked.connect(lambda: self.select_requested.emit(
            self.all_indices(), "mistakes: all"))
        self.select_checked = QPushButton("Select checked")
        self.select_checked.clicked.connect(lambda: self.select_requested.emit(
            self.model.checked_indices(), "mistakes: checked"))
        self.tag_button = QPushButton("Tag…")
        self.tag_button.setToolTip("Tag the checked images (every suspect when none is "
                                   "checked), to look at their labels later.")
        self.tag_button.clicked.connect(lambda: self.tag_requested.emit(
            self.tag_indices(), "check label"))
        top = QHBoxLayout()
        top.addWidget(self.run_button)
        top.addStretch(1)
        buttons = QHBoxLayout()
        for button in (self.select_all, self.select_checked, self.tag_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        self.model.dataChanged.connect(lambda *_: self._update_buttons())
        self.clear("Press Find label mistakes to check the folder's classes.")

    def show_data(self, suspects: LabelSuspects, images: CurationImages | None) -> None:
        """Show a mistakes result (and the confidences go out)."""
        self.suspects = suspects
        self.model.set_suspects(suspects, images)
        self.table.sortByColumn(CONFIDENCE, Qt.DescendingOrder)
        labelled = int((images.labels >= 0).sum()) if images is not None else suspects.n
        self.show_message(f"{len(suspects.index):,} of {labelled:,} labelled images look filed "
                          f"in the wrong class (k = {suspects.k}); the confidence is the "
                          "share of the neighbours' vote for the suggested class.")
        self.scores_ready.emit("mistakes", suspects.confidence_per_image())
        self._update_buttons()

    def clear(self, text: str = "") -> None:
        self.suspects = None
        self.model.set_suspects(None, None)
        super().clear(text)
        self._update_buttons()

    def has_data(self) -> bool:
        return self.suspects is not None

    def all_indices(self) -> np.ndarray:
        return (np.sort(self.suspects.index) if self.suspects is not None
                else np.zeros(0, np.int64))

    def tag_indices(self) -> np.ndarray:
        checked = self.model.checked_indices()
        return checked if len(checked) else self.all_indices()

    def set_checked(self, rows: list[int], checked: bool = True) -> None:
        """Check (or uncheck) these table rows."""
        for row in rows:
            self.model.setData(self.model.index(row, THUMB),
                               Qt.Checked if checked else Qt.Unchecked, Qt.CheckStateRole)

    def _on_clicked(self, index: QModelIndex) -> None:
        if index.isValid() and index.column() != THUMB:
            self.image_activated.emit(self.model.image_index(index.row()))

    def _update_buttons(self) -> None:
        super()._update_buttons()
        if not hasattr(self, "tag_button"):
            return  # (during construction)
        has = self.suspects is not None and len(self.suspects.index) > 0
        self.select_all.setEnabled(has)
        self.tag_button.setEnabled(has)
        self.select_checked.setEnabled(has and bool(self.model.checked.any()))
