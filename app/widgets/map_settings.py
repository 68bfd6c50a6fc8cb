"""The settings of a 2-d map of embeddings: method (UMAP or PCA) and UMAP's parameters."""

from __future__ import annotations

import dataclasses

from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QSpinBox, QWidget

from engine.evaluate.maps import MapParams


def _param_tooltip(name: str) -> str:
    meta = {f.name: f.metadata for f in dataclasses.fields(MapParams)}[name]
    return f"{meta['help']} Allowed: {meta['min']:g} to {meta['max']:g}."


class MapSettings(QWidget):
    """Method, n_neighbors and min_dist in one row, each with its label; UMAP's two
    parameters are enabled only while UMAP is chosen.

    Signals (of its boxes): ``method_box.currentIndexChanged(int)`` when the method changes.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.method_box = QComboBox()
        self.method_box.addItem("UMAP", "umap")
        self.method_box.addItem("PCA", "pca")
        self.method_box.setToolTip("UMAP keeps neighbourhoods (a PCA map is shown while it is "
                                   "computed); PCA is a fast linear projection.")
        self.method_box.currentIndexChanged.connect(self._on_method_changed)
        defaults = MapParams()
        self.neighbors_box = QSpinBox()
        self.neighbors_box.setRange(2, 1000)
        self.neighbors_box.setValue(defaults.n_neighbors)
        self.neighbors_box.setToolTip(_param_tooltip("n_neighbors"))
        self.min_dist_box = QDoubleSpinBox()
        self.min_dist_box.setRange(0.0, 1.0)
        self.min_dist_box.setSingleStep(0.05)
        self.min_dist_box.setValue(defaults.min_dist)
        self.min_dist_box.setToolTip(_param_tooltip("min_dist"))
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        for label, widget in (("Method", self.method_box), ("n_neighbors", self.neighbors_box),
                              ("min_dist", self.min_dist_box)):
            row.addWidget(QLabel(label))
            row.addWidget(widget)
        self._on_method_changed()

    def method(self) -> str:
        return str(self.method_box.currentData())

    def set_method(self, method: str) -> None:
        index = self.method_box.findData(method)
        if index < 0:
            raise ValueError(f"no map method {method!r}: choose umap or pca")
        self.method_box.setCurrentIndex(index)

    def params(self) -> MapParams:
        """The settings shown (ConfigError, a ValueError, if out of range)."""
        return MapParams(method=self.method(), n_neighbors=self.neighbors_box.value(),
                         min_dist=round(self.min_dist_box.value(), 6))

    def _on_method_changed(self, *_: object) -> None:
        umap = self.method() == "umap"
        self.neighbors_box.setEnabled(umap)
        self.min_dist_box.setEnabled(umap)
