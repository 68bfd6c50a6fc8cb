"""The outliers view: every image ranked by how typical it is (the mean cosine similarity to
its k nearest other images, from ``outliers``), most unusual or most typical first, and a
diverse subset (greedy farthest-point selection) on request."""

from __future__ import annotations

import numpy as np
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.model.curation import CurationImages, OutlierScores
from app.widgets.curation_view import CurationView
from app.widgets.image_grid import ImageGrid, PathsOf
from app.widgets.neighbours_panel import ThumbnailCache

UNUSUAL, TYPICAL, DIVERSE = "Most unusual first", "Most typical first", "Diverse subset"


class OutliersView(CurationView):
    """The ranking of ``outliers`` in an :class:`~app.widgets.image_grid.ImageGrid`.

    Farthest-point picks from one seed grow by one image at a time, so the first N of a
    longer saved subset are the subset of N; a longer one asks the engine (``--diverse N``).

    Signals: those of :class:`~app.widgets.curation_view.CurationView`; scores_ready is
    ("outliers", the score of each image: low = unusual).
    """

    kind = "outliers"

    def __init__(self, thumbnails: ThumbnailCache, parent: QWidget | None = None) -> None:
        super().__init__("Find outliers", "Ask the engine to score every image by its mean "
                         "similarity to its nearest neighbours.", parent)
        self.data: OutlierScores | None = None
        self.images: CurationImages | None = None
        self.shown = np.zeros(0, np.int64)
        self.order = QComboBox()
        self.order.addItems([UNUSUAL, TYPICAL, DIVERSE])
        self.order.setToolTip("Most unusual first (lowest score), most typical first, or the "
                              "diverse subset.")
        self.order.currentTextChanged.connect(lambda _: self._show())
        self.n_box = QSpinBox()
        self.n_box.setRange(1, 1_000_000)
        self.n_box.setValue(100)
        self.n_box.setToolTip("N: how many images the buttons take.")
        self.select_top = QPushButton("Select top N")
        self.select_top.clicked.connect(
            lambda: self.select_requested.emit(self.top(), f"outliers: {self._order_words()}"))
        self.tag_top = QPushButton("Tag top N…")
        self.tag_top.clicked.connect(lambda: self.tag_requested.emit(self.top(), "outlier"))
        self.diverse_button = QPushButton("Diverse subset of N")
        self.diverse_button.setToolTip("N images that cover the folder (greedy farthest-point "
                                       "selection), shown and selected.")
        self.diverse_button.clicked.connect(self.show_diverse)
        self.grid = ImageGrid(thumbnails)
        self.grid.activated.connect(self.image_activated)

        top = QHBoxLayout()
        top.addWidget(self.run_button)
        top.addWidget(self.order)
        top.addStretch(1)
        buttons = QHBoxLayout()
        buttons.addWidget(QLabel("N"))
        for widget in (self.n_box, self.select_top, self.tag_top, self.diverse_button):
            buttons.addWidget(widget)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.summary)
        layout.addWidget(self.grid, 1)
        layout.addLayout(buttons)
        self.clear("Press Find outliers to rank the images from most unusual to most typical.")

    def show_data(self, data: OutlierScores, images: CurationImages | None,
                  diverse_asked: int | None = None) -> None:
        """Show an outliers result (and its scores go out); ``diverse_asked``: the diverse
        subset it was run for, shown and selected."""
        self.data, self.images = data, images
        self.scores_ready.emit("outliers", data.scores)
        if diverse_asked is not None and len(data.diverse):
            self.order.setCurrentText(DIVERSE)
            self._show()
            self.select_requested.emit(data.diverse[:diverse_asked].copy(),
                                       f"outliers: diverse {min(diverse_asked, len(data.diverse))}")
        else:
            self._show()
        self._update_buttons()

    def clear(self, text: str = "") -> None:
        self.data = None
        self.shown = np.zeros(0, np.int64)
        self.grid.clear()
        super().clear(text)
        self._update_buttons()

    def has_data(self) -> bool:
        return self.data is not None

    def top(self) -> np.ndarray:
        """The first N images shown (image indices, in their order)."""
        return self.shown[:self.n_box.value()].copy()

    def show_diverse(self) -> None:
        """The diverse subset of N: from the saved picks when there are enough, otherwise
        from the engine."""
        n = self.n_box.value()
        if self.data is not None and len(self.data.diverse) >= n:
            self.order.setCurrentText(DIVERSE)
            self.select_requested.emit(self.data.diverse[:n].copy(), f"outliers: diverse {n}")
        else:
            self.run_requested.emit(["--diverse", str(n)])

    def _order_words(self) -> str:
        return {UNUSUAL: "most unusual", TYPICAL: "most typical",
                DIVERSE: "diverse"}[self.order.currentText()]

    def _show(self) -> None:
        data, images = self.data, self.images
        if data is None:
            return
        choice = self.order.currentText()
        if choice == DIVERSE:
            if not len(data.diverse):
                self.shown = np.zeros(0, np.int64)
                self.grid.clear()
                self.show_message("No diverse subset yet: choose N and press Diverse subset "
                                  "of N.")
                self._update_buttons()
                return
            self.shown = data.diverse[:max(self.n_box.value(), 1)]
        else:
            self.shown = data.ranking(typical=choice == TYPICAL)
        shown, scores = self.shown, data.scores[self.shown]

        def caption(row: int) -> str:
            i = int(shown[row])
            name = images.class_name(i) if images is not None else None
            return f"{scores[row]:.4f}" + (f"\n{name}" if name else "")

        def tooltip(row: int) -> str:
            i = int(shown[row])
            path = images.paths[i] if images is not None else ""
            return (f"#{i} {path}\nmean similarity to the {data.k} nearest: "
                    f"{scores[row]:.4f} (rank {row + 1})")

        if images is not None:
            self.grid.set_images(shown, PathsOf(images.root, images.paths, shown),
                                 captions=caption, tooltips=tooltip, scores=scores)
        else:
            self.grid.clear()
        what = (f"{len(shown):,} diverse images (farthest-point, seed {data.seed})"
                if choice == DIVERSE else f"{len(shown):,} images, {choice.lower()}")
        self.show_message(f"{what}; score: mean cosine similarity to the {data.k} nearest "
                          "other images (low: unusual).")
        self._update_buttons()

    def _update_buttons(self) -> None:
        super()._update_buttons()
        if not hasattr(self, "diverse_button"):
            return  # (during construction)
        has = self.data is not None and len(self.shown) > 0
        self.select_top.setEnabled(has)
        self.tag_top.setEnabled(has)
        self.diverse_button.setEnabled(self.data is not None or (self._ready and not self._busy))

