"""What the window does with a run from the runs list: rename, delete, follow a run
trained elsewhere, draw its curves, train a new run on a subset of its images. Part of
:class:`app.main_window.MainWindow`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PySide6.QtWidgets import QMessageBox

from app.dialogs import run_dialogs
from app.model.run_actions import RunActionError, background_process, delete_run, rename_run
from app.model.run_model import RUNNING_ELSEWHERE, RunHistory
from engine.evaluate.embed import load_run_config
from engine.run.layout import RunDir


class RunCommands:
    """The runs list's commands, mixed into the main window (which has ``sidebar``,
    ``train_page``, ``tabs``, ``runs_root``, ``selected_run`` and ``refresh_runs``)."""

    def _selected_run_folder(self, action: str) -> Path | None:
        """The selected run's folder, or None after saying why there is none to ``action``
        (its folder was deleted or moved outside the app: the list is refreshed)."""
        run_dir = self.selected_run()
        if run_dir is None:
            return None
        if not RunDir(run_dir).is_run():
            self._tell(f"Cannot {action}", run_dialogs.gone(run_dir))
            self.refresh_runs()
            return None
        return run_dir

    def _tell(self, title: str, text: str) -> QMessageBox:
        """A warning that does not block the event loop (runs and children go on)."""
        self.message_box = run_dialogs.tell(self, title, text)
        return self.message_box

    def rename_selected_run(self, name: str | None = None) -> None:
        """Ask for (or take) a new display name for the selected run."""
        run_dir = self._selected_run_folder("rename the run")
        if run_dir is None:
            return
        if name is None:
            name = run_dialogs.ask_run_name(self, run_dir)
            if name is None:
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
        if self.sidebar.selected_status() == RUNNING_ELSEWHERE:
            self._tell("Run is training", run_dialogs.TRAINED_ELSEWHERE)
            return False
        pid = background_process(run_dir)
        if pid is not None:
            self._tell("Run is training", run_dialogs.in_background(pid))
            return False
        if confirm and not run_dialogs.confirm_delete(self, run_dir):
            return False
        try:
            delete_run(run_dir, self.runs_root)
        except RunActionError as exc:
            QMessageBox.warning(self, "Cannot delete the run", str(exc))
            return False
        finally:
            self.refresh_runs()
        return True

    def _on_run_opened(self, path: Path, status: str) -> None:
        """Double-click: follow a run trained elsewhere live (when this window trains none),
        else overlay the run's curves on the Train page's."""
        if status == RUNNING_ELSEWHERE and not self.train_page.engine.is_running():
            self.follow_run(path)
        else:
            self.show_run_curves(path)

    def follow_run(self, run_dir: Path) -> bool:
        """Show ``run_dir``, trained by another process, live on the Train page; following
        another run, or starting a run here, stops it."""
        if not RunDir(run_dir).is_run():
            self._tell("Cannot follow the run", run_dialogs.gone(run_dir))
            self.refresh_runs()
            return False
        if self.train_page.following == Path(run_dir):
            self.tabs.setCurrentWidget(self.train_page)  # (already followed)
            return True
        if not self.train_page.follow(Path(run_dir)):
            self._tell("Cannot follow the run", run_dialogs.FOLLOW_REFUSED)
            return False
        self.tabs.setCurrentWidget(self.train_page)
        return True

    def show_run_curves(self, path: Path) -> None:
        """Draw a run's curves behind the Train page's own (replayed once), and play its
        live map when the Train page has no run of its own going."""
        path = Path(path)
        events = RunDir(path).events
        if not path.is_dir():
            self._tell("Cannot show the run", run_dialogs.gone(path))
            self.refresh_runs()
            return
        if not events.is_file():
            QMessageBox.information(self, "Run", f"{path.name} has no events yet.")
            return
        self.train_page.curves.clear_overlays()
        self.train_page.curves.add_overlay(path.name, RunHistory.replay(events))
        self.train_page.show_live_map(path)
        self.tabs.setCurrentWidget(self.train_page)

    def retrain_on_list(self, list_path: Path, run_dir: Path, what: str) -> bool:
        """Start a new run on the images of ``list_path`` with the settings of ``run_dir``
        (the Explore page's "Retrain on these" / "Retrain without these"). Returns whether it
        started; when the Train page is busy with another run it says so and starts nothing."""
        page = self.train_page
        if page.engine.is_running() or page.following is not None:
            busy = page.run_dir.name if page.run_dir is not None else "a run"
            self._tell("Cannot start a new run yet",
                       f"The Train page is busy with {busy}. The list of {what} is saved as "
                       f"{list_path}: when that run has ended, choose it as the image folder "
                       "on the Train page and press Start.")
            return False
        try:
            cfg = load_run_config(run_dir)
        except (OSError, ValueError) as exc:
            self._tell("Cannot read the run's settings", f"{run_dir}: {exc}")
            return False
        values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
                  if f.name not in ("data", "augment")}
        values["augment"] = {f.name: getattr(cfg.augment, f.name)
                             for f in dataclasses.fields(cfg.augment)
                             if f.metadata and f.metadata["cli"]
                             and getattr(cfg.augment, f.name) is not None}
        self.apply_settings(values)
        images = sum(1 for line in Path(list_path).read_text(encoding="utf-8").splitlines()
                     if line.strip())
        page.set_folder(list_path)
        page.set_folder_counts(list_path, images, 0)
        self.tabs.setCurrentWidget(page)
        page.start()
        self.statusBar().showMessage(f"Training a new run on {what} (the list: {list_path}), "
                                     f"with the settings of {run_dir.name}.", 15_000)
        return True
