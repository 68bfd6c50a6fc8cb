"""The Probe page: how well a checkpoint's frozen features separate the folder's classes.

Runs weighted kNN and the linear probe (engine/evaluate) for a checkpoint and, beside it,
for the untrained encoder ("random init"), in engine children (``knn --json`` then
``probe --json``). Every result the engine saves under the run's probes/ folder is listed
in a table with the kNN accuracy measured during training, so checkpoints, spaces and
label fractions can be compared; the selected row shows its per-class accuracy and
confusion matrix. Above the table, the newest trained result against random init, and
what to conclude from it in plain words (app.model.probe_verdict).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.child.engine_jobs import EngineJob, EngineQueue
from app.model.probe_records import (
    ProbeRecord,
    RunOrigin,
    comparison,
    load_records,
    percent,
    run_origin,
    training_records,
)
from app.model.probe_verdict import TrainingKnn, interpret
from app.style import set_role
from app.widgets.checkpoint_box import CheckpointBox
from app.widgets.job_status import JobStatus
from app.widgets.probe_results import ProbeDetails, ProbeTable, RunOriginNote
from app.widgets.space_chooser import SpaceChooser
from engine.evaluate.probe import ProbeParams
from engine.run.layout import LAST, RANDOM_INIT, RunDir

LABEL_FRACTIONS = (("100% of the labels", 1.0), ("10% of the labels", 0.1),
                   ("1% of the labels", 0.01))


def _help(name: str) -> str:
    return {f.name: f.metadata for f in dataclasses.fields(ProbeParams)}[name]["help"]


class ProbePage(QWidget):
    """kNN and linear-probe accuracy of a run's checkpoints against its folder's labels.

    Signals:
        evaluated(): a kNN + probe run finished and the table was reloaded.
        failed(str): an evaluation failed; the message says why (e.g. no class sub-folders).
    """

    evaluated = Signal()
    failed = Signal(str)

    def __init__(self, cache_dir: Path | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_dir: Path | None = None
        self.records: list[ProbeRecord] = []
        self.damaged: list[str] = []
        self.training: TrainingKnn | None = None  # the kNN evaluations during training
        self.origin: RunOrigin | None = None  # the run's init and whether it saw labels
        self.latest: dict[tuple[str, str], dict] = {}  # (kind, checkpoint) of the last run
        self.status = JobStatus(vertical=True, bar_width=220, cancel=True)
        self.jobs = EngineQueue(cache_dir, self)
        self.status.follow(self.jobs)
        self.jobs.started.connect(lambda job: self._update_controls())
        self.jobs.idle.connect(self._on_idle)

        self.checkpoint_box = CheckpointBox()
        self.space_box = SpaceChooser()
        self.baseline_box = QCheckBox("Also the random-init baseline")
        self.baseline_box.setChecked(True)
        self.baseline_box.setToolTip("Evaluate the same network before training too, so you "
                                     "see what training bought.")
        self.fraction_box = QComboBox()
        for text, value in LABEL_FRACTIONS:
            self.fraction_box.addItem(text, value)
        self.fraction_box.setToolTip(_help("label_fraction"))
        self.test_box = QDoubleSpinBox()
        self.test_box.setRange(0.05, 0.9)
        self.test_box.setSingleStep(0.05)
        self.test_box.setValue(0.2)
        self.test_box.setToolTip(_help("test_fraction") + " The same split for kNN and probe.")
        self.seed_box = QSpinBox()
        self.seed_box.setRange(0, 2**31 - 1)
        self.seed_box.setToolTip(_help("seed"))
        self.k_box = QSpinBox()
        self.k_box.setRange(1, 1000)
        self.k_box.setValue(20)
        self.k_box.setToolTip("kNN: neighbours that vote (default 20, as in InstDisc/SimCLR).")
        self.t_box = QDoubleSpinBox()
        self.t_box.setDecimals(3)
        self.t_box.setRange(0.01, 10.0)
        self.t_box.setValue(0.07)
        self.t_box.setToolTip("kNN: vote temperature; each neighbour votes exp(similarity / T).")
        self.run_button = QPushButton("Run kNN + linear probe")
        self.run_button.setToolTip("Embed the images (if not done yet) and evaluate, in a "
                                   "background process.")
        self.run_button.clicked.connect(self.run_probes)
        self.cancel_button = self.status.cancel_button  # in the job's progress row
        self.status.cancel_requested.connect(lambda: self.cancel())
        self.summary = QLabel("Select a trained run.")
        set_role(self.summary, "metric")
        self.summary.setWordWrap(True)
        self.origin_note = RunOriginNote()
        self.verdict = QLabel()
        self.verdict.setWordWrap(True)
        self.verdict.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.table = ProbeTable()
        self.damaged_label = QLabel()
        self.damaged_label.setWordWrap(True)
        self.damaged_label.hide()
        self.details = ProbeDetails()
        self.table.record_selected.connect(self.details.show_record)

        form = QFormLayout()
        form.addRow("Checkpoint", self.checkpoint_box)
        form.addRow("Space", self.space_box)
        form.addRow("", self.baseline_box)
        form.addRow("Probe labels", self.fraction_box)
        form.addRow("Held-out fraction", self.test_box)
        form.addRow("Split seed", self.seed_box)
        form.addRow("kNN k", self.k_box)
        form.addRow("kNN temperature", self.t_box)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addLayout(form)
        left_layout.addLayout(buttons)
        left_layout.addWidget(self.status)
        left_layout.addStretch(1)
        right = QSplitter(Qt.Vertical)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.summary)
        top_layout.addWidget(self.origin_note)
        top_layout.addWidget(self.verdict)
        top_layout.addWidget(self.table, 1)
        top_layout.addWidget(self.damaged_label)
        right.addWidget(top)
        right.addWidget(self.details)
        right.setSizes([300, 420])
        body = QSplitter()
        body.addWidget(left)
        body.addWidget(right)
        body.setSizes([330, 900])
        layout = QVBoxLayout(self)
        layout.addWidget(body, 1)
        self._update_controls()

    # --- public ----------------------------------------------------------------------------

    def set_run(self, run_dir: Path | None) -> None:
        """Show ``run_dir``'s saved evaluations (None: nothing)."""
        self.cancel(quiet=True)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.latest = {}
        self.checkpoint_box.set_run(self.run_dir)
        self.reload()
        if self.run_dir is None:
            self._say("Select a trained run in the runs list.")
        elif not self.run_dir.is_dir():
            self._say(self._gone(), error=True)
        elif not self.has_checkpoints():
            self._say("This run has no checkpoint yet (its first epoch has not ended): you "
                      "can evaluate random init, the untrained encoder, now.")
        else:
            self._say("")
        self._update_controls()

    def reload(self) -> None:
        """Read the run's probes/ folder again."""
        self.records, self.damaged = load_records(self.run_dir) if self.run_dir else ([], [])
        self.origin = run_origin(self.run_dir) if self.run_dir else None
        self.origin_note.show_origin(self.origin)
        during, self.training = (training_records(self.run_dir) if self.run_dir
                                 else ([], None))
        self.table.show_records(self.records + during)
        if self.damaged:
            self.damaged_label.setText("Skipped (unreadable): " + "; ".join(self.damaged))
            self.damaged_label.show()
        else:
            self.damaged_label.hide()
        self._show_summary()
        if self.table.records:  # the newest result of a trained checkpoint, not its baseline
            self.table.selectRow(next((i for i, r in enumerate(self.records)
                                       if r.checkpoint != RANDOM_INIT), 0))
        else:
            self.details.show_record(None)

    def refresh_checkpoints(self) -> None:
        """Read the run's checkpoints again (the window calls this when the run wrote one,
        ended, or the runs were refreshed)."""
        if self.run_dir is None:
            return
        had = self.checkpoint_box.count() > 1
        self.checkpoint_box.refresh()
        if not had and self.has_checkpoints() and not self.jobs.is_busy():
            self._say("")  # (it said that the run had no checkpoint yet)
        self._update_controls()

    def has_checkpoints(self) -> bool:
        return self.run_dir is not None and bool(RunDir(self.run_dir).checkpoint_names())

    def can_evaluate(self) -> bool:
        """Whether the run can be evaluated: a run folder, with or without checkpoints
        (random init needs none)."""
        return self.run_dir is not None and RunDir(self.run_dir).is_run()

    def has_results(self) -> bool:
        return bool(self.records)

    def is_busy(self) -> bool:
        return self.jobs.is_busy()

    def arguments(self) -> tuple[list[str], list[str]]:
        """The engine arguments of the kNN and probe children for the settings shown."""
        assert self.run_dir is not None
        common = ["--run", str(self.run_dir), "--checkpoint", self.checkpoint_box.checkpoint()
                  or LAST, "--space", self.space_box.space(), "--seed",
                  str(self.seed_box.value()), "--test-fraction", f"{self.test_box.value():g}"]
        if self.baseline_box.isChecked() and self.checkpoint_box.checkpoint() != RANDOM_INIT:
            common.append("--baseline")
        knn = ["knn", *common, "-k", str(self.k_box.value()), "--temperature",
               f"{self.t_box.value():g}"]
        probe = ["probe", *common, "--label-fraction", f"{self.fraction_box.currentData():g}"]
        return knn, probe

    def run_probes(self) -> None:
        """kNN, then the linear probe, in engine children (the baseline too if asked)."""
        if self.run_dir is not None and not self.run_dir.is_dir():
            self._on_failed(self._gone())
            return
        if not self.can_evaluate():
            return
        self.latest = {}
        knn, probe = self.arguments()
        # One kind for both: when kNN fails (e.g. no labels) the probe is dropped too.
        for args, text in ((knn, "kNN accuracy"), (probe, "Linear probe")):
            self.jobs.enqueue(EngineJob("probe", args, text, on_result=self._on_result,
                                        on_failed=self._on_failed))

    def _gone(self) -> str:
        return (f"The run folder {self.run_dir} is gone: it was deleted or moved outside the "
                "app. Choose another run in the runs list.")

    def cancel(self, quiet: bool = False) -> None:
        """Stop the running engine child and drop the queued ones (the status line says
        what was kept; ``quiet`` callers say what comes next, which replaces it)."""
        self.jobs.cancel()

    # --- engine children -------------------------------------------------------------------

    def _on_result(self, result: dict) -> None:
        kind = "probe" if result.get("kind") == "linear-probe" else "knn"
        self.latest[(kind, str(result.get("checkpoint")))] = result

    def _on_failed(self, reason: str) -> None:
        self._say(reason, error=True)
        self.failed.emit(reason)

    def _on_idle(self) -> None:
        self._update_controls()
        if self.latest:
            self.reload()
            self._say("Done: results saved in the run's probes/ folder.")
            self.evaluated.emit()

    # --- showing ---------------------------------------------------------------------------

    def _show_summary(self) -> None:
        """The newest trained result beside its random-init baseline, in big text, and
        what to conclude from them (and from the kNN during training) below."""
        found = comparison(self.records)
        lines = []
        for key, name in (("probe", "Linear probe"), ("knn", "kNN")):
            trained, random = found[key], found[f"{key}_random"]
            if trained is not None:
                text = f"{name}: {trained.get('checkpoint')} {percent(trained['top1'])}"
                if self.origin is not None:
                    text += f" ({self.origin.init_text()})"
                if random is not None:
                    text += f"  vs  random init {percent(random['top1'])}"
                lines.append(text)
        if not lines:
            lines.append("Run kNN + linear probe to see how well the features separate the "
                         "classes." if self.run_dir else "Select a trained run.")
        self.summary.setText("\n".join(lines))
        verdict = interpret(found["probe"], found["probe_random"], found["knn"],
                            found["knn_random"], self.training)
        self.verdict.setText(verdict.text())
        self.verdict.setVisible(bool(verdict.lines))

    def _update_controls(self) -> None:
        busy = self.jobs.is_busy()
        ready = self.can_evaluate()
        self.run_button.setEnabled(ready and not busy)
        self.cancel_button.setEnabled(busy)

    def _say(self, text: str, *, error: bool = False) -> None:
        if error:
            self.status.fail(text)
        else:
            self.status.say(text)

