"""The Train page: choose a folder and settings, start, stop or resume a run in a child
process, and watch its curves."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.curves import TrainingCurves
from app.engine_process import EngineProcess
from app.run_model import RunHistory
from app.settings_form import SettingsForm
from engine.config import TrainConfig, preset

#: Settings shown on the page, in this order (the rest keep their preset values).
FORM_FIELDS = ["method", "backbone", "image_size", "batch_size", "epochs", "max_steps", "lr",
               "optimizer", "temperature", "queue_size", "moco_momentum", "proj_hidden_dim",
               "proj_out_dim", "precision", "device", "seed"]


class TrainPage(QWidget):
    """Settings form, run controls, progress and live curves of the current run.

    Signals:
        run_changed(): a run started, ended, or wrote its first event (refresh run lists).
        engine_state_changed(): the engine child started or ended.
    """

    run_changed = Signal()
    engine_state_changed = Signal()

    def __init__(self, runs_root: Path, cache_dir: Path | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runs_root = Path(runs_root)
        self.cache_dir = cache_dir
        self.engine = EngineProcess(self)
        self.history = RunHistory()
        self.run_dir: Path | None = None
        self._started_at = 0.0
        #: Augmentation settings passed to the engine beyond the method's preset.
        self.augment_overrides: dict[str, object] = {}

        self.folder = QLineEdit()
        self.folder.setPlaceholderText("image folder (class sub-folders give labels)")
        self.folder.setToolTip("The folder of images to train on. Sub-folders are classes.")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._on_browse)
        self.form = SettingsForm(preset("simclr"), fields=FORM_FIELDS)
        self.form.validity_changed.connect(lambda ok: self._update_buttons())
        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("Start a new run in a background process (Ctrl+Return)")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Save a checkpoint and stop the run")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue the last stopped run from its checkpoint")
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.resume_button.clicked.connect(self.resume)
        self.progress = QProgressBar()
        self.progress.setFormat("%p%")
        self.status = QLabel("Choose a folder and press Start.")
        self.status.setWordWrap(True)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(500)
        self.curves = TrainingCurves()

        top = QHBoxLayout()
        top.addWidget(self.folder, 1)
        top.addWidget(browse)
        buttons = QHBoxLayout()
        for b in (self.start_button, self.stop_button, self.resume_button):
            buttons.addWidget(b)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        scroll = QScrollArea()
        scroll.setWidget(self.form)
        scroll.setWidgetResizable(True)
        left_layout.addWidget(scroll, 1)
        left_layout.addLayout(buttons)
        right = QSplitter(Qt.Vertical)
        right.addWidget(self.curves)
        right.addWidget(self.log)
        right.setSizes([600, 120])
        body = QSplitter()
        body.addWidget(left)
        body.addWidget(right)
        body.setSizes([320, 900])
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(body, 1)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)

        self.engine.event.connect(self._on_event)
        self.engine.log.connect(self.log.appendPlainText)
        self.engine.malformed.connect(
            lambda line: self.log.appendPlainText(f"[ignored a malformed event line] {line}"))
        self.engine.ended.connect(self._on_ended)
        self._update_buttons()

    # --- actions -------------------------------------------------------------------------

    def set_folder(self, folder: str | Path) -> None:
        self.folder.setText(str(folder))

    def _on_browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Image folder", self.folder.text())
        if folder:
            self.set_folder(folder)

    def _settings_arguments(self, cfg: TrainConfig) -> list[str]:
        args = []
        for name in FORM_FIELDS:
            value = getattr(cfg, name)
            if value is not None:
                args += ["--" + name.replace("_", "-"), str(value)]
        for name, value in self.augment_overrides.items():
            args += ["--" + name.replace("_", "-"), str(value)]
        return args

    def apply_settings(self, values: dict) -> None:
        """Show ``values`` (training settings, and an "augment" mapping) in the form."""
        for name, value in values.items():
            if name == "augment":
                self.augment_overrides = dict(value)
            elif name in FORM_FIELDS:
                self.form.set_value(name, value)

    def start(self) -> None:
        folder = self.folder.text().strip()
        if not folder:
            self._say("Choose an image folder first.")
            return
        if not self.form.is_valid():
            self._say("Fix the highlighted settings first: " + "; ".join(
                self.form.errors().values()))
            return
        cfg = dataclasses.replace(self.form.values(), data=folder)
        args = ["train", "--data", folder, "--runs-root", str(self.runs_root)]
        if self.cache_dir:
            args += ["--cache-dir", str(self.cache_dir)]
        self._launch(args + self._settings_arguments(cfg), fresh=True)

    def resume(self) -> None:
        if self.run_dir is None:
            return
        args = ["train", "--resume", str(self.run_dir)]
        if self.cache_dir:
            args += ["--cache-dir", str(self.cache_dir)]
        self._launch(args, fresh=False)

    def stop(self) -> None:
        if self.engine.is_running():
            self._say("Stopping: saving a checkpoint…")
            self.engine.stop()

    def _launch(self, args: list[str], *, fresh: bool) -> None:
        if fresh:
            self.history = RunHistory()
            self.run_dir = None
            self.curves.show_history(self.history)
            self.log.clear()
        self._started_at = time.monotonic()
        self.engine.start(args)
        self._say("Starting the engine…")
        self._update_buttons()

    # --- engine events -------------------------------------------------------------------

    def _on_event(self, event: dict) -> None:
        self.history.add(event)
        kind = event.get("type")
        if kind == "progress":
            self._say(f"{event.get('phase', '')}: {event.get('message', '')}")
        elif kind == "run_start":
            self.run_dir = Path(event["run_dir"])
            device = event.get("device") or {}
            self._say(f"Training on {device.get('name', 'the device')}: "
                      f"{(event.get('dataset') or {}).get('summary', '')}")
            self.run_changed.emit()
        elif kind == "step":
            self.curves.mark_dirty()
            fraction = self.history.progress
            if fraction is not None:
                self.progress.setValue(int(round(100 * fraction)))
            eta = self.history.eta_seconds()
            warning = ("  Embeddings may be collapsing (spread below 0.2)."
                       if self.curves.collapsing() else "")
            knn = (f", kNN accuracy {100 * self.history.knn[-1][1]:.1f}%"
                   if self.history.knn else "")
            self._say(f"step {event.get('step')} of {self.history.total_steps}, loss "
                      f"{event.get('loss', float('nan')):.4f}{knn}"
                      + (f", about {_duration(eta)} left" if eta is not None else "")
                      + warning)
        elif kind == "eval":
            self.curves.mark_dirty()
            self.log.appendPlainText(
                f"epoch {event.get('epoch')}: kNN accuracy {100 * event['knn_top1']:.1f}% "
                f"({event.get('images')} images, {event.get('seconds', 0):.1f} s)")
        elif kind == "warning":
            self.log.appendPlainText("warning: " + str(event.get("message", "")))

    def _on_ended(self, status: str, code: int, reason: str) -> None:
        self.curves.mark_dirty()
        if status in ("finished", "stopped"):
            self._say(f"Run {status}: {reason}")
        else:
            tail = "\n".join(list(self.engine.log_tail)[-15:])
            self._say(f"Run {status}: {reason}")
            box = QMessageBox(QMessageBox.Warning, f"Run {status}", reason,
                              QMessageBox.Ok, self)
            box.setDetailedText(tail)
            box.open()  # not modal-blocking: the event loop keeps running
            self.failure_box = box
        self._update_buttons()
        self.run_changed.emit()

    def _update_buttons(self) -> None:
        running = self.engine.is_running()
        self.engine_state_changed.emit()
        self.start_button.setEnabled(not running and self.form.is_valid())
        self.stop_button.setEnabled(running)
        self.resume_button.setEnabled(not running and self.run_dir is not None
                                      and self.history.status == "stopped")

    def _say(self, text: str) -> None:
        self.status.setText(text)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
