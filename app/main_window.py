"""The main window: a runs sidebar beside the pages (Data, Augmentations, Train, ...)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PySide6.QtCore import QFileSystemWatcher, QSettings, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMenu,
    QMessageBox,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.dialogs.export_dialog import ExportDialog
from app.model.run_actions import (
    RunActionError,
    background_process,
    delete_run,
    display_name,
    rename_run,
)
from app.model.run_model import LIVE_EVENTS_S, RUNNING_ELSEWHERE, RunHistory, list_runs
from app.pages.augment_page import AugmentPreview
from app.pages.data_page import DataPage
from app.pages.explore_page import ExplorePage
from app.pages.probe_page import ProbePage
from app.pages.train_page import STOP_ELSEWHERE_TIP, TrainPage
from app.style import set_role

ORGANISATION, APPLICATION = "Contrastive Explorer", "Contrastive Explorer"
#: The runs list is made again this long after the runs folder changed (runs added,
#: deleted or moved by anyone), so a burst of changes costs one refresh.
REFRESH_DELAY_MS = 300
#: How often the selected run's folder is checked to still exist, for file systems whose
#: changes the watcher does not see (network shares).
SELECTED_RUN_CHECK_MS = 5000
#: While a run is trained outside this window (running elsewhere, or left running in the
#: background), the runs list is made again this often: the watcher sees the runs folder,
#: not the events a run appends, and not at all on many network shares.
LIVE_REFRESH_MS = 5000
#: Statuses of runs that a process other than this window's engine child trains now.
TRAINED_OUTSIDE = (RUNNING_ELSEWHERE, "running in the background")
#: A run this window trained counts as ended here (not going on elsewhere) while its
#: events.jsonl is no newer than the end of the engine child plus this much.
OWN_RUN_SLACK_S = 2.0
#: Item data: the run's status as listed.
STATUS_ROLE = Qt.UserRole + 1


def device_description() -> str:
    """The training device the engine will find, for the status bar."""
    from engine.config.resolve import resolve_device

    _, info = resolve_device("auto")
    if info.type == "cpu":
        return f"CPU only, {info.name}: small models and images suit it"
    memory = f", {info.memory_gb:.0f} GB" if info.memory_gb else ""
    return f"GPU: {info.name}{memory}"


class MainWindow(QMainWindow):
    """Runs sidebar + one page per job. Drop a folder on the window to open it.

    The runs list follows the runs folder: a run deleted or moved from outside is taken off
    it (a file-system watcher, and a periodic check of the selected run), and an action on
    a run whose folder has gone says so.

    A run that another process trains (no run_end, events.jsonl changed in the last
    LIVE_EVENTS_S, not this window's engine child) is listed as "running elsewhere", and
    the list is made again every LIVE_REFRESH_MS while there is one. Double-click or
    "Follow live" shows it on the Train page as it goes; merely selecting it does the same
    when the Train page is idle (:meth:`TrainPage.is_idle`: nothing of its own is lost).

    Signals:
        run_selected(object): the run folder (Path) selected in the sidebar, or None.
    """

    run_selected = Signal(object)

    def __init__(self, runs_root: Path, *, cache_dir: Path | None = None,
                 settings: QSettings | None = None) -> None:
        super().__init__()
        self.setWindowTitle("Contrastive Explorer")
        self.runs_root = Path(runs_root)
        self.cache_dir = cache_dir
        self.settings = settings or QSettings(ORGANISATION, APPLICATION)
        self.runs = QListWidget()
        self.runs.setObjectName("runs")
        self.runs.setWordWrap(True)
        self.runs.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.runs.setToolTip("Runs in the runs folder. Select one to explore it; double-click "
                             "to show its curves; right-click to rename or delete it.")
        self.runs.itemDoubleClicked.connect(self._on_run_opened)
        self.runs.currentItemChanged.connect(self._on_run_selected)
        self.runs.setContextMenuPolicy(Qt.CustomContextMenu)
        self.runs.customContextMenuRequested.connect(self._on_runs_menu)
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(REFRESH_DELAY_MS)
        self._refresh_timer.timeout.connect(self.refresh_runs)
        self._runs_watcher = QFileSystemWatcher(self)
        self._runs_watcher.directoryChanged.connect(lambda _path: self._refresh_timer.start())
        self._runs_watcher.fileChanged.connect(lambda _path: self._refresh_timer.start())
        self._live_refresh = QTimer(self)
        self._live_refresh.setInterval(LIVE_REFRESH_MS)
        self._live_refresh.timeout.connect(self.refresh_runs)
        self._selected_check = QTimer(self)
        self._selected_check.setInterval(SELECTED_RUN_CHECK_MS)
        self._selected_check.timeout.connect(self._check_selected_run)
        self._selected_check.start()
        self._closing_after_stop = False
        #: The last message box shown without blocking (see _tell).
        self.message_box: QMessageBox | None = None
        self.setAcceptDrops(True)
        self.train_page = TrainPage(self.runs_root, cache_dir)
        self.train_page.run_changed.connect(self.refresh_runs)
        self.data_page = DataPage()
        self.data_page.folder_scanned.connect(
            lambda manifest: self._remember_folder(Path(manifest.root)))
        self.augment_page = AugmentPreview()
        self.data_page.folder_scanned.connect(
            lambda manifest: self.augment_page.set_folder(manifest.root))
        self.augment_page.pairs_ready.connect(self._sync_augmentations)
        self.explore_page = ExplorePage(cache_dir)
        self.run_selected.connect(self.explore_page.set_run)
        self.probe_page = ProbePage(cache_dir)
        self.run_selected.connect(self.probe_page.set_run)
        self.data_page.image_activated.connect(self.show_neighbours_of_image)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.data_page, "Data")
        self.tabs.addTab(self.augment_page, "Augmentations")
        self.tabs.addTab(self.train_page, "Train")
        self.tabs.addTab(self.explore_page, "Explore")
        self.tabs.addTab(self.probe_page, "Probe")
        runs_panel = QWidget()
        runs_layout = QVBoxLayout(runs_panel)
        runs_layout.setContentsMargins(4, 4, 0, 0)
        runs_title = QLabel("Runs")
        set_role(runs_title, "heading")
        runs_layout.addWidget(runs_title)
        runs_layout.addWidget(self.runs, 1)
        runs_panel.setMinimumWidth(200)
        splitter = QSplitter()
        splitter.addWidget(runs_panel)
        splitter.setCollapsible(0, False)
        splitter.addWidget(self.tabs)
        splitter.setSizes([260, 1100])
        self.setCentralWidget(splitter)
        self._make_menus()
        self.statusBar().showMessage(device_description())
        self.refresh_runs()
        geometry = self.settings.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
            state = self.settings.value("window_state")
            if state is not None:
                self.restoreState(state)
        else:
            self.resize(1400, 850)
        last = self.settings.value("last_folder")
        if last:
            self.train_page.set_folder(str(last))
            self.data_page.folder.setText(str(last))

    def _make_menus(self) -> None:
        """Menus, the toolbar and their shortcuts (each action is made once, used in both)."""
        self.actions: dict[str, QAction] = {}

        def action(key: str, text: str, slot, shortcut=None, tip: str = "") -> QAction:
            made = QAction(text, self)
            if shortcut is not None:
                made.setShortcut(QKeySequence(shortcut))
            made.setToolTip(tip or text.replace("&", "").rstrip("…"))
            made.setStatusTip(made.toolTip())
            made.triggered.connect(slot)
            self.actions[key] = made
            return made

        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction(action("open", "&Open image folder…", self._on_open_folder,
                                   QKeySequence.Open, "Open a folder of images (Ctrl+O); "
                                   "class sub-folders give labels"))
        file_menu.addSeparator()
        file_menu.addAction(action("quit", "&Quit", self.close, QKeySequence.Quit))
        run_menu = self.menuBar().addMenu("&Run")
        page = self.train_page
        for key, text, slot, keys, tip in [
                ("start", "&Start training", page.start, "Ctrl+Return",
                 "Start a new run with the Train page's settings (Ctrl+Return)"),
                ("stop", "S&top (checkpoint)", page.stop, "Ctrl+.",
                 "Save a checkpoint and stop the run (Ctrl+.)"),
                ("resume", "&Resume", page.resume, None, "Continue the stopped run"),
                ("unfollow", "Stop f&ollowing", page.stop_following, None,
                 "Stop showing the run trained by another process on the Train page (it "
                 "goes on where it runs)"),
                ("export", "&Export encoder or embeddings…", self.open_export_dialog,
                 "Ctrl+E", "Export the selected run's encoder or embeddings (Ctrl+E)"),
                ("refresh", "Re&fresh runs", self.refresh_runs, QKeySequence.Refresh, "")]:
            run_menu.addAction(action(key, text, slot, keys, tip))
        view_menu = self.menuBar().addMenu("&View")
        for i in range(self.tabs.count()):
            view_menu.addAction(action(
                f"page{i}", self.tabs.tabText(i),
                lambda _=False, i=i: self.tabs.setCurrentIndex(i), f"Ctrl+{i + 1}",
                f"Show the {self.tabs.tabText(i)} page (Ctrl+{i + 1})"))
        toolbar = self.addToolBar("Main")
        toolbar.setObjectName("main-toolbar")  # saveState needs a name
        toolbar.setMovable(False)
        toolbar.setToolButtonStyle(Qt.ToolButtonTextOnly)
        for key in ("open", "start", "stop", "export"):
            toolbar.addAction(self.actions[key])
        page.engine_state_changed.connect(self._update_actions)
        self._update_actions()

    def _update_actions(self) -> None:
        running = self.train_page.engine.is_running()
        following = self.train_page.following is not None
        self.actions["start"].setEnabled(not running and not following)
        self.actions["stop"].setEnabled(running)
        self.actions["stop"].setToolTip(STOP_ELSEWHERE_TIP if following
                                        else "Save a checkpoint and stop the run (Ctrl+.)")
        self.actions["unfollow"].setEnabled(following)

    def open_export_dialog(self) -> ExportDialog | None:
        """Export the selected run's encoder or embeddings (a dialog that stays open)."""
        if self.selected_run() is None:
            QMessageBox.information(self, "Export", "Select a run in the runs list first.")
            return None
        run_dir = self._selected_run_folder("export the run")
        if run_dir is None:
            return None
        dialog = ExportDialog(run_dir, self.cache_dir, self)
        dialog.setAttribute(Qt.WA_DeleteOnClose)
        dialog.open()
        self.export_dialog = dialog
        return dialog

    def _on_open_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Image folder")
        if folder:
            self.open_folder(Path(folder))

    def open_folder(self, folder: Path) -> None:
        """Show the folder on the Data page and make it the one to train on."""
        self.data_page.open_folder(folder)
        self._remember_folder(Path(folder))

    def apply_settings(self, values: dict) -> None:
        """Show settings (e.g. the demo's) on the Train and Augmentations pages."""
        self.train_page.apply_settings(values)
        for name, value in (values.get("augment") or {}).items():
            self.augment_page.form.set_value(name, value)
        if values.get("image_size"):
            self.augment_page.size_box.setValue(int(values["image_size"]))

    def _sync_augmentations(self) -> None:
        """The trainer gets exactly the augmentations shown on the preview."""
        cfg = self.augment_page.augment_config()
        self.train_page.augment_overrides = {
            f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
            if f.metadata and f.metadata["cli"] and getattr(cfg, f.name) is not None}

    def _remember_folder(self, folder: Path) -> None:
        self.train_page.set_folder(folder)
        self.settings.setValue("last_folder", str(folder))

    def refresh_runs(self) -> None:
        """List the runs again, keeping the selected one selected."""
        self._refresh_timer.stop()
        selected = self.selected_run()
        scrolled = self.runs.verticalScrollBar().value()
        self.runs.blockSignals(True)
        self.runs.clear()
        page = self.train_page
        runs = list_runs(self.runs_root)
        for run in runs:
            if run.path == page.run_dir and page.engine.is_running():
                run.status = "running"  # no run_end yet because it is still going
            elif run.status == RUNNING_ELSEWHERE and self._ended_here(run.path,
                                                                      run.events_mtime):
                run.status = "interrupted"  # this window's engine child wrote it, and ended
            text = f"{display_name(run.path)}\n{run.method} · {run.dataset} · {run.status}"
            if run.last_loss is not None:
                text += f" · step {run.steps}, loss {run.last_loss:.3f}"
            if run.best_knn is not None:
                text += f" · best kNN {100 * run.best_knn:.1f}%"
            if run.checkpoint and run.status not in ("finished", "running"):
                text += f" · {run.checkpoint}"
            item = QListWidgetItem(text)
            item.setData(Qt.UserRole, str(run.path))
            item.setData(STATUS_ROLE, run.status)
            tip = run.problem or str(run.path)
            if run.status == RUNNING_ELSEWHERE:
                tip += (f"\nAnother process trains this run: its events.jsonl changed in the "
                        f"last {LIVE_EVENTS_S // 60} min. Double-click to follow it live on "
                        "the Train page.")
            item.setToolTip(tip)
            self.runs.addItem(item)
            if run.path == selected:
                self.runs.setCurrentItem(item)
        self.runs.verticalScrollBar().setValue(scrolled)
        self.runs.blockSignals(False)
        self._watch(runs)
        if not any(run.status in TRAINED_OUTSIDE for run in runs):
            self._live_refresh.stop()
        elif not self._live_refresh.isActive():
            self._live_refresh.start()
        if self.selected_run() != selected:
            if selected is not None and not selected.exists():
                self.statusBar().showMessage(
                    f"The run {selected.name} is gone: its folder was deleted or moved "
                    "outside the app.", 15_000)
            self.run_selected.emit(self.selected_run())

    def _ended_here(self, run_dir: Path, events_mtime: float | None) -> bool:
        """Whether this window's engine child trained ``run_dir`` and nothing wrote its
        events since that child ended (so no other process is training it)."""
        ended = self.train_page.own_runs.get(run_dir)
        return (ended is not None and events_mtime is not None
                and events_mtime <= ended + OWN_RUN_SLACK_S)

    def _watch(self, runs) -> None:
        """Watch the runs folder (runs added, deleted, moved), the events.jsonl of each run
        that nothing trains now (a run resumed elsewhere appends to it) and folders that are
        not runs yet (a run starting elsewhere writes its config.json there). Runs being
        trained are not watched (they change all the time): the periodic refresh sees
        them."""
        wanted = set()
        if self.runs_root.is_dir():
            wanted.add(str(self.runs_root))  # (again, after the folder was made or replaced)
            try:
                wanted |= {str(p) for p in self.runs_root.iterdir()
                           if p.is_dir() and not (p / "config.json").exists()}
            except OSError:
                pass
        wanted |= {str(run.path / "events.jsonl") for run in runs
                   if run.events_mtime is not None and run.status != "running"
                   and run.status not in TRAINED_OUTSIDE}
        watcher = self._runs_watcher
        watched = set(watcher.files()) | set(watcher.directories())
        if watched - wanted:
            watcher.removePaths(sorted(watched - wanted))
        if wanted - watched:
            watcher.addPaths(sorted(wanted - watched))

    def _check_selected_run(self) -> None:
        run_dir = self.selected_run()
        if run_dir is not None and not run_dir.is_dir():
            self.refresh_runs()

    def _selected_run_folder(self, action: str) -> Path | None:
        """The selected run's folder, or None after saying why there is none to ``action``
        (its folder was deleted or moved outside the app: the list is refreshed)."""
        run_dir = self.selected_run()
        if run_dir is None:
            return None
        if not (run_dir / "config.json").is_file():
            self._tell(f"Cannot {action}", f"The run folder {run_dir} is gone: it was deleted "
                       "or moved outside the app. It is no longer in the runs list.")
            self.refresh_runs()
            return None
        return run_dir

    def _tell(self, title: str, text: str) -> QMessageBox:
        """A warning that does not block the event loop (runs and children go on)."""
        box = QMessageBox(QMessageBox.Warning, title, text, QMessageBox.Ok, self)
        box.setAttribute(Qt.WA_DeleteOnClose)
        box.open()
        self.message_box = box
        return box

    def selected_run(self) -> Path | None:
        item = self.runs.currentItem()
        return Path(item.data(Qt.UserRole)) if item is not None else None

    def select_run(self, run_dir: Path) -> None:
        for row in range(self.runs.count()):
            if Path(self.runs.item(row).data(Qt.UserRole)) == Path(run_dir):
                self.runs.setCurrentRow(row)
                return
        raise ValueError(f"{run_dir} is not in the runs list")

    def _on_run_selected(self, current: QListWidgetItem | None, _previous=None) -> None:
        self.run_selected.emit(Path(current.data(Qt.UserRole)) if current else None)
        if (current is not None and current.data(STATUS_ROLE) == RUNNING_ELSEWHERE
                and self.train_page.is_idle()):
            self.train_page.follow(Path(current.data(Qt.UserRole)))  # (the page stays)

    def _on_runs_menu(self, position) -> None:
        item = self.runs.itemAt(position)
        if item is None:
            return
        self.runs.setCurrentItem(item)
        # The list may be made again while the menu is open: keep the path, not the item.
        path, status = Path(item.data(Qt.UserRole)), item.data(STATUS_ROLE)
        menu = QMenu(self)
        menu.setToolTipsVisible(True)
        if self.train_page.following == path:
            menu.addAction("Stop following", self.train_page.stop_following)
        elif status == RUNNING_ELSEWHERE:
            follow = menu.addAction("Follow live", lambda: self.follow_run(path))
            follow.setToolTip("Show this run, which another process trains, on the Train "
                              "page as it goes")
            if self.train_page.engine.is_running():
                follow.setEnabled(False)
                follow.setToolTip("A run is training in this window: stop it first")
        menu.addAction("Show curves", lambda: self.show_run_curves(path))
        menu.addAction("Rename…", self.rename_selected_run)
        menu.addAction("Export…", self.open_export_dialog)
        menu.addAction("Show in file manager", lambda: QDesktopServices.openUrl(
            QUrl.fromLocalFile(str(path))))
        menu.addSeparator()
        menu.addAction("Delete…", self.delete_selected_run)
        menu.popup(self.runs.viewport().mapToGlobal(position))

    def rename_selected_run(self, name: str | None = None) -> None:
        """Ask for (or take) a new display name for the selected run."""
        run_dir = self._selected_run_folder("rename the run")
        if run_dir is None:
            return
        if name is None:
            name, ok = QInputDialog.getText(self, "Rename run", "Name (empty: the folder's "
                                            "name):", text=display_name(run_dir))
            if not ok:
                return
        try:
            rename_run(run_dir, name)
        except RunActionError as exc:
            QMessageBox.warning(self, "Cannot rename the run", str(exc))
        self.refresh_runs()

    def delete_selected_run(self, confirm: bool = True) -> bool:
        """Delete the selected run folder after asking; a running run is refused."""
        run_dir = self._selected_run_folder("delete the run")
        if run_dir is None:
            return False
        if run_dir == self.train_page.run_dir and self.train_page.engine.is_running():
            QMessageBox.information(self, "Run is training", "Stop the run before deleting "
                                    "it (Run ▸ Stop).")
            return False
        item = self.runs.currentItem()
        if item is not None and item.data(STATUS_ROLE) == RUNNING_ELSEWHERE:
            self._tell("Run is training", "Another process is training this run (its "
                       f"events.jsonl changed in the last {LIVE_EVENTS_S // 60} min). Stop "
                       "it where it runs first (Ctrl+C, or SIGTERM to the engine or "
                       "torchrun: it saves a checkpoint and stops).")
            return False
        pid = background_process(run_dir)
        if pid is not None:
            self._tell("Run is training", f"This run goes on training in the background "
                       f"(process {pid}). Stop it first: `kill -TERM {pid}` saves a checkpoint "
                       "and stops it.")
            return False
        if confirm and QMessageBox.question(
                self, "Delete run", f"Permanently delete “{display_name(run_dir)}” and "
                f"everything in it (checkpoints, embeddings, probes, exports)?\n\n{run_dir}",
                QMessageBox.Yes | QMessageBox.No, QMessageBox.No) != QMessageBox.Yes:
            return False
        try:
            delete_run(run_dir, self.runs_root)
        except RunActionError as exc:
            QMessageBox.warning(self, "Cannot delete the run", str(exc))
            return False
        finally:
            self.refresh_runs()
        return True

    # --- drag and drop -------------------------------------------------------------------

    def dragEnterEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        paths = [Path(url.toLocalFile()) for url in event.mimeData().urls() if url.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.open_dropped(paths[0])

    def open_dropped(self, path: Path) -> None:
        """A dropped folder is opened as the image folder; a dropped image is looked up
        among the selected run's images."""
        if path.is_dir():
            self.open_folder(path)
            self.tabs.setCurrentWidget(self.data_page)
        elif path.is_file():
            self.query_image_file(path)
        else:
            self.statusBar().showMessage(f"{path} does not exist", 10_000)

    def query_image_file(self, path: Path) -> None:
        """Nearest neighbours of an image file from anywhere, in the selected run."""
        if self.selected_run() is None:
            self.statusBar().showMessage(
                f"Select a trained run in the runs list to see the neighbours of {path.name}",
                10_000)
            return
        self.tabs.setCurrentWidget(self.explore_page)
        self.explore_page.show_neighbours_of_file(path)

    def show_neighbours_of_image(self, path: str) -> None:
        """Neighbours of an image of the Data page: found on the selected run's map when it
        is there, otherwise embedded as a file."""
        if self.selected_run() is None:
            self.statusBar().showMessage("Select a trained run in the runs list to see the "
                                         "nearest neighbours of an image", 10_000)
            return
        data = self.explore_page.map_view.data
        index = None
        if data is not None:
            index = next((i for i in range(len(data)) if data.absolute_path(i) == path), None)
        self.tabs.setCurrentWidget(self.explore_page)
        if index is not None:
            self.explore_page.show_neighbours(index)
        else:
            self.explore_page.show_neighbours_of_file(path)

    def _on_run_opened(self, item: QListWidgetItem) -> None:
        """Double-click: follow a run trained elsewhere live (when this window trains none),
        else overlay the run's curves on the Train page's."""
        path = Path(item.data(Qt.UserRole))
        if (item.data(STATUS_ROLE) == RUNNING_ELSEWHERE
                and not self.train_page.engine.is_running()):
            self.follow_run(path)
        else:
            self.show_run_curves(path)

    def follow_run(self, run_dir: Path) -> bool:
        """Show ``run_dir``, trained by another process, live on the Train page; following
        another run, or starting a run here, stops it."""
        if not (Path(run_dir) / "config.json").is_file():
            self._tell("Cannot follow the run", f"The run folder {run_dir} is gone: it was "
                       "deleted or moved outside the app. It is no longer in the runs list.")
            self.refresh_runs()
            return False
        if self.train_page.following == Path(run_dir):
            self.tabs.setCurrentWidget(self.train_page)  # (already followed)
            return True
        if not self.train_page.follow(Path(run_dir)):
            self._tell("Cannot follow the run", "A run is training in this window and the "
                       "Train page shows it: stop it first. Meanwhile “Show curves” in the "
                       "runs list compares the other run's curves with it.")
            return False
        self.tabs.setCurrentWidget(self.train_page)
        return True

    def show_run_curves(self, path: Path) -> None:
        """Draw a run's curves behind the Train page's own (replayed once)."""
        path = Path(path)
        events = path / "events.jsonl"
        if not path.is_dir():
            self._tell("Cannot show the run", f"The run folder {path} is gone: it was deleted "
                       "or moved outside the app. It is no longer in the runs list.")
            self.refresh_runs()
            return
        if not events.is_file():
            QMessageBox.information(self, "Run", f"{path.name} has no events yet.")
            return
        self.train_page.curves.clear_overlays()
        self.train_page.curves.add_overlay(path.name, RunHistory.replay(events))
        self.tabs.setCurrentWidget(self.train_page)

    def ask_close_choice(self) -> str:
        """Ask what becomes of the run that is training when the window closes: "stop"
        (save a checkpoint, then close), "leave" (close; the run goes on in the background)
        or "cancel" (keep the window open)."""
        box = QMessageBox(QMessageBox.Question, "Training is running",
                          "A run is training. Stop it before closing, or leave it running?",
                          QMessageBox.NoButton, self)
        box.setInformativeText(
            "Stop and close: a checkpoint is saved first; Resume goes on from it.\n"
            "Leave running: the run goes on without the window and keeps writing to its "
            "folder; open it from the runs list later.")
        stop = box.addButton("Stop and close", QMessageBox.AcceptRole)
        leave = box.addButton("Leave running", QMessageBox.DestructiveRole)
        box.addButton(QMessageBox.Cancel)
        box.setDefaultButton(stop)
        box.exec()
        clicked = box.clickedButton()
        return "stop" if clicked is stop else "leave" if clicked is leave else "cancel"

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        page = self.train_page
        if page.engine.is_running():
            if self._closing_after_stop:
                self.statusBar().showMessage("Still saving the checkpoint: the window closes "
                                             "when the run has stopped.")
                event.ignore()
                return
            choice = self.ask_close_choice()
            if choice == "cancel":
                event.ignore()
                return
            if choice == "stop":
                # The window stays responsive while the engine checkpoints, and closes when
                # the child has ended (the engine terminates it if it does not stop in time).
                event.ignore()
                self._closing_after_stop = True
                page.engine.ended.connect(self._close_after_stop)
                page.stop()
                self.statusBar().showMessage("Stopping the run (saving a checkpoint); the "
                                             "window closes when it has stopped…")
                return
            page.detach()
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("window_state", self.saveState())
        self.data_page.shutdown()
        self.augment_page.close()  # waits for a preview still being made
        self.explore_page.cancel(quiet=True)
        self.probe_page.cancel(quiet=True)
        page.stop_following(quiet=True)
        self._selected_check.stop()
        self._live_refresh.stop()
        super().closeEvent(event)

    def _close_after_stop(self, status: str, _code: int = 0, _reason: str = "") -> None:
        self.train_page.engine.ended.disconnect(self._close_after_stop)
        self._closing_after_stop = False
        if status in ("stopped", "finished"):
            QTimer.singleShot(0, self.close)  # after the Train page has shown how it ended
            return
        # It did not stop cleanly: stay open so the person sees what happened.
        self.tabs.setCurrentWidget(self.train_page)
        self.statusBar().showMessage(f"The run did not stop cleanly ({status}): see the Train "
                                     "page. Close the window again to quit.")
