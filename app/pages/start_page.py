"""The start view: what to do first (open a folder, try the demo) and one click back to the
recent folders and runs. Shown at launch and whenever no folder or run is open."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QGridLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.model.run_actions import display_name
from app.model.run_model import list_runs
from app.style import set_role

#: The QSettings key of the recent folders (newest first) and how many are kept.
RECENT_FOLDERS_KEY = "recent_folders"
MAX_RECENT = 8
#: Runs offered on the start view (the newest of the runs folder).
MAX_RECENT_RUNS = 6
NO_FOLDERS = "No folders opened yet."
NO_RUNS = "No runs yet: open a folder and press Start on the Train page, or try the demo."


def remember(recent: list[str], item: str, limit: int = MAX_RECENT) -> list[str]:
    """``recent`` with ``item`` first (moved there when already listed), at most ``limit``."""
    return ([item] + [r for r in recent if r != item])[:limit]


def _as_list(value: object) -> list[str]:
    """A QSettings value as a list of text (a single entry comes back as a str)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value if v]  # type: ignore[union-attr]


class StartPage(QWidget):
    """Open a folder, try the demo, or go back to a recent folder or run, one click each.

    Signals:
        open_folder_requested(): "Open an image folder…" (the window asks for one).
        demo_requested(): "Try the demo".
        folder_chosen(object): a recent folder (Path) was clicked.
        run_chosen(object): a recent run (its folder, Path) was clicked.
    """

    open_folder_requested = Signal()
    demo_requested = Signal()
    folder_chosen = Signal(object)
    run_chosen = Signal(object)

    def __init__(self, runs_root: Path, settings: QSettings,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runs_root = Path(runs_root)
        self.settings = settings
        title = QLabel("Contrastive Explorer")
        set_role(title, "heading")
        intro = QLabel("Learn image representations from your own folder with SimCLR, MoCo, "
                       "BYOL and other self-supervised methods, without labels, then explore "
                       "what was learned: a map of the images, "
                       "nearest neighbours, a linear probe against the folder's classes, and "
                       "an encoder to export. Class sub-folders give labels.")
        intro.setWordWrap(True)
        self.open_button = QPushButton("Open an image folder…")
        self.open_button.setToolTip("Choose a folder of images (sub-folders are classes) "
                                    "(Ctrl+O)")
        self.open_button.clicked.connect(self.open_folder_requested.emit)
        self.demo_button = QPushButton("Try the demo: 1,797 handwritten digits")
        self.demo_button.setToolTip("Scikit-learn's labelled digits as a folder of PNG "
                                    "files (made once, offline), with settings that train in "
                                    "minutes on a CPU")
        self.demo_button.clicked.connect(self.demo_requested.emit)
        self.folders = QListWidget()
        self.folders.setObjectName("recent_folders")
        self.folders.itemClicked.connect(self._on_folder_clicked)
        self.folders.itemActivated.connect(self._on_folder_clicked)
        self.runs = QListWidget()
        self.runs.setObjectName("recent_runs")
        self.runs.itemClicked.connect(self._on_run_clicked)
        self.runs.itemActivated.connect(self._on_run_clicked)
        for view in (self.folders, self.runs):
            view.setWordWrap(True)  # a long path or hint wraps instead of being cut off
            view.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
            view.setSpacing(2)
        folders_title, runs_title = QLabel("Recent folders"), QLabel("Recent runs")
        set_role(folders_title, "heading")
        set_role(runs_title, "heading")

        grid = QGridLayout()
        grid.addWidget(self.open_button, 0, 0)
        grid.addWidget(self.demo_button, 0, 1)
        grid.addWidget(folders_title, 1, 0)
        grid.addWidget(runs_title, 1, 1)
        grid.addWidget(self.folders, 2, 0)
        grid.addWidget(self.runs, 2, 1)
        column = QWidget()
        column.setMaximumWidth(1000)
        inner = QVBoxLayout(column)
        inner.addWidget(title)
        inner.addWidget(intro)
        inner.addSpacing(12)
        inner.addLayout(grid, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(column, 1, Qt.AlignHCenter)
        self.refresh()

    # --- contents ------------------------------------------------------------------------

    def recent_folders(self) -> list[str]:
        """The recent folders, newest first (the last folder of older versions included)."""
        recent = _as_list(self.settings.value(RECENT_FOLDERS_KEY))
        last = self.settings.value("last_folder")
        if last and str(last) not in recent:
            recent = [str(last)] + recent
        return recent[:MAX_RECENT]

    def note_folder(self, folder: str | Path) -> None:
        """``folder`` was opened: it goes first in the recent folders."""
        self.settings.setValue(RECENT_FOLDERS_KEY,
                               remember(self.recent_folders(), str(Path(folder))))
        self.refresh()

    def refresh(self) -> None:
        """List the recent folders (those still there) and the newest runs again."""
        self.folders.clear()
        for folder in self.recent_folders():
            item = QListWidgetItem(f"{Path(folder).name or folder}\n{folder}")
            item.setData(Qt.UserRole, folder)
            item.setToolTip(f"Open {folder} on the Data page")
            if not Path(folder).is_dir():
                item.setFlags(item.flags() & ~Qt.ItemIsEnabled)
                item.setToolTip(f"{folder} is not there (unplugged, moved or deleted)")
            self.folders.addItem(item)
        if self.folders.count() == 0:
            self._placeholder(self.folders, NO_FOLDERS)
        self.runs.clear()
        for run in list_runs(self.runs_root)[:MAX_RECENT_RUNS]:
            knn = f" · best kNN {100 * run.best_knn:.1f}%" if run.best_knn is not None else ""
            item = QListWidgetItem(f"{display_name(run.path)}\n{run.method} · {run.dataset} · "
                                   f"{run.status}{knn}")
            item.setData(Qt.UserRole, str(run.path))
            item.setToolTip(f"Select this run and explore it ({run.path})")
            self.runs.addItem(item)
        if self.runs.count() == 0:
            self._placeholder(self.runs, NO_RUNS)

    @staticmethod
    def _placeholder(view: QListWidget, text: str) -> None:
        item = QListWidgetItem(text)
        item.setFlags(Qt.NoItemFlags)
        view.addItem(item)

    def showEvent(self, event) -> None:
        self.refresh()  # runs may have been made or deleted while another page was shown
        super().showEvent(event)

    # --- handlers ------------------------------------------------------------------------

    def _on_folder_clicked(self, item: QListWidgetItem) -> None:
        folder = item.data(Qt.UserRole)
        if folder and Path(folder).is_dir():
            self.folder_chosen.emit(Path(folder))

    def _on_run_clicked(self, item: QListWidgetItem) -> None:
        run = item.data(Qt.UserRole)
        if run:
            self.run_chosen.emit(Path(run))
