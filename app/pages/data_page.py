"""The Data page: choose an image folder and see what is in it (counts per class, file and
pixel sizes, skipped files) and scroll through its thumbnails, in class order, shuffled, or
by file name, size or date (app.model.image_order), all of them or only a tag's images
(the tags of the selected run, when it trained on this folder: app.model.tag_paths).

Scanning, reading file dates, reading a run's tags and thumbnail decoding
(app.widgets.folder_thumbnails) run in worker threads; results come back to the GUI thread
through Qt signals, and only the GUI thread touches widgets.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import median

import numpy as np
from PIL import Image
from PySide6.QtCore import QModelIndex, QObject, Qt, QThreadPool, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.child.workers import Call, Relay, Task
from app.model.image_order import ORDERS, image_order, modified_times, only_tagged
from app.model.run_actions import display_name
from app.model.tag_paths import tags_for_folder
from app.style import set_role
from app.widgets.folder_thumbnails import THUMBNAIL_SIZE, FolderThumbnails, ThumbnailModel
from engine.data.scan import DataError, Manifest, scan_folder

#: How many images' headers are read for the pixel-size summary.
SIZE_SAMPLE = 200
#: The tag filter's first entry.
ALL_IMAGES = "All images"

# --- the folder report (no Qt) ----------------------------------------------------------


@dataclass
class FolderReport:
    """What the page shows about a folder: the manifest, the total bytes of its images and
    the shorter/longer sides (pixels) of a sample of them, read from their headers."""

    manifest: Manifest
    total_bytes: int
    sampled: int  # headers read
    all_read: bool  # whether every image's header was read
    short_sides: list[int]
    long_sides: list[int]


def describe_folder(root: str | Path, *, sample: int = SIZE_SAMPLE,
                    progress: Callable[[int, int, str], None] | None = None) -> FolderReport:
    """Scan ``root`` (the engine's scan: every image decoded once, the bad ones skipped with
    their reasons) and read the pixel sizes of up to ``sample`` of its images, evenly spread
    over the sorted paths. Raises DataError like scan_folder."""
    manifest = scan_folder(root, progress=progress)
    n = len(manifest.images)
    picks = range(n) if n <= sample else np.linspace(0, n - 1, sample).round().astype(int)
    short: list[int] = []
    long: list[int] = []
    for i in dict.fromkeys(int(i) for i in picks):
        try:
            with Image.open(Path(manifest.root) / manifest.images[i].path) as im:
                w, h = im.size
        except Exception:
            continue  # (changed since the scan: the cache will say so)
        short.append(min(w, h))
        long.append(max(w, h))
    return FolderReport(manifest, sum(r.size for r in manifest.images), len(short),
                        n <= sample, short, long)


def _bytes(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return ""


# --- workers ------------------------------------------------------------------------------


class _ScanSignals(QObject):
    progress = Signal(int, str)  # generation, message
    done = Signal(int, object)  # generation, FolderReport or error message (str)


# --- the page -----------------------------------------------------------------------------


def _table(headers: list[str]) -> QTableWidget:
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.setEditTriggers(QAbstractItemView.NoEditTriggers)
    table.verticalHeader().setVisible(False)
    table.horizontalHeader().setSectionResizeMode(0, QHeaderView.Stretch)
    return table


class DataPage(QWidget):
    """A folder's contents: counts, sizes, skipped files and a thumbnail grid, in the order
    chosen in :attr:`order` (:meth:`set_order`; a shuffle stays the same while the page is
    open, until "Shuffle again") and filtered to the tag chosen in :attr:`tag_filter`
    (:meth:`set_tags` gives the tags; :meth:`show_tags_of` reads a run's). Tagged
    thumbnails carry a marker, and their tooltips name the tags.

    Signals:
        folder_scanned(Manifest): a scan finished (the latest one asked for).
        scan_failed(str): the folder cannot be scanned; the message says why.
        image_activated(str): the absolute path of a double-clicked thumbnail.
        order_shown(str): the thumbnails are in a new order now (its key in ORDERS).
    """

    folder_scanned = Signal(object)
    scan_failed = Signal(str)
    image_activated = Signal(str)
    order_shown = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.report: FolderReport | None = None
        self._generation = 0
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(2)
        self._signals = _ScanSignals(self)
        self._signals.progress.connect(self._on_progress)
        self._signals.done.connect(self._on_scanned)

        self.folder = QLineEdit()
        self.folder.setPlaceholderText("image folder (class sub-folders give labels)")
        self.folder.returnPressed.connect(lambda: self.open_folder(self.folder.text().strip()))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._on_browse)
        self.rescan_button = QPushButton("Rescan")
        self.rescan_button.setToolTip("Scan the folder again (after files were added, removed "
                                      "or the drive was plugged in again)")
        self.rescan_button.clicked.connect(self.rescan)
        self.error = QLabel()
        set_role(self.error, "error")
        self.error.setWordWrap(True)
        self.error.hide()
        self.status = QLabel("Choose a folder to see what is in it.")
        self.status.setWordWrap(True)
        self.counts = QLabel()
        self.counts.setWordWrap(True)
        self.sizes = QLabel()
        self.sizes.setWordWrap(True)
        self.classes_table = _table(["class", "images"])
        self.skipped_table = _table(["skipped file", "reason"])
        self.skipped_table.horizontalHeader().setSectionResizeMode(1, QHeaderView.Stretch)

        self.model = ThumbnailModel(THUMBNAIL_SIZE, self)
        self.thumbnails = FolderThumbnails(self.model)
        self.thumbnails.doubleClicked.connect(self._on_thumbnail_activated)
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

        top = QHBoxLayout()
        top.addWidget(self.folder, 1)
        top.addWidget(browse)
        top.addWidget(self.rescan_button)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.counts)
        left_layout.addWidget(self.sizes)
        left_layout.addWidget(self.classes_table, 2)
        left_layout.addWidget(self.skipped_table, 1)
        choices = QHBoxLayout()
        choices.addWidget(QLabel("Order:"))
        choices.addWidget(self.order)
        choices.addWidget(self.shuffle_button)
        choices.addSpacing(12)
        choices.addWidget(self.tag_label)
        choices.addWidget(self.tag_filter)
        choices.addStretch(1)
        grid = QWidget()
        grid_layout = QVBoxLayout(grid)
        grid_layout.setContentsMargins(0, 0, 0, 0)
        grid_layout.addLayout(choices)
        grid_layout.addWidget(self.thumbnails, 1)
        body = QSplitter()
        body.addWidget(left)
        body.addWidget(grid)
        body.setSizes([380, 900])
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.error)
        layout.addWidget(body, 1)
        layout.addWidget(self.status)

    # --- actions -------------------------------------------------------------------------

    def open_folder(self, path: str | Path) -> None:
        """Scan ``path`` in a worker thread; a scan still running is superseded."""
        self._generation += 1
        generation, signals = self._generation, self._signals
        shown = self.report.manifest.root if self.report is not None else None
        was_open = shown is not None and Path(shown) == Path(path).expanduser().absolute()
        self.folder.setText(str(path))
        self.error.hide()
        self.status.setText(f"Scanning {path}…")

        def work() -> None:
            def progress(done: int, total: int, message: str) -> None:
                signals.progress.emit(generation, message)

            try:
                result: FolderReport | str = describe_folder(path, progress=progress)
            except DataError as exc:
                result = str(exc)
                if was_open and not Path(path).expanduser().exists():
                    result = (f"The folder {path} is gone: it was unplugged, moved or deleted "
                              "since it was opened. Plug it in again (or choose another "
                              "folder), then press Rescan.")
            except Exception as exc:
                result = f"could not scan {path}: {exc}"
            signals.done.emit(generation, result)

        self._pool.start(Call(work))

    def rescan(self) -> None:
        """Scan the folder shown again."""
        if self.folder.text().strip():
            self.open_folder(self.folder.text().strip())

    def shutdown(self, msecs: int = 10_000) -> None:
        """Drop pending thumbnails and wait for the worker threads (before closing)."""
        self._generation += 1
        self._order_generation += 1
        self._tags_generation += 1
        self.model.loader.wait(msecs)
        self._pool.waitForDone(msecs)

    # --- order and tags ------------------------------------------------------------------

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
        self.status.setText(self.report.manifest.summary())
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
        thread, then :meth:`set_tags`; None shows no tags."""
        self._tags_generation += 1
        if run_dir is None or self.report is None:
            self.set_tags(None, "")
            return
        run_dir, folder = Path(run_dir), self.report.manifest.root
        self._pool.start(Task(lambda: (tags_for_folder(run_dir, folder), display_name(run_dir)),
                              self._tags_generation, self._tags_relay))

    def _on_tags_read(self, generation: int, result: tuple[dict | None, str]) -> None:
        if generation == self._tags_generation:
            self.set_tags(*result)

    def _on_tags_failed(self, generation: int, message: str) -> None:
        if generation == self._tags_generation:
            self.set_tags(None, "")
            self.status.setText(f"The run's tags cannot be shown: {message}")

    def _map_tags(self) -> None:
        """The tags as manifest indices of the folder shown, and the filter's entries."""
        chosen = self.tag_filter.currentData()
        self._tagged = {}
        tags, n = self._tag_paths, len(self.model.paths())
        if tags is not None and self.report is not None:
            if self._index_of is None:  # once a scan (about 40 ms at 100,000 images)
                self._index_of = {p: i for i, p in enumerate(self.model.paths())}
            index_of = self._index_of
            for name, paths in tags.items():
                found = [index_of.get(p) for p in paths]
                found = [i if i is not None else index_of.get(os.path.normpath(p))
                         for i, p in zip(found, paths, strict=True)]
                self._tagged[name] = np.unique(np.array(
                    [i for i in found if i is not None], dtype=np.int64))
        on_image: dict[int, list[str]] = {}
        for name, indices in self._tagged.items():
            for i in indices.tolist():
                on_image.setdefault(i, []).append(name)
        self.model.set_tags(on_image)
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

    def _on_browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Image folder", self.folder.text())
        if folder:
            self.open_folder(folder)

    def _on_thumbnail_activated(self, index: QModelIndex) -> None:
        if index.isValid():
            self.image_activated.emit(self.model.path(index.row()))

    # --- results -------------------------------------------------------------------------

    def _on_progress(self, generation: int, message: str) -> None:
        if generation == self._generation:
            self.status.setText(message)

    def _on_scanned(self, generation: int, result: FolderReport | str) -> None:
        if generation != self._generation:
            return  # a folder opened since made this result stale
        if isinstance(result, str):
            self._show_error(result)
            self.scan_failed.emit(result)
            return
        if self.report is None or self.report.manifest.root != result.manifest.root:
            self._tag_paths = None  # another folder's: until the window gives its own
        self.report = result
        self._show_report(result)
        self.folder_scanned.emit(result.manifest)

    def _show_error(self, message: str) -> None:
        self.report = None
        self.error.setText(message)
        self.error.show()
        self.status.setText("The folder could not be scanned.")
        self.counts.clear()
        self.sizes.clear()
        self.classes_table.setRowCount(0)
        self.skipped_table.setRowCount(0)
        self.model.set_manifest(None)

    def _show_report(self, report: FolderReport) -> None:
        m = report.manifest
        n, k = len(m.images), len(m.classes)
        if not n:
            self.counts.setText("No usable images found.")
        elif m.has_labels:
            self.counts.setText(f"{n:,} images in {k:,} {'class' if k == 1 else 'classes'}")
        else:
            self.counts.setText(f"{n:,} images: no labels (no class sub-folders)")
        sizes = f"{_bytes(report.total_bytes)} in all"
        if report.short_sides:
            s = report.short_sides
            sample = (f"all {report.sampled:,}" if report.all_read
                      else f"a sample of {report.sampled:,}")
            sizes += (f"; shorter side min {min(s):,} / median {median(s):,.0f} / max "
                      f"{max(s):,} px, longer side max {max(report.long_sides):,} px "
                      f"({sample} read)")
        self.sizes.setText(sizes)
        self.classes_table.setRowCount(k)
        for row, (name, count) in enumerate(zip(m.classes, m.class_counts(), strict=True)):
            self.classes_table.setItem(row, 0, QTableWidgetItem(name))
            number = QTableWidgetItem()
            number.setData(Qt.DisplayRole, count)  # an int sorts as a number
            self.classes_table.setItem(row, 1, number)
        self.skipped_table.setRowCount(len(m.skipped))
        for row, skip in enumerate(m.skipped):
            self.skipped_table.setItem(row, 0, QTableWidgetItem(skip.path))
            self.skipped_table.setItem(row, 1, QTableWidgetItem(skip.reason))
        self.status.setText(m.summary())
        self.model.set_manifest(m)
        self._order = np.arange(len(m.images), dtype=np.int64)  # until _reorder's
        self._mtimes = None  # read again, if asked for: files may have changed
        self._index_of = None
        self._map_tags()
        self._reorder()
