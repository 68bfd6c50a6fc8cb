"""The main window: a runs sidebar beside the pages (Data, Augmentations, Train, ...)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QThreadPool, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices
from PySide6.QtWidgets import QFileDialog, QMainWindow, QMessageBox, QSplitter, QTabWidget

from app.child.runs_watcher import RunsWatcher
from app.child.workers import Relay, Task
from app.dialogs import run_dialogs
from app.dialogs.export_dialog import ExportDialog
from app.model.run_model import RUNNING_ELSEWHERE, list_runs
from app.pages.augment_page import AugmentPreview
from app.pages.compare_page import ComparePage
from app.pages.data_page import DataPage
from app.pages.explore_page import ExplorePage
from app.pages.probe_page import ProbePage
from app.pages.start_page import StartPage
from app.pages.train_page import TrainPage
from app.widgets.runs_sidebar import RunsSidebar
from app.window_actions import build_actions, update_actions
from app.window_runs import RunCommands
from engine.run.layout import RunDir

ORGANISATION, APPLICATION = "Contrastive Explorer", "Contrastive Explorer"
#: A run this window trained counts as ended here (not going on elsewhere) while its
#: events.jsonl is no newer than the end of the engine child plus this much.
OWN_RUN_SLACK_S = 2.0


def device_description() -> str:
    """The training device the engine will find, for the status bar."""
    from engine.config.resolve import resolve_device

    _, info = resolve_device("auto")
    if info.type == "cpu":
        return f"CPU only, {info.name}: small models and images suit it"
    memory = f", {info.memory_gb:.0f} GB" if info.memory_gb else ""
    return f"GPU: {info.name}{memory}"


class MainWindow(RunCommands, QMainWindow):
    """Runs sidebar + one page per job. Drop a folder on the window to open it.

    The runs list (:attr:`sidebar`) follows the runs folder: a run deleted or moved from
    outside is taken off it (:attr:`runs_watcher`, and a periodic check of the selected
    run), and an action on a run whose folder has gone says so.

    A run that another process trains (no run_end, events.jsonl changed in the last
    LIVE_EVENTS_S, not this window's engine child) is listed as "running elsewhere", and
    the list is made again every few seconds while there is one. Double-click or
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
        self.runs_watcher = RunsWatcher(self.runs_root, self)
        self.runs_watcher.changed.connect(self.refresh_runs)
        self._closing_after_stop = False
        #: The last message box shown without blocking (see _tell).
        self.message_box: QMessageBox | None = None
        self._demo_relay: Relay | None = None  # while the demo dataset is being made
        self.setAcceptDrops(True)
        self.train_page = TrainPage(self.runs_root, cache_dir)
        self.train_page.run_changed.connect(self.refresh_runs)
        for source in (self.train_page.engine, self.train_page.follower):
            source.event.connect(self._on_run_event)
        self.data_page = DataPage()
        self.data_page.folder_scanned.connect(
            lambda manifest: self._remember_folder(Path(manifest.root)))
        self.augment_page = AugmentPreview()
        self.data_page.folder_scanned.connect(self.augment_page.set_manifest)
        self.augment_page.pairs_ready.connect(self._sync_augmentations)
        self.train_page.share_image_size(self.augment_page)
        self.explore_page = ExplorePage(cache_dir)
        self.run_selected.connect(self.explore_page.set_run)
        self.explore_page.retrain_requested.connect(self.retrain_on_list)
        self.compare_page = ComparePage(self.runs_root, cache_dir)
        self.run_selected.connect(self.compare_page.set_run)
        self.probe_page = ProbePage(cache_dir)
        self.run_selected.connect(self.probe_page.set_run)
        self.data_page.image_activated.connect(self.show_neighbours_of_image)
        self.data_page.folder_scanned.connect(self.train_page.set_scanned)
        self.start_page = StartPage(self.runs_root, self.settings)
        self.start_page.open_folder_requested.connect(self.choose_folder)
        self.start_page.demo_requested.connect(self.open_demo)
        self.start_page.folder_chosen.connect(self.open_folder)
        self.start_page.run_chosen.connect(self._on_start_run_chosen)
        self.data_page.folder_scanned.connect(
            lambda manifest: self.start_page.note_folder(manifest.root))
        self.tabs = QTabWidget()
        self.tabs.addTab(self.start_page, "Start")
        self.tabs.addTab(self.data_page, "Data")
        self.tabs.addTab(self.augment_page, "Augmentations")
        self.tabs.addTab(self.train_page, "Train")
        self.tabs.addTab(self.explore_page, "Explore")
        self.tabs.addTab(self.compare_page, "Compare")
        self.tabs.addTab(self.probe_page, "Probe")
        self.sidebar = RunsSidebar()
        # The Data page's tag filter: the selected run's tags, read again when the run or the
        # folder changes and when the page is shown (tags are made on the Explore page).
        self.run_selected.connect(self.data_page.show_tags_of)
        self.data_page.folder_scanned.connect(
            lambda _manifest: self.data_page.show_tags_of(self.selected_run()))
        self.tabs.currentChanged.connect(
            lambda _i: self.tabs.currentWidget() is self.data_page
            and self.data_page.show_tags_of(self.selected_run()))
        self.train_page.progressed.connect(self.sidebar.show_progress)
        self._connect_sidebar()
        #: The export dialog last opened (it stays open; None once closed).
        self.export_dialog: ExportDialog | None = None
        splitter = QSplitter()
        splitter.addWidget(self.sidebar)
        splitter.setCollapsible(0, False)
        splitter.addWidget(self.tabs)
        splitter.setSizes([260, 1100])
        self.setCentralWidget(splitter)
        self.actions: dict[str, QAction] = build_actions(self)
        self.train_page.engine_state_changed.connect(self._update_actions)
        self._update_actions()
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
        self.tabs.setCurrentWidget(self.start_page)  # nothing is open yet

    def _connect_sidebar(self) -> None:
        side, page = self.sidebar, self.train_page
        side.selected.connect(self._on_run_selected)
        side.opened.connect(self._on_run_opened)
        side.follow_requested.connect(self.follow_run)
        side.unfollow_requested.connect(page.stop_following)
        side.curves_requested.connect(self.show_run_curves)
        side.rename_requested.connect(self.rename_selected_run)
        side.export_requested.connect(self.open_export_dialog)
        side.delete_requested.connect(self.delete_selected_run)
        side.reveal_requested.connect(
            lambda path: QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))))
        side.selection_gone.connect(self.refresh_runs)
        # Clicking the run already selected reads its folder again.
        side.runs.itemClicked.connect(lambda _item: self.reread_selected_run())

    def _update_actions(self) -> None:
        page = self.train_page
        self.sidebar.followed = page.following
        self.sidebar.training_here = page.engine.is_running()
        update_actions(self.actions, running=page.engine.is_running(),
                       following=page.following is not None)

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
        dialog.destroyed.connect(lambda _obj=None: self._forget_export_dialog(dialog))
        dialog.open()
        self.export_dialog = dialog
        return dialog

    def _forget_export_dialog(self, dialog: ExportDialog) -> None:
        if self.export_dialog is dialog:
            self.export_dialog = None

    def choose_folder(self) -> None:
        """Ask for an image folder and open it."""
        folder = QFileDialog.getExistingDirectory(self, "Image folder")
        if folder:
            self.open_folder(Path(folder))

    def open_folder(self, folder: Path) -> None:
        """Show the folder on the Data page and make it the one to train on."""
        self.data_page.open_folder(folder)
        self._remember_folder(Path(folder))
        if self.tabs.currentWidget() is self.start_page:
            self.tabs.setCurrentWidget(self.data_page)

    def open_demo(self) -> None:
        """Open the demo dataset with its settings. It is made on first use in a worker
        thread (1,797 PNG files: seconds), so the window stays responsive meanwhile."""
        from engine.data.demo import demo_dataset

        if self._demo_relay is not None:
            return  # being made
        self.statusBar().showMessage("Preparing the demo dataset…")
        self._demo_relay = relay = Relay(self)
        relay.done.connect(lambda _generation, folder: self._open_demo_folder(folder))
        relay.failed.connect(lambda _generation, message: self._open_demo_folder(None, message))
        QThreadPool.globalInstance().start(Task(demo_dataset, 0, relay))

    def _open_demo_folder(self, folder: Path | None, problem: str = "") -> None:
        from engine.config.locations import user_data_dir
        from engine.data.demo import DEMO_SETTINGS

        if self._demo_relay is not None:
            self._demo_relay.deleteLater()
            self._demo_relay = None
        if folder is None:
            self.statusBar().clearMessage()
            self._tell("Cannot make the demo dataset", f"The demo dataset could not be "
                       f"written to {user_data_dir() / 'demo'}: {problem}. Make room there "
                       "(or make the folder writable), then try again.")
            return
        self.open_folder(folder)
        self.apply_settings(DEMO_SETTINGS)
        self.statusBar().showMessage("The demo: 1,797 handwritten digits in 10 classes. "
                                     "Press Start on the Train page to train on them.", 15_000)

    def _on_start_run_chosen(self, run_dir: Path) -> None:
        if not RunDir(run_dir).is_run():
            self._tell("Cannot open the run", run_dialogs.gone(run_dir))
            self.refresh_runs()
            return
        self.select_run(run_dir)
        self.tabs.setCurrentWidget(self.explore_page)

    def apply_settings(self, values: dict) -> None:
        """Show settings (e.g. the demo's) on the Train and Augmentations pages."""
        self.train_page.apply_settings(values)
        self.augment_page.apply_settings(values)

    def _sync_augmentations(self) -> None:
        """The trainer gets exactly the augmentations shown on the preview."""
        self.train_page.augment_overrides = self.augment_page.engine_settings()

    def _remember_folder(self, folder: Path) -> None:
        self.train_page.set_folder(folder)
        self.settings.setValue("last_folder", str(folder))

    def refresh_runs(self) -> None:
        """List the runs again, keeping the selected one selected."""
        selected = self.selected_run()
        page = self.train_page
        runs = list_runs(self.runs_root)
        for run in runs:
            if run.path == page.run_dir and page.engine.is_running():
                run.status = "running"  # no run_end yet because it is still going
            elif run.status == RUNNING_ELSEWHERE and self._ended_here(run.path,
                                                                      run.events_mtime):
                run.status = "interrupted"  # this window's engine child wrote it, and ended
        self.sidebar.show_runs(runs)
        self.runs_watcher.watch(runs)
        if self.selected_run() != selected:
            if selected is not None and not selected.exists():
                self.statusBar().showMessage(
                    f"The run {selected.name} is gone: its folder was deleted or moved "
                    "outside the app.", 15_000)
            self.run_selected.emit(self.selected_run())
        else:
            self.reread_selected_run()

    def _on_run_event(self, event: dict) -> None:
        """A checkpoint written or the end of the run shown on the Train page (trained here
        or followed): list the runs again and re-read the selected run's checkpoints."""
        if event.get("type") in ("checkpoint", "run_end"):
            self.refresh_runs()

    def reread_selected_run(self) -> None:
        """Tell the pages that show the selected run to read its checkpoints again (they
        learn of a run when it is selected, which may be before its first checkpoint)."""
        run_dir = self.selected_run()
        if run_dir is None:
            return
        for page in (self.explore_page, self.probe_page):
            if page.run_dir == run_dir:
                page.refresh_checkpoints()
        dialog = self.export_dialog
        if dialog is not None and dialog.run_dir == run_dir:
            dialog.refresh_checkpoints()

    def _ended_here(self, run_dir: Path, events_mtime: float | None) -> bool:
        """Whether this window's engine child trained ``run_dir`` and nothing wrote its
        events since that child ended (so no other process is training it)."""
        ended = self.train_page.own_runs.get(run_dir)
        return (ended is not None and events_mtime is not None
                and events_mtime <= ended + OWN_RUN_SLACK_S)

    def selected_run(self) -> Path | None:
        return self.sidebar.selected_run()

    def select_run(self, run_dir: Path) -> None:
        self.sidebar.select_run(run_dir)

    def _on_run_selected(self, run_dir: Path | None, status: str) -> None:
        self.run_selected.emit(run_dir)
        if run_dir is not None and status == RUNNING_ELSEWHERE and self.train_page.is_idle():
            self.train_page.follow(run_dir)  # (the page stays)

    # --- drag and drop -------------------------------------------------------------------

    def dragEnterEvent(self, event) -> None:
        if any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
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
        self._explore(self.explore_page.show_neighbours_of_file, path,
                      f"the neighbours of {Path(path).name}")

    def show_neighbours_of_image(self, path: str) -> None:
        """Neighbours of an image of the Data page: found on the selected run's map when it
        is there, otherwise embedded as a file."""
        self._explore(self.explore_page.show_neighbours_of_image, path,
                      "the nearest neighbours of an image")

    def _explore(self, show, path: str | Path, what: str) -> None:
        if self.selected_run() is None:
            self.statusBar().showMessage(f"Select a trained run in the runs list to see {what}",
                                         10_000)
            return
        self.tabs.setCurrentWidget(self.explore_page)
        show(path)

    def ask_close_choice(self) -> str:
        """"stop", "leave" or "cancel": what becomes of the run training as the window
        closes (:func:`app.dialogs.run_dialogs.ask_close_choice`)."""
        return run_dialogs.ask_close_choice(self)

    def closeEvent(self, event) -> None:
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
        self.compare_page.cancel(quiet=True)
        self.probe_page.cancel(quiet=True)
        page.stop_following(quiet=True)
        self.sidebar.stop_checking()
        self.runs_watcher.stop()
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
