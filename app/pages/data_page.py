"""The Data page: choose an image folder and see what is in it (counts per class, file and
pixel sizes, skipped files) and scroll through its thumbnails, in the order chosen and
filtered to a tag of the selected run (app.pages.data_choices).

Scanning, reading file dates, reading a run's tags and thumbnail decoding
(app.widgets.folder_thumbnails) run in worker threads; results come back to the GUI thread
through Qt signals, and only the GUI thread touches widgets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import median

import numpy as np
from PIL import Image
from PySide6.QtCore import QModelIndex, QObject, Qt, QThreadPool, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
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

from app.child.workers import Call
from app.model.collector import collector_paused
from app.pages.data_choices import ThumbnailChoices
from app.style import set_role
from app.widgets.folder_thumbnails import (
    THUMBNAIL_SIZE,
    FolderThumbnails,
    ThumbnailModel,
    thumbnail_paths,
)
from engine.data.scan import DataError, Manifest, scan_folder

#: How many images' headers are read for the pixel-size summary.
SIZE_SAMPLE = 200

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
    #: Worked out with the report, in the worker thread, so that showing a folder of
    #: 100,000 images takes the GUI thread a few milliseconds; None: worked out when shown.
    summary: str | None = None  # Manifest.summary()
    class_counts: list[int] | None = None  # Manifest.class_counts()
    paths: list[str] | None = None  # each image's absolute path (thumbnail_paths)


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
                        n <= sample, short, long, manifest.summary(), manifest.class_counts(),
                        thumbnail_paths(manifest))


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


class DataPage(ThumbnailChoices, QWidget):
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
        choices = self._init_choices()
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
                with collector_paused():  # 100,000 records: no collector passes meanwhile
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
        counts = report.class_counts if report.class_counts is not None else m.class_counts()
        self.classes_table.setRowCount(k)
        for row, (name, count) in enumerate(zip(m.classes, counts, strict=True)):
            self.classes_table.setItem(row, 0, QTableWidgetItem(name))
            number = QTableWidgetItem()
            number.setData(Qt.DisplayRole, count)  # an int sorts as a number
            self.classes_table.setItem(row, 1, number)
        self.skipped_table.setRowCount(len(m.skipped))
        for row, skip in enumerate(m.skipped):
            self.skipped_table.setItem(row, 0, QTableWidgetItem(skip.path))
            self.skipped_table.setItem(row, 1, QTableWidgetItem(skip.reason))
        self.status.setText(report.summary if report.summary is not None else m.summary())
        self.model.set_manifest(m, report.paths)
        self._order = np.arange(len(m.images), dtype=np.int64)  # until _reorder's
        self._mtimes = None  # read again, if asked for: files may have changed
        self._index_of = None
        self._map_tags()
        self._reorder()
