"""The Data page's order and tag filter: the thumbnails in class order, shuffled, or by file
name, size or date (app.model.image_order), all of them or only a tag's images (the tags of
a run that trained on the folder shown: app.model.tag_paths). Part of
:class:`app.pages.data_page.DataPage`.

File dates and a run's tags are read in the page's worker threads; orders that are a
permutation (class order, a shuffle) are made at once.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton

from app.child.workers import Relay, Task
from app.model.collector import collector_paused
from app.model.image_order import ORDERS, image_order, modified_times, only_tagged
from app.model.run_actions import display_name
from app.model.tag_paths import tags_for_folder

#: The tag filter's first entry.
ALL_IMAGES = "All images"


def tag_rows(tags: dict[str, list[str]], index_of: dict[str, int]) -> dict[str, np.ndarray]:
    """Each tag's images as sorted manifest indices (``index_of``: absolute path -> index);
    paths that are not images of the folder are left out. No Qt: runs in a worker."""
    rows = {}
    for name, paths in tags.items():
        found = [index_of.get(p, -1) for p in paths]
        for k in [k for k, i in enumerate(found) if i < 0]:  # written another way: a/./b
            found[k] = index_of.get(os.path.normpath(paths[k]), -1)
        indices = np.asarray(found, dtype=np.int64)
        rows[name] = np.unique(indices[indices >= 0])
    return rows


class ThumbnailChoices:
    """The order and tag filter of the Data page's thumbnails, mixed into the page (which has
    ``report``, ``model``, ``status``, ``_pool`` and the ``order_shown`` signal)."""

    def _init_choices(self) -> QHBoxLayout:
        """The Order box, Shuffle again and the Tag box, in a row over the thumbnails."""
        # The order: manifest indices, and what it needs (file dates, read once a scan).
        self._order_key = "class"
        self._order = np.zeros(0, dtype=np.int64)
        self._shuffle_seed = 0
        self._mtimes: np.ndarray | None = None
        self._order_generation = 0
        self._order_relay = Relay(self)
        self._order_relay.done.connect(self._on_ordered)
        self._order_relay.failed.connect(self._on_order_failed)
        self.order = QComboBox()
        for key, words in ORDERS.items():
            self.order.addItem(words, key)
        self.order.setToolTip("The order of the thumbnails")
        self.order.currentIndexChanged.connect(
            lambda _i: self.set_order(self.order.currentData()))
        self.shuffle_button = QPushButton("Shuffle again")
        self.shuffle_button.setToolTip("Another random order of the images")
        self.shuffle_button.clicked.connect(self.shuffle_again)
        self.shuffle_button.hide()
        # The tags: {name: absolute paths} as given, and as manifest indices of this scan.
        self._tag_paths: dict[str, list[str]] | None = None
        self._tag_source = ""
        self._tagged: dict[str, np.ndarray] = {}
        self._index_of: dict[str, int] | None = None  # absolute path -> manifest index
        self._tags_generation = 0
        self._tags_relay = Relay(self)
        self._tags_relay.done.connect(self._on_tags_read)
        self._tags_relay.failed.connect(self._on_tags_failed)
        self.tag_label = QLabel("Tag:")
        self.tag_filter = QComboBox()
        self.tag_filter.currentIndexChanged.connect(lambda _i: self._show_rows())
        self.tag_label.hide()
        self.tag_filter.hide()
        choices = QHBoxLayout()
        choices.addWidget(QLabel("Order:"))
        choices.addWidget(self.order)
        choices.addWidget(self.shuffle_button)
        choices.addSpacing(12)
        choices.addWidget(self.tag_label)
        choices.addWidget(self.tag_filter)
        choices.addStretch(1)
        return choices

    def set_order(self, key: str) -> None:
        """Show the thumbnails in the order ``key`` (a key of app.model.image_order.ORDERS);
        the file dates are read in a worker thread (once a scan), the rest at once."""
        if key not in ORDERS:
            raise ValueError(f"unknown order {key!r}: one of {', '.join(ORDERS)}")
        self._order_key = key
        self.order.blockSignals(True)
        self.order.setCurrentIndex(list(ORDERS).index(key))
        self.order.blockSignals(False)
        self.shuffle_button.setVisible(key == "shuffled")
        self._reorder()

    def shuffle_again(self) -> None:
        """Another shuffled order (the next seed)."""
        self._shuffle_seed += 1
        self.set_order("shuffled")

    def _reorder(self) -> None:
        self._order_generation += 1
        if self.report is None:
            return
        manifest, key = self.report.manifest, self._order_key
        if key in ("class", "shuffled"):  # a permutation: quick at 100,000 images
            self._order = image_order(manifest, key, seed=self._shuffle_seed)
            self._show_rows()
            self.order_shown.emit(key)
            return
        mtimes, seed = self._mtimes, self._shuffle_seed

        def work() -> tuple[np.ndarray, np.ndarray | None]:
            dates = modified_times(manifest) if key == "modified" and mtimes is None else mtimes
            return image_order(manifest, key, seed=seed, mtimes=dates), dates

        if key == "modified" and mtimes is None:
            self.status.setText(f"Reading the dates of {len(manifest.images):,} files…")
        self._pool.start(Task(work, self._order_generation, self._order_relay))

    def _on_ordered(self, generation: int, result: tuple[np.ndarray, np.ndarray | None]
                    ) -> None:
        if generation != self._order_generation or self.report is None:
            return  # another order or folder was chosen since
        self._order, self._mtimes = result
        self.status.setText(self.report.summary if self.report.summary is not None
                            else self.report.manifest.summary())
        self._show_rows()
        self.order_shown.emit(self._order_key)

    def _on_order_failed(self, generation: int, message: str) -> None:
        if generation == self._order_generation:
            self.status.setText(f"Cannot sort the images: {message}")

    def set_tags(self, tags: dict[str, list[str]] | None, source: str) -> None:
        """The tags to filter by: {tag name: absolute image paths} of the run named
        ``source``, or None (no run, or one that trained on another folder). Images of the
        folder that a tag names get a marker, and the "Tag" filter lists the tags."""
        self._tag_paths, self._tag_source = tags, source
        self._map_tags()

    def show_tags_of(self, run_dir: Path | None) -> None:
        """Read the tags of ``run_dir`` (when it trained on the folder shown) in a worker
        thread, then :meth:`set_tags`; None shows no tags. The tags' paths are found among
        the folder's images in the worker thread too."""
        self._tags_generation += 1
        if run_dir is None or self.report is None:
            self.set_tags(None, "")
            return
        run_dir, folder = Path(run_dir), self.report.manifest.root
        paths, index_of = self.model.paths(), self._index_of

        def work() -> tuple:
            with collector_paused():  # the run's manifest: a record per image
                tags = tags_for_folder(run_dir, folder)
            found = index_of
            if tags is not None and found is None:
                found = {p: i for i, p in enumerate(paths)}
            tagged = tag_rows(tags, found) if tags is not None and found is not None else {}
            return tags, display_name(run_dir), paths, found, tagged

        self._pool.start(Task(work, self._tags_generation, self._tags_relay))

    def _on_tags_read(self, generation: int, result: tuple) -> None:
        if generation != self._tags_generation:
            return
        tags, source, paths, index_of, tagged = result
        if paths is not self.model.paths():  # another scan since: map them again
            self.set_tags(tags, source)
            return
        self._index_of = index_of if index_of is not None else self._index_of
        self._tag_paths, self._tag_source = tags, source
        self._map_tags(tagged)

    def _on_tags_failed(self, generation: int, message: str) -> None:
        if generation == self._tags_generation:
            self.set_tags(None, "")
            self.status.setText(f"The run's tags cannot be shown: {message}")

    def _map_tags(self, tagged: dict[str, np.ndarray] | None = None) -> None:
        """The tags as manifest indices of the folder shown (``tagged`` when the worker
        found them already), and the filter's entries."""
        chosen = self.tag_filter.currentData()
        self._tagged = {}
        tags, n = self._tag_paths, len(self.model.paths())
        if tags is not None and self.report is not None:
            if tagged is None:
                if self._index_of is None:  # once a scan (about 40 ms at 100,000 images)
                    self._index_of = {p: i for i, p in enumerate(self.model.paths())}
                tagged = tag_rows(tags, self._index_of)
            self._tagged = tagged
        self.model.set_tags(self._tagged)
        self.tag_filter.blockSignals(True)
        self.tag_filter.clear()
        self.tag_filter.addItem(f"{ALL_IMAGES} ({n:,})", None)
        for name, indices in self._tagged.items():
            self.tag_filter.addItem(f"{name} ({indices.size:,})", name)
        self.tag_filter.setCurrentIndex(max(0, self.tag_filter.findData(chosen)))
        self.tag_filter.blockSignals(False)
        shown = tags is not None and self.report is not None
        self.tag_label.setVisible(shown)
        self.tag_filter.setVisible(shown)
        self.tag_filter.setEnabled(bool(self._tagged))
        self.tag_filter.setToolTip(
            f"Show only the images of a tag of the run {self._tag_source} (tags are made on "
            "the Explore page)" if self._tagged else
            f"The run {self._tag_source} has no tags of this folder's images yet: tag images "
            "on the Explore page")
        self._show_rows()

    def tag_shown(self) -> str | None:
        """The tag the thumbnails are filtered to, or None (all images)."""
        return None if self.tag_filter.isHidden() else self.tag_filter.currentData()

    def _show_rows(self) -> None:
        """The thumbnails: the order, filtered to the chosen tag."""
        if self.report is None:
            return
        tag = self.tag_filter.currentData()
        self.model.set_rows(only_tagged(self._order, self._tagged.get(tag)
                                        if tag is not None else None))
