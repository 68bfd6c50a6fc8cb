"""The Train page: choose a folder and settings, start, stop or resume a run in a child
process, and watch its curves and its live map."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.child.engine_jobs import EngineQueue
from app.child.engine_process import EngineProcess
from app.child.run_follower import RunFollower
from app.model.estimate import duration
from app.model.run_actions import display_name, mark_running_in_background
from app.model.run_model import RunHistory, window_words
from app.pages.train_following import FollowingRuns
from app.pages.train_plan import CHOOSE_FOLDER, TrainPlan, is_data_source
from app.widgets.curves import TrainingCurves
from app.widgets.job_status import phase_words
from app.widgets.live_map import LiveMapView
from app.widgets.run_log import RunLog
from app.widgets.settings_form import SettingsForm
from app.widgets.time_plan import TimePlan
from engine.cli.args import to_arguments
from engine.config.train_config import AugmentConfig, TrainConfig, preset
from engine.methods import DEFAULT_METHOD, METHODS
from engine.run.layout import RunDir
from engine.run.progress import RateEstimate, about, rate_text

#: Settings shown on the page for every method, in this order, then each method's own
#: settings (shown only while that method is chosen); the rest keep their preset values.
COMMON_FIELDS = ["method", "backbone", "init", "image_size", "batch_size", "epochs",
                 "max_steps", "lr", "optimizer", "temperature", "proj_hidden_dim",
                 "proj_out_dim", "precision", "device", "seed"]
FORM_FIELDS = COMMON_FIELDS + [name for spec in METHODS.values() for name in spec.settings
                               if name not in COMMON_FIELDS]
STOP_TIP = "Save a checkpoint and stop the run"
STOP_ELSEWHERE_TIP = (
    "The followed run is trained by another process, which this window cannot stop: stop "
    "it where it runs (Ctrl+C in its terminal, or SIGTERM to the engine or to torchrun); it "
    "saves a checkpoint, and its end shows here.")


class TrainPage(FollowingRuns, QWidget):
    """Settings form, run controls, progress and live curves of the current run.

    The current run is either one this page trains (:attr:`engine`, an engine child) or one
    that another process trains and this page follows (:meth:`follow`: a terminal, torchrun
    on a shared disk; :attr:`follower` reads what its events.jsonl gains). Both send the
    same signals, handled by the same slots. A followed run cannot be stopped from here, and
    neither Start nor Resume runs while a followed run goes on (:meth:`stop_following`
    first).

    Signals:
        run_changed(): a run started, ended, or wrote its first event (refresh run lists).
        engine_state_changed(): the engine child started or ended.
        progressed(object, object): the current run (its folder, or None) reached a new
            step or checkpoint: the folder and its RunHistory (for the runs list's line).
    """

    run_changed = Signal()
    engine_state_changed = Signal()
    progressed = Signal(object, object)

    def __init__(self, runs_root: Path, cache_dir: Path | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runs_root = Path(runs_root)
        self._preparing = RateEstimate()  # the scan's or the decoding's recent rate
        self._preparing_phase: object = None
        self.cache_dir = cache_dir
        self.engine = EngineProcess(self)
        self.history = RunHistory()
        self.run_dir: Path | None = None
        self.follower = RunFollower(self)
        #: Runs this page trained: folder -> when its engine child ended (Unix seconds;
        #: infinity while it runs), so the runs list knows they are not going on elsewhere.
        self.own_runs: dict[Path, float] = {}
        #: Augmentation settings passed to the engine beyond the method's preset.
        self.augment_overrides: dict[str, object] = {}

        self.folder = QLineEdit()
        self.folder.setPlaceholderText("image folder (class sub-folders give labels)")
        self.folder.setToolTip("The folder of images to train on. Sub-folders are classes.")
        self.folder.textChanged.connect(self._on_folder_edited)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._on_browse)
        self.form = SettingsForm(preset(DEFAULT_METHOD), fields=FORM_FIELDS)
        self.form.validity_changed.connect(lambda ok: self._on_folder_edited())
        self.form.changed.connect(self._show_method_settings)
        self._show_method_settings()
        self.form.add_button("init", "…", "Choose a weights file to start from (.pt, .pth, "
                             ".safetensors)").clicked.connect(self._on_choose_init)
        self.plan = TrainPlan(self.folder, self.form, self.runs_root, cache_dir, self)
        self.estimate = self.plan.estimate
        self.time_plan = TimePlan(EngineQueue(cache_dir, self), self._plan_arguments)
        self.time_plan.apply_requested.connect(self._apply_plan)
        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("Start a new run in a background process (Ctrl+Return)")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip(STOP_TIP)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue the last stopped run from its checkpoint")
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.resume_button.clicked.connect(self.resume)
        self.progress = QProgressBar()
        self.progress.setFormat("%p%")
        self.status = QLabel(CHOOSE_FOLDER)
        self.status.setWordWrap(True)
        self.log = RunLog()
        self.curves = TrainingCurves()
        self.live_map = LiveMapView()
        self.charts = QTabWidget()
        self.charts.addTab(self.curves, "Curves")
        self.charts.addTab(self.live_map, "Live map")
        self.charts.setTabToolTip(1, "How a fixed sample of the images moves on a 2-D map, "
                                  "a frame per kNN evaluation: play it epoch by epoch")

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
        left_layout.addWidget(self.estimate)
        left_layout.addWidget(self.time_plan)
        right = QSplitter(Qt.Vertical)
        right.addWidget(self.charts)
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

        self.plan.update()
        for source in (self.engine, self.follower):
            source.event.connect(self._on_event)
            source.log.connect(self.log.add)
            source.malformed.connect(self.log.malformed)
            source.ended.connect(self._on_ended)
        self.follower.note.connect(self._say)
        self.follower.restarted.connect(self._forget_shown)
        self.follower.gone.connect(self._on_followed_gone)
        self._update_buttons()

    def _show_method_settings(self) -> None:
        """Show the settings of the chosen method only (e.g. MoCo's queue for MoCo), and
        hide the common ones it does not read (e.g. the temperature for BYOL)."""
        chosen = METHODS[self.form.values().method]
        for spec in METHODS.values():
            for name in spec.settings:
                if name not in COMMON_FIELDS:
                    self.form.set_shown(name, name in chosen.settings)
        for name in {n for spec in METHODS.values() for n in spec.ignores}:
            if name in FORM_FIELDS:
                self.form.set_shown(name, name not in chosen.ignores)

    # --- actions -------------------------------------------------------------------------

    def set_folder(self, folder: str | Path) -> None:
        self.folder.setText(str(folder))

    def set_folder_counts(self, folder: str | Path, images: int, classes: int) -> None:
        """What the scan of ``folder`` found, for the "Ready" line (and the estimate)."""
        self.plan.set_counts(folder, images, classes)
        self._say_ready()

    def set_scanned(self, manifest) -> None:
        """The Data page scanned a folder (an engine.data.scan.Manifest)."""
        self.set_folder_counts(manifest.root, len(manifest.images), len(manifest.classes))

    def folder_counts(self) -> tuple[int, int] | None:
        """(images, classes) of the folder in the folder field, when it was scanned."""
        return self.plan.counts()

    def share_image_size(self, preview) -> None:
        """One image size with the Augmentations page (TrainPlan.share_image_size)."""
        self.plan.share_image_size(preview)

    def _on_folder_edited(self) -> None:
        self._update_buttons()
        self._say_ready()
        self.plan.update()

    def _say_ready(self) -> None:
        """The idle status line: what pressing Start would do (nothing runs or is followed,
        and no stopped run waits for Resume)."""
        if self.engine.is_running() or self.following is not None:
            return
        if self.history.status in ("stopped", "crashed", "interrupted", "failed") \
                and self.resume_button.isEnabled():
            return  # the line says how the run ended and that Resume goes on
        self.status.setText(self.plan.ready_text())

    def _on_browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Image folder", self.folder.text())
        if folder:
            self.set_folder(folder)

    def _on_choose_init(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Weights to start from", self.form.values().init,
            "Weights (*.pt *.pth *.safetensors);;All files (*)")
        if path:
            self.form.set_value("init", path)

    def _plan_arguments(self) -> list[str] | str:
        """The ``plan`` verb's arguments for the folder and settings shown, or why there
        are none."""
        folder = self.folder.text().strip()
        if not folder or not is_data_source(folder):
            return "Choose an image folder first: the plan scans it."
        if not self.form.is_valid():
            return "Fix the highlighted settings first: " + "; ".join(
                self.form.errors().values())
        cfg = dataclasses.replace(self.form.values(), data=folder)
        return ["--data", folder] + self._settings_arguments(cfg)

    def _apply_plan(self, values: dict) -> None:
        """Put a plan's settings in the form (the epochs count as chosen by the person)."""
        self.apply_settings(values)
        self._say("The planned settings are in the form: press Start to train with them.")

    def _settings_arguments(self, cfg: TrainConfig) -> list[str]:
        return (to_arguments(TrainConfig, {name: getattr(cfg, name) for name in FORM_FIELDS})
                + to_arguments(AugmentConfig, self.augment_overrides))

    def apply_settings(self, values: dict) -> None:
        """Show ``values`` (training settings, and an "augment" mapping) in the form."""
        for name, value in values.items():
            if name == "augment":
                self.augment_overrides = dict(value)
            elif name in FORM_FIELDS:
                self.form.set_value(name, value)
                if name == "epochs":
                    self.plan.epochs_chosen = True

    def start(self) -> None:
        if self.following is not None:
            self._say(f"Not started: this page follows {display_name(self.following)}, "
                      "which another process is training. Stop following it first (Run ▸ "
                      "Stop following) to train a run of your own here; the other run goes "
                      "on regardless.")
            return
        folder = self.folder.text().strip()
        if not folder:
            self._say("Choose an image folder first.")
            return
        if not is_data_source(folder):
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
        if self.following is not None:
            self._say(f"Not resumed: another process is still training "
                      f"{display_name(self.following)}, and a second trainer on the same "
                      "folder would overwrite its checkpoints and events. Stop it where it "
                      "runs first, or wait until it ends.")
            return
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

    # --- following a run that another process trains -------------------------------------

    def is_idle(self) -> bool:
        """Whether showing another run here loses nothing: no engine child, no run followed
        live, and no stopped run on show that Resume could go on with."""
        return (not self.engine.is_running() and self.following is None
                and not self.resume_button.isEnabled())

    def _forget_shown(self) -> None:
        """A new history: the curves and the live map shown so far are dropped."""
        self.history = RunHistory()
        self.curves.show_history(self.history)
        self.progress.setFormat("%p%")
        self.live_map.clear()

    def _show_progress(self) -> None:
        """The progress bar: the step reached of the planned steps and, once the run has
        ended, where Resume goes on from when that is an earlier checkpoint, in the runs
        list's words (RunHistory.where)."""
        fraction = self.history.progress
        if fraction is None:
            return
        self.progress.setValue(int(round(100 * fraction)))
        self.progress.setFormat(f"{self.history.where()} · %p%")

    def _show_preparing(self, event: dict) -> None:
        """A progress event before the first step (the scan, the decoding): the bar counts
        it, the line adds the recent rate and the time left (app.widgets.job_status's
        words); an event without counts is said as it comes."""
        done, total = event.get("done"), event.get("total")
        if not (isinstance(done, int) and isinstance(total, int) and total > 0):
            self._say(f"{event.get('phase', '')}: {event.get('message', '')}")
            return
        if event.get("phase") != self._preparing_phase:
            self._preparing_phase = event.get("phase")
            self._preparing.reset()
        when = event.get("time")
        self._preparing.update(float(when) if isinstance(when, (int, float)) else time.time(),
                               done, total)
        title, unit = phase_words(event)
        self.progress.setValue(int(100 * min(done, total) / total))
        self.progress.setFormat(f"{title} {done:,} of {total:,} {unit}")
        rate, left = self._preparing.rate, self._preparing.left(time.time())
        words = [f"{title} {done:,} of {total:,} {unit}"]
        if rate:
            words.append(rate_text(rate, unit))
        if left is not None:
            words.append(f"{about(left)} left")
        self._say(" · ".join(words))

    def show_live_map(self, run_dir: Path) -> None:
        """Play the live map of ``run_dir`` (a run opened from the runs list), unless this
        page trains or follows a run: that run's own map stays."""
        if not self.engine.is_running() and self.following is None:
            self.live_map.set_run(run_dir)

    def _launch(self, args: list[str], *, fresh: bool) -> None:
        self.stop_following(quiet=True)
        if fresh:
            self._forget_shown()
            self.run_dir = None
        self.log.start_run(clear=fresh)
        self.engine.start(args)
        self._say("Starting the engine…")
        self._update_buttons()

    # --- engine events -------------------------------------------------------------------

    def _on_event(self, event: dict) -> None:
        problems = self.history.add(event)
        self.log.note_event(event, problems)
        kind = event.get("type")
        if kind == "progress":
            self._show_preparing(event)
        elif kind == "run_start":
            # A followed run keeps the folder it was opened from: its run_dir may be a path
            # on the machine that trains it.
            if (self.following is None and isinstance(event.get("run_dir"), str)
                    and event["run_dir"]):
                self.run_dir = Path(event["run_dir"])
                self.own_runs[self.run_dir] = math.inf
            if self.run_dir is not None:
                self.live_map.set_run(self.run_dir)
            self._say(f"Training on {self.history.device.get('name', 'the device')}: "
                      f"{self.history.dataset.get('summary', '')}")
            self.run_changed.emit()
        elif kind == "step":
            if not self.history.steps or self.history.steps[-1] != event.get("step"):
                return  # no usable step number: reported, nothing to show
            self.curves.mark_dirty()
            self._show_progress()
            eta = self.history.eta_seconds()
            warning = ("  Embeddings may be collapsing (spread below 0.2)."
                       if self.curves.collapsing() else "")
            knn = (f", kNN accuracy {100 * self.history.knn[-1][1]:.1f}%"
                   if self.history.knn else "")
            total = f" of {self.history.total_steps}" if self.history.total_steps else ""
            self.progressed.emit(self.run_dir, self.history)
            self._say(f"step {self.history.steps[-1]}{total}, loss "
                      f"{self.history.curves['loss'][-1]:.4f}{knn}"
                      + (f", about {duration(eta)} left" if eta is not None else "")
                      + warning)
        elif kind == "eval":
            self.curves.mark_dirty()
            self.progressed.emit(self.run_dir, self.history)
        elif kind == "checkpoint":
            self.progressed.emit(self.run_dir, self.history)
        elif kind == "live_map":
            self.live_map.on_event(event)

    def _checkpoint_note(self) -> str:
        """Where the run can go on from after it failed or crashed."""
        if self.run_dir is None:
            return ""
        run = RunDir(self.run_dir)
        if not run.last_checkpoint.is_file():
            return " No checkpoint was written."
        step = self.history.checkpoint[1] if self.history.checkpoint else None
        at = f" (step {step})" if step is not None else ""
        return f" The last checkpoint{at} is in {run.checkpoints}: Resume goes on from it."

    def _on_ended(self, status: str, _code: int, reason: str) -> None:
        """The run shown ended: the engine child exited, or the followed run wrote its
        run_end (or went quiet). A run that did not finish or stop gets a message box with
        the end of its log."""
        if self.sender() is self.follower:
            details = ("The run was trained by another process: its log is where it ran (its "
                       "terminal or job log).\n\n" + self.log.last_lines(15))
        else:
            details = "\n".join(list(self.engine.log_tail)[-15:])
            if self.run_dir in self.own_runs:
                self.own_runs[self.run_dir] = time.time()
        if self.history.status == "running":  # no run_end event reached the history
            self.history.status, self.history.reason = status, reason
        reason = window_words(reason)
        self.curves.mark_dirty()
        self.log.stream_summary(self.history)
        self._show_progress()
        if status == "stopped":
            at = f" at {self.history.where()}" if self.history.position is not None else ""
            self._say(f"Run stopped{at}: {reason}")
        elif status == "finished":
            self._say(f"Run finished: {reason}")
        else:
            reason += self._checkpoint_note()
            self.log.add(f"[run {status}] {reason}")
            self._say(f"Run {status}: {reason}")
            box = QMessageBox(QMessageBox.Warning, f"Run {status}", reason,
                              QMessageBox.Ok, self)
            box.setDetailedText(details)
            box.open()  # not modal-blocking: the event loop keeps running
            self.failure_box = box
        self._update_buttons()
        self.plan.update()  # the run measured this machine's speed
        self.run_changed.emit()

    def _update_buttons(self) -> None:
        running = self.engine.is_running()
        following = self.following is not None
        self.engine_state_changed.emit()
        self.start_button.setEnabled(not running and not following and self.form.is_valid())
        self.start_button.setToolTip(
            "Stop following the run trained elsewhere first (Run ▸ Stop following)"
            if following else "Start a new run in a background process (Ctrl+Return)")
        self.stop_button.setEnabled(running)
        self.stop_button.setToolTip(STOP_ELSEWHERE_TIP if following else STOP_TIP)
        self.resume_button.setEnabled(
            not running and not following and self.run_dir is not None
            and self.history.status in ("stopped", "crashed", "interrupted")
            and RunDir(self.run_dir).last_checkpoint.is_file())

    def _say(self, text: str) -> None:
        if self.following is not None:
            text = (f"Following {display_name(self.following)} (trained by another "
                    f"process): {text}")
        self.status.setText(text)

