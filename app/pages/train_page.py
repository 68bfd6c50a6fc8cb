"""The Train page: choose a folder and settings, start, stop or resume a run in a child
process, and watch its curves."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
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

from app.child.engine_process import EngineProcess
from app.model.run_actions import display_name, mark_running_in_background
from app.model.run_model import EVENT_FIELDS, LIVE_EVENTS_S, EventTail, RunHistory
from app.widgets.curves import TrainingCurves
from app.widgets.settings_form import SettingsForm
from engine.config.train_config import TrainConfig, preset
from engine.run.events import SCHEMA_VERSION, parse_event

#: Settings shown on the page, in this order (the rest keep their preset values).
FORM_FIELDS = ["method", "backbone", "image_size", "batch_size", "epochs", "max_steps", "lr",
               "optimizer", "temperature", "queue_size", "moco_momentum", "proj_hidden_dim",
               "proj_out_dim", "precision", "device", "seed"]
#: How often the events.jsonl of a run followed live is read for what was appended.
FOLLOW_POLL_MS = 1000
#: At most this much of a followed events.jsonl is read at once, so catching up with a long
#: run never holds the window; the rest is read right after.
FOLLOW_CHUNK_BYTES = 1 << 20
STOP_TIP = "Save a checkpoint and stop the run"
STOP_ELSEWHERE_TIP = (
    "The followed run is trained by another process, which this window cannot stop: stop "
    "it where it runs (Ctrl+C in its terminal, or SIGTERM to the engine or to torchrun); it "
    "saves a checkpoint, and its end shows here.")


class TrainPage(QWidget):
    """Settings form, run controls, progress and live curves of the current run.

    The current run is either one this page trains (an engine child) or one that another
    process trains and this page follows (:meth:`follow`: a terminal, torchrun on a shared
    disk): its events.jsonl is read every second for what was appended and shown exactly
    like an own run's events. A followed run cannot be stopped from here, and neither Start
    nor Resume runs while a followed run goes on (:meth:`stop_following` first).

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
        #: The run folder followed live (trained by another process), or None.
        self.following: Path | None = None
        self._tail: EventTail | None = None
        self._follow_timer = QTimer(self)
        self._follow_timer.setInterval(FOLLOW_POLL_MS)
        self._follow_timer.timeout.connect(self.poll_follow)
        #: Runs this page trained: folder -> when its engine child ended (Unix seconds;
        #: infinity while it runs), so the runs list knows they are not going on elsewhere.
        self.own_runs: dict[Path, float] = {}
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
        self.stop_button.setToolTip(STOP_TIP)
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
        self.engine.malformed.connect(self._on_malformed)
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

    def follow(self, run_dir: Path) -> bool:
        """Show ``run_dir``, trained by another process, as if it were this page's run:
        its events.jsonl is read from the start, then every second for what was appended.
        Refused (False, with the reason on the page) while this page trains a run."""
        run_dir = Path(run_dir)
        if self.engine.is_running():
            self._say(f"Cannot follow {display_name(run_dir)}: a run is training in this "
                      "window. Stop it first, or double-click the other run to compare its "
                      "curves.")
            return False
        self.stop_following(quiet=True)
        self.following = self.run_dir = run_dir
        self.history = RunHistory()
        self.curves.show_history(self.history)
        self.log.clear()
        self._reported.clear()
        self.progress.setValue(0)
        self._tail = EventTail(run_dir / "events.jsonl")
        self._say("reading its events…")
        self._follow_timer.start()
        self._update_buttons()
        self.poll_follow()
        return True

    def stop_following(self, quiet: bool = False) -> None:
        """Stop reading the followed run (it goes on where it runs); its curves stay shown."""
        if self.following is None:
            return
        name = display_name(self.following)
        self._follow_timer.stop()
        self.following, self._tail = None, None
        if self.history.status == "running":
            self.run_dir = None  # not resumable from here while it may still be going
        if not quiet:
            self._say(f"Stopped following {name}; it goes on training where it runs.")
        self._update_buttons()

    def poll_follow(self) -> None:
        """Fold in what the followed run's events.jsonl gained since the last poll."""
        run_dir, tail = self.following, self._tail
        if run_dir is None or tail is None:
            return
        try:
            read = tail.read(FOLLOW_CHUNK_BYTES)
        except FileNotFoundError:
            if (run_dir / "config.json").is_file():
                self._say("waiting for its first events…")  # it has only just started
                return
            self.stop_following(quiet=True)
            self._say(f"Stopped following {display_name(run_dir)}: its folder is gone "
                      "(deleted or moved).")
            self.run_changed.emit()
            return
        except OSError as exc:  # no permission, a network share gone away: try again
            self._say(f"cannot read {run_dir / 'events.jsonl'} ({exc.strerror or exc}); "
                      "trying again every second.")
            return
        if read.restarted:
            self.history = RunHistory()
            self.curves.show_history(self.history)
            self.log.appendPlainText("[event stream] events.jsonl was replaced or cut "
                                     "short; read again from its start")
        for line in read.lines:
            if not line.strip():
                continue
            event = parse_event(line)
            if event is None:
                self._on_malformed(line[:500])
                continue
            self._on_event(event)
            if self.following is None:
                return  # a slot of a signal sent for this event stopped following
        if read.more:
            QTimer.singleShot(0, self.poll_follow)
        elif self.history.status != "running":  # its last run_end (a resume starts anew)
            self._end_following(self.history.status, self.history.reason)
        elif tail.mtime is not None and time.time() - tail.mtime > LIVE_EVENTS_S:
            reason = (f"no new events for more than {LIVE_EVENTS_S // 60} min and no end: the "
                      "process training it seems to have stopped")
            self.history.status, self.history.reason = "interrupted", reason
            self._end_following("interrupted", reason)

    def _end_following(self, status: str, reason: str) -> None:
        """The followed run ended (its run_end, or its events went stale): show it like
        the end of an own run. Resume is offered for a stopped run with a checkpoint."""
        self._follow_timer.stop()
        self.following, self._tail = None, None
        self._show_end(status, reason, "The run was trained by another process: its log "
                       "is where it ran (its terminal or job log).\n\n"
                       + "\n".join(self.log.toPlainText().splitlines()[-15:]))

    def _on_malformed(self, line: str) -> None:
        self.log.appendPlainText(f"[ignored a malformed event line] {line}")

    def _launch(self, args: list[str], *, fresh: bool) -> None:
        self.stop_following(quiet=True)
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
            # A followed run keeps the folder it was opened from: its run_dir may be a path
            # on the machine that trains it.
            if (self.following is None and isinstance(event.get("run_dir"), str)
                    and event["run_dir"]):
                self.run_dir = Path(event["run_dir"])
                self.own_runs[self.run_dir] = math.inf
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
        if self.run_dir in self.own_runs:
            self.own_runs[self.run_dir] = time.time()
        if self.history.status == "running":  # no run_end event reached the history
            self.history.status, self.history.reason = status, reason
        self._show_end(status, reason, "\n".join(list(self.engine.log_tail)[-15:]))

    def _show_end(self, status: str, reason: str, details: str) -> None:
        """Say how the run ended; a run that did not finish or stop gets a message box
        with ``details`` (the end of the engine's log)."""
        self.curves.mark_dirty()
        if self.history.bad_events or self.history.unknown_events:
            self.log.appendPlainText(
                f"[event stream] {self.history.bad_events} events had missing or wrong "
                f"fields and {self.history.unknown_events} were of unknown types")
        if status in ("finished", "stopped"):
            self._say(f"Run {status}: {reason}")
        else:
            reason += self._checkpoint_note()
            self.log.appendPlainText(f"[run {status}] {reason}")
            self._say(f"Run {status}: {reason}")
            box = QMessageBox(QMessageBox.Warning, f"Run {status}", reason,
                              QMessageBox.Ok, self)
            box.setDetailedText(details)
            box.open()  # not modal-blocking: the event loop keeps running
            self.failure_box = box
        self._update_buttons()
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
            and (self.run_dir / "checkpoints" / "last.pt").is_file())

    def _say(self, text: str) -> None:
        if self.following is not None:
            text = (f"Following {display_name(self.following)} (trained by another "
                    f"process): {text}")
        self.status.setText(text)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
