"""The bar above the Explore page's map that acts on the selection: what is selected, select
by class or tag, tag the selection, export it, and retrain on it or without it.

The bar holds no images; it shows :class:`app.model.selection.Selection`'s count and source
and says what the person asked for through its signals. The page does the work.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.model.selection import ADD, INTERSECT, REMOVE, REPLACE, Selection

#: The choices of how "Select" combines with the selection, as the combo shows them.
MODE_NAMES = ((REPLACE, "Select"), (ADD, "Add"), (REMOVE, "Remove"), (INTERSECT, "Keep only"))
DEFAULT_TAG = "keep"


class SelectionBar(QWidget):
    """Selection count and actions.

    Signals:
        select_class(str, str): select the images of a class (name, selection mode).
        select_tag(str, str): select the images with a tag (name, selection mode).
        clear_requested(): empty the selection.
        invert_requested(): select every image that is not selected, and only those.
        tag_requested(str): tag the selected images with this name.
        untag_requested(str): take this tag off the selected images.
        export_requested(): write the selected images out (a folder or a list).
        retrain_requested(bool): train a new run on the selected images (True) or on all
            images but them (False).
    """

    select_class = Signal(str, str)
    select_tag = Signal(str, str)
    clear_requested = Signal()
    invert_requested = Signal()
    tag_requested = Signal(str)
    untag_requested = Signal(str)
    export_requested = Signal()
    retrain_requested = Signal(bool)

    def __init__(self, selection: Selection, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.selection = selection
        self._total = 0
        self.count_label = QLabel()
        self.mode_box = QComboBox()
        for mode, name in MODE_NAMES:
            self.mode_box.addItem(name, mode)
        self.mode_box.setToolTip("How choosing a class or a tag changes the selection: a new "
                                 "selection, add to it, remove from it, or keep only the "
                                 "images in both. (On the map: drag selects; Shift+drag adds, "
                                 "Ctrl+drag removes.)")
        self.class_box = QComboBox()
        self.class_box.setToolTip("Select the images of a class folder.")
        self.class_box.activated.connect(self._on_class)
        self.tag_select_box = QComboBox()
        self.tag_select_box.setToolTip("Select the images with a tag.")
        self.tag_select_box.activated.connect(self._on_tag_select)
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Select nothing.")
        self.clear_button.clicked.connect(self.clear_requested)
        self.invert_button = QPushButton("Invert")
        self.invert_button.setToolTip("Select every image that is not selected now.")
        self.invert_button.clicked.connect(self.invert_requested)

        self.tag_name = QComboBox()
        self.tag_name.setEditable(True)
        self.tag_name.setMinimumContentsLength(10)
        self.tag_name.setToolTip("A tag name: type a new one or pick one the run has. Tags are "
                                 "saved in the run folder (tags.json) by path and content, so "
                                 "a renamed folder keeps them.")
        self.tag_name.lineEdit().setPlaceholderText("tag name")
        self.tag_button = QPushButton("Tag")
        self.tag_button.setToolTip("Tag the selected images with this name.")
        self.tag_button.clicked.connect(lambda: self._emit_tag(self.tag_requested))
        self.untag_button = QPushButton("Untag")
        self.untag_button.setToolTip("Take this tag off the selected images.")
        self.untag_button.clicked.connect(lambda: self._emit_tag(self.untag_requested))
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Write the selected images out: a copied or linked "
                                      "folder (class sub-folders kept) or a list of paths.")
        self.export_button.clicked.connect(self.export_requested)
        self.retrain_button = QPushButton("Retrain on these")
        self.retrain_button.setToolTip("Start a new run with this run's settings on the "
                                       "selected images only (the new run keeps their list).")
        self.retrain_button.clicked.connect(lambda: self.retrain_requested.emit(True))
        self.without_button = QPushButton("Retrain without these")
        self.without_button.setToolTip("Start a new run with this run's settings on every "
                                       "image but the selected ones (e.g. without the "
                                       "duplicates or the mislabelled).")
        self.without_button.clicked.connect(lambda: self.retrain_requested.emit(False))

        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(self.count_label, 1)
        top.addWidget(self.mode_box)
        top.addWidget(QLabel("class"))
        top.addWidget(self.class_box)
        top.addWidget(QLabel("tag"))
        top.addWidget(self.tag_select_box)
        top.addWidget(self.clear_button)
        top.addWidget(self.invert_button)
        bottom = QHBoxLayout()
        bottom.setContentsMargins(0, 0, 0, 0)
        bottom.addWidget(self.tag_name, 1)
        for button in (self.tag_button, self.untag_button, self.export_button,
                       self.retrain_button, self.without_button):
            bottom.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addLayout(bottom)
        selection.changed.connect(self._update)
        self.set_classes([])
        self.set_tags({})

    # --- what the page tells the bar -------------------------------------------------------

    def set_total(self, n: int) -> None:
        """How many images the map has (for "12 of 1,000 selected")."""
        self._total = int(n)
        self._update()

    def set_classes(self, names: list[str]) -> None:
        self.class_box.clear()
        self.class_box.addItem("choose…", None)
        for name in names:
            self.class_box.addItem(name, name)
        self.class_box.setEnabled(bool(names))

    def set_tags(self, counts: dict[str, int]) -> None:
        """The run's tags with their image counts (on this map)."""
        typed = self.tag_name.currentText()
        self.tag_select_box.clear()
        self.tag_select_box.addItem("choose…", None)
        self.tag_name.clear()
        for name, count in sorted(counts.items()):
            self.tag_select_box.addItem(f"{name} ({count:,})", name)
            self.tag_name.addItem(name)
        self.tag_select_box.setEnabled(bool(counts))
        self.tag_name.setEditText(typed or (sorted(counts)[0] if counts else DEFAULT_TAG))

    def mode(self) -> str:
        return self.mode_box.currentData()

    # --- handlers ---------------------------------------------------------------------------

    def _on_class(self, row: int) -> None:
        name = self.class_box.itemData(row)
        self.class_box.setCurrentIndex(0)
        if name is not None:
            self.select_class.emit(name, self.mode())

    def _on_tag_select(self, row: int) -> None:
        name = self.tag_select_box.itemData(row)
        self.tag_select_box.setCurrentIndex(0)
        if name is not None:
            self.select_tag.emit(name, self.mode())

    def _emit_tag(self, signal) -> None:
        name = self.tag_name.currentText().strip()
        if name and len(self.selection):
            signal.emit(name)

    def _update(self) -> None:
        n = len(self.selection)
        if n:
            of = f" of {self._total:,}" if self._total else ""
            source = f" ({self.selection.source})" if self.selection.source else ""
            self.count_label.setText(f"{n:,}{of} selected{source}")
        else:
            self.count_label.setText("Nothing selected: drag on the map (Box or Lasso), or "
                                     "choose a class or a tag.")
        self.count_label.setToolTip(self.count_label.text())
        for button in (self.tag_button, self.untag_button, self.export_button,
                       self.retrain_button, self.clear_button):
            button.setEnabled(n > 0)
        self.without_button.setEnabled(0 < n < self._total or (n > 0 and not self._total))
        self.invert_button.setEnabled(self._total > 0)
