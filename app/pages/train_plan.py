"""What the Train page says before a run: whether it is ready (the folder's counts), how
long the settings take here, the CPU's choice of epochs, and the one image-size setting it
shares with the Augmentations page."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QLineEdit

from app.widgets.run_estimate import RunEstimate
from app.widgets.settings_form import SettingsForm
from engine.config.train_config import preset
from engine.data.scan import is_list_file

CHOOSE_FOLDER = "Choose an image folder (Browse…, or open one on the Data page), then press Start."



def is_data_source(path: str | Path) -> bool:
    """Whether ``path`` is something to train on: an image folder, or a .txt/.csv list of
    images (as the Explore page's "Retrain on these" writes)."""
    return Path(path).expanduser().is_dir() or is_list_file(path)

class TrainPlan(QObject):
    """The run about to be started: ``folder`` (the page's folder field) and ``form`` (its
    settings), the counts of the folder's scan and :attr:`estimate` (a RunEstimate line).

    Until a person chooses the epochs (typing them, or settings applied with epochs), the
    epochs on a CPU are chosen for a first run of minutes (RunEstimate.cpu_epochs), and the
    reason is said under the estimate."""

    def __init__(self, folder: QLineEdit, form: SettingsForm, runs_root: Path,
                 cache_dir: Path | None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.folder, self.form = folder, form
        self.estimate = RunEstimate(runs_root, cache_dir)
        self.estimate.measured.connect(self.update)
        self._counts: tuple[str, int, int] | None = None
        #: Epochs chosen for the device while a person has not chosen them, or None.
        self.auto_epochs: int | None = None
        self.epochs_chosen = False
        self._updating = False
        form.changed.connect(self._on_form_changed)

    def set_counts(self, folder: str | Path, images: int, classes: int) -> None:
        self._counts = (str(Path(folder)), images, classes)
        self.update()

    def counts(self) -> tuple[int, int] | None:
        """(images, classes) of the folder in the folder field, when it was scanned."""
        folder = self.folder.text().strip()
        if self._counts is None or not folder or str(Path(folder).expanduser()) \
                != self._counts[0]:
            return None
        return self._counts[1], self._counts[2]

    def ready_text(self) -> str:
        """What pressing Start would do, for the status line."""
        folder = self.folder.text().strip()
        if not folder:
            return CHOOSE_FOLDER
        if not is_data_source(folder):
            return f"The folder {folder} does not exist: choose another one."
        counts = self.counts()
        what = Path(folder).name or folder
        if counts is not None:
            images, classes = counts
            kinds = (f" in {classes} classes" if classes >= 2 else
                     " (no class sub-folders: no labels, so no kNN accuracy)")
            what = f"{images:,} images{kinds}"
        if not self.form.is_valid():
            return f"Ready: {what}. Fix the highlighted settings, then press Start."
        return f"Ready: {what}; press Start."

    def _on_form_changed(self) -> None:
        if self._updating:
            return
        epochs = self.form.values().epochs
        if epochs not in (self.auto_epochs, preset(self.form.values().method).epochs):
            self.epochs_chosen = True  # a person's choice: kept
        self.update()

    def update(self) -> None:
        """Estimate the run's time; on a CPU, and until a person chooses the epochs, choose
        epochs that make a first run of minutes and say why."""
        if self._updating:
            return
        self._updating = True
        try:
            counts = self.counts()
            images = counts[0] if counts else None
            note = ""
            if images and not self.epochs_chosen:
                cfg = self.form.values()
                paper = preset(cfg.method).epochs
                chosen = self.estimate.cpu_epochs(dataclasses.replace(cfg, epochs=paper),
                                                  images)
                if chosen is not None:
                    self.auto_epochs, note = chosen
                    self.form.set_value("epochs", self.auto_epochs)
                elif self.auto_epochs is not None:  # e.g. the device became a GPU
                    self.auto_epochs = None
                    self.form.set_value("epochs", paper)
            self.estimate.show_for(self.form.values(), images, note)
        finally:
            self._updating = False

    def share_image_size(self, preview) -> None:
        """Make ``preview``'s view size (an AugmentPreview) and the form's image_size one
        setting: each shows the other's changes; "auto" shows the device's choice."""
        def show() -> None:
            size = self.form.values().image_size
            if size is not None:
                preview.show_image_size(size)
                return
            counts = self.counts()
            resolved = self.estimate.resolved(self.form.values(),
                                              counts[0] if counts else 10**6)
            if resolved is not None:
                preview.show_image_size(resolved[0]["image_size"], auto=True)

        self.form.changed.connect(show)
        preview.image_size_edited.connect(lambda size: self.form.set_value("image_size", size))
        show()
