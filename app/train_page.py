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
from app.run_actions import mark_running_in_background
from app.run_model import EVENT_FIELDS, RunHistory
from app.settings_form import SettingsForm
from engine.config import TrainConfig, preset
from engine.events import SCHEMA_VERSION

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
        self._reported: set[str] = set()  # oddities of the event stream said in the log
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
        if not Path(folder).expanduser().is_dir():
            self._say(f"The image folder {folder} is gone (unplugged, moved or deleted): "
                      "plug it in again or choose another folder.")
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

    def detach(self) -> int | None:
        """Leave the run going without this page (the window is closing): the engine child
        goes on and writes its events and checkpoints into the run folder. Returns its
        process id, or None when no run is going."""
        pid = self.engine.detach()
        if pid is not None and self.run_dir is not None:
            mark_running_in_background(self.run_dir, pid)
        if pid is not None:
            self._say(f"The run goes on in the background (process {pid}); open it from the "
                      "runs list later.")
            self._update_buttons()
        return pid

    def _launch(self, args: list[str], *, fresh: bool) -> None:
        if fresh:
            self.history = RunHistory()
            self.run_dir = None
            self.curves.show_history(self.history)
            self.log.clear()
        self._reported.clear()
        self._started_at = time.monotonic()
        self.engine.start(args)
        self._say("Starting the engine…")
        self._update_buttons()

    # --- engine events -------------------------------------------------------------------

    def _on_event(self, event: dict) -> None:
        problems = self.history.add(event)
        self._report_oddities(event, problems)
        kind = event.get("type")
        if kind == "progress":
            self._say(f"{event.get('phase', '')}: {event.get('message', '')}")
        elif kind == "run_start":
            if isinstance(event.get("run_dir"), str) and event["run_dir"]:
                self.run_dir = Path(event["run_dir"])
            self._say(f"Training on {self.history.device.get('name', 'the device')}: "
                      f"{self.history.dataset.get('summary', '')}")
            self.run_changed.emit()
        elif kind == "step":
            if not self.history.steps or self.history.steps[-1] != event.get("step"):
                return  # no usable step number: reported, nothing to show
            self.curves.mark_dirty()
            fraction = self.history.progress
            if fraction is not None:
                self.progress.setValue(int(round(100 * fraction)))
            eta = self.history.eta_seconds()
            warning = ("  Embeddings may be collapsing (spread below 0.2)."
                       if self.curves.collapsing() else "")
            knn = (f", kNN accuracy {100 * self.history.knn[-1][1]:.1f}%"
                   if self.history.knn else "")
            total = f" of {self.history.total_steps}" if self.history.total_steps else ""
            self._say(f"step {self.history.steps[-1]}{total}, loss "
                      f"{self.history.curves['loss'][-1]:.4f}{knn}"
                      + (f", about {_duration(eta)} left" if eta is not None else "")
                      + warning)
        elif kind == "eval":
            self.curves.mark_dirty()
            if not problems:
                seconds = event.get("seconds")
                took = f", {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
                self.log.appendPlainText(
                    f"epoch {event.get('epoch')}: kNN accuracy {100 * event['knn_top1']:.1f}% "
                    f"({event.get('images')} images{took})")
        elif kind == "warning":
            self.log.appendPlainText("warning: " + str(event.get("message", "")))

    def _report_oddities(self, event: dict, problems: list[str]) -> None:
        """Say in the log, once each, what of the event stream this app cannot use: event
        types it does not know (from a newer engine), a newer schema, missing or
        wrong-typed fields. The run goes on being shown."""
        kind, version = event.get("type"), event.get("v")
        notes = [f"{p}; ignored" for p in problems]
        if kind not in EVENT_FIELDS:
            notes.append(f"events of type {kind!r} are unknown to this version of the app "
                         "(written by a newer engine?); they are ignored")
        if isinstance(version, int) and version > SCHEMA_VERSION:
            notes.append(f"the engine writes events of schema version {version}; this app "
                         f"reads version {SCHEMA_VERSION} and may miss what is new")
        for note in notes:
            if note not in self._reported:
                self._reported.add(note)
                self.log.appendPlainText(f"[event stream] {note} (said once)")

    def _checkpoint_note(self) -> str:
        """Where the run can go on from after it failed or crashed."""
        if self.run_dir is None:
            return ""
        if not (self.run_dir / "checkpoints" / "last.pt").is_file():
            return " No checkpoint was written."
        step = self.history.checkpoint[1] if self.history.checkpoint else None
        at = f" (step {step})" if step is not None else ""
        return (f" The last checkpoint{at} is in {self.run_dir / 'checkpoints'}: Resume "
                "goes on from it.")

    def _on_ended(self, status: str, code: int, reason: str) -> None:
        self.curves.mark_dirty()
        if self.history.status == "running":  # no run_end event reached the history
            self.history.status, self.history.reason = status, reason
        if self.history.bad_events or self.history.unknown_events:
            self.log.appendPlainText(
                f"[event stream] {self.history.bad_events} events had missing or wrong "
                f"fields and {self.history.unknown_events} were of unknown types")
        if status in ("finished", "stopped"):
            self._say(f"Run {status}: {reason}")
        else:
            tail = "\n".join(list(self.engine.log_tail)[-15:])
            reason += self._checkpoint_note()
            self.log.appendPlainText(f"[run {status}] {reason}")
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
        self.resume_button.setEnabled(
            not running and self.run_dir is not None
            and self.history.status in ("stopped", "crashed")
            and (self.run_dir / "checkpoints" / "last.pt").is_file())

    def _say(self, text: str) -> None:
        self.status.setText(text)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
