"""The Probe page: how well a checkpoint's frozen features separate the folder's classes.

Runs weighted kNN and the linear probe (engine/evaluate) for a checkpoint and, beside it,
for the untrained encoder ("random init"), in engine children (``knn --json`` then
``probe --json``). Every result the engine saves under the run's probes/ folder is listed
in a table, so checkpoints, spaces and label fractions can be compared; the selected row
shows its per-class accuracy and confusion matrix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.child.engine_jobs import EngineJob, EngineQueue
from app.style import set_role
from app.widgets.checkpoint_box import CheckpointBox
from engine.evaluate.embed import RANDOM_INIT, list_checkpoints
from engine.evaluate.probe import ProbeParams

LABEL_FRACTIONS = (("100% of the labels", 1.0), ("10% of the labels", 0.1),
                   ("1% of the labels", 0.01))
COLUMNS = ("evaluation", "checkpoint", "space", "labels", "top-1", "top-5", "train / test",
           "saved")
#: Above this many classes the confusion matrix is drawn without a count in each cell.
MAX_ANNOTATED_CLASSES = 20


def _help(name: str) -> str:
    import dataclasses

    meta = {f.name: f.metadata for f in dataclasses.fields(ProbeParams)}[name]
    return meta["help"]


@dataclass
class ProbeRecord:
    """One saved evaluation (a probes/*.json file)."""

    path: Path
    result: dict[str, Any]

    @property
    def kind(self) -> str:
        return "linear probe" if self.result.get("kind") == "linear-probe" else "kNN"

    @property
    def checkpoint(self) -> str:
        return str(self.result.get("checkpoint", "?"))

    @property
    def label_fraction(self) -> float:
        return float(self.result.get("label_fraction", 1.0))


def load_records(run_dir: Path) -> tuple[list[ProbeRecord], list[str]]:
    """The run's saved evaluations, newest first, and the files that could not be read."""
    records, damaged = [], []
    files = sorted((Path(run_dir) / "probes").glob("*.json"), key=_mtime_ns, reverse=True)
    for path in files:
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(result, dict) or not isinstance(result.get("top1"), (int, float)):
                raise ValueError("no top-1 accuracy in it")
        except (OSError, ValueError) as exc:
            damaged.append(f"{path.name} ({type(exc).__name__}: {exc})"[:200])
            continue
        records.append(ProbeRecord(path, result))
    return records, damaged


def _pct(x: Any) -> str:
    return "" if x is None else f"{100 * float(x):.1f}%"


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
        self.latest: dict[tuple[str, str], dict] = {}  # (kind, checkpoint) of the last run
        self.jobs = EngineQueue(cache_dir, self)
        self.jobs.started.connect(self._on_job_started)
        self.jobs.progress.connect(self._on_job_progress)
        self.jobs.idle.connect(self._on_idle)

        self.checkpoint_box = CheckpointBox()
        self.space_box = QComboBox()
        self.space_box.addItem("h (representation)", "h")
        self.space_box.addItem("z (projection)", "z")
        self.space_box.setToolTip("h: the encoder's features, what transfers to other tasks "
                                  "(the usual choice); z: the projection head's output, what "
                                  "the contrastive loss saw.")
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
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(lambda: self.cancel())
        self.summary = QLabel("Select a trained run.")
        set_role(self.summary, "metric")
        self.summary.setWordWrap(True)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.hide()

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setToolTip("Every evaluation saved in this run's probes/ folder, newest "
                              "first. Select one to see its per-class accuracy and confusion "
                              "matrix.")
        self.table.itemSelectionChanged.connect(self._on_row_selected)
        self.damaged_label = QLabel()
        self.damaged_label.setWordWrap(True)
        self.damaged_label.hide()

        self.per_class_plot = pg.PlotWidget(title="Accuracy per class")
        self.per_class_plot.setLabel("left", "top-1 %")
        self.per_class_plot.setYRange(0, 100)
        self.per_class_plot.setMouseEnabled(x=False, y=False)
        self.confusion_plot = pg.PlotWidget(title="Confusion: rows true, columns predicted")
        self.confusion_plot.setAspectLocked(True)
        self.confusion_plot.invertY(True)
        self.confusion_image = pg.ImageItem(axisOrder="row-major")
        self.confusion_image.setColorMap(pg.colormap.get("viridis"))
        self.confusion_plot.addItem(self.confusion_image)
        self._cell_texts: list[pg.TextItem] = []
        self.detail_note = QLabel()
        self.detail_note.setWordWrap(True)

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
        buttons.addWidget(self.cancel_button)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addLayout(form)
        left_layout.addLayout(buttons)
        left_layout.addWidget(self.status)
        left_layout.addStretch(1)
        details = QSplitter()
        details.addWidget(self.per_class_plot)
        details.addWidget(self.confusion_plot)
        right = QSplitter(Qt.Vertical)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.summary)
        top_layout.addWidget(self.table, 1)
        top_layout.addWidget(self.damaged_label)
        bottom = QWidget()
        bottom_layout = QVBoxLayout(bottom)
        bottom_layout.setContentsMargins(0, 0, 0, 0)
        bottom_layout.addWidget(self.detail_note)
        bottom_layout.addWidget(details, 1)
        right.addWidget(top)
        right.addWidget(bottom)
        right.setSizes([300, 420])
        body = QSplitter()
        body.addWidget(left)
        body.addWidget(right)
        body.setSizes([330, 900])
        layout = QVBoxLayout(self)
        layout.addWidget(body, 1)
        layout.addWidget(self.progress, 0, Qt.AlignRight)
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
            self._say("This run has no checkpoint yet: train it (or wait for its first epoch).")
        else:
            self._say("")
        self._update_controls()

    def reload(self) -> None:
        """Read the run's probes/ folder again."""
        self.records, self.damaged = load_records(self.run_dir) if self.run_dir else ([], [])
        self.table.setRowCount(0)
        for record in self.records:
            r = record.result
            row = self.table.rowCount()
            self.table.insertRow(row)
            fraction = "" if record.kind == "kNN" else _pct(record.label_fraction)
            split = f"{r.get('train', '?')} / {r.get('test', '?')}"
            values = (record.kind, record.checkpoint, str(r.get("space", "h")), fraction,
                      _pct(r.get("top1")), _pct(r.get("top5")), split,
                      _mtime(record.path))
            for column, text in enumerate(values):
                item = QTableWidgetItem(text)
                item.setToolTip(str(record.path))
                self.table.setItem(row, column, item)
        if self.damaged:
            self.damaged_label.setText("Skipped (unreadable): " + "; ".join(self.damaged))
            self.damaged_label.show()
        else:
            self.damaged_label.hide()
        self._show_summary()
        if self.records:  # the newest result of a trained checkpoint, not its baseline
            self.table.selectRow(next((i for i, r in enumerate(self.records)
                                       if r.checkpoint != RANDOM_INIT), 0))
        else:
            self._show_details(None)

    def has_checkpoints(self) -> bool:
        return self.run_dir is not None and bool(list_checkpoints(self.run_dir))

    def has_results(self) -> bool:
        return bool(self.records)

    def is_busy(self) -> bool:
        return self.jobs.is_busy()

    def arguments(self) -> tuple[list[str], list[str]]:
        """The engine arguments of the kNN and probe children for the settings shown."""
        assert self.run_dir is not None
        common = ["--run", str(self.run_dir), "--checkpoint", self.checkpoint_box.checkpoint()
                  or "last", "--space", self.space_box.currentData(), "--seed",
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
        if not self.has_checkpoints():
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
        if self.jobs.cancel() and not quiet:
            self._say("Cancelled.")

    # --- engine children -------------------------------------------------------------------

    def _on_job_started(self, job: EngineJob) -> None:
        self._say(job.describe + "…")
        self.progress.setRange(0, 0)
        self.progress.show()
        self._update_controls()

    def _on_job_progress(self, job: EngineJob, event: dict) -> None:
        if event.get("total"):
            self.progress.setRange(0, int(event["total"]))
            self.progress.setValue(int(event.get("done", 0)))
            self._say(f"{job.describe}: {event.get('phase', '')} {event.get('done')}/"
                      f"{event['total']}")

    def _on_result(self, result: dict) -> None:
        kind = "probe" if result.get("kind") == "linear-probe" else "knn"
        self.latest[(kind, str(result.get("checkpoint")))] = result

    def _on_failed(self, reason: str) -> None:
        self._say(reason, error=True)
        self.failed.emit(reason)

    def _on_idle(self) -> None:
        self.progress.hide()
        self._update_controls()
        if self.latest:
            self.reload()
            self._say("Done: results saved in the run's probes/ folder.")
            self.evaluated.emit()

    # --- showing ---------------------------------------------------------------------------

    def _show_summary(self) -> None:
        """The last evaluation's checkpoint beside its baseline, in big text."""
        if not self.latest:
            self.summary.setText("Run kNN + linear probe to see how well the features "
                                 "separate the classes." if self.run_dir else
                                 "Select a trained run.")
            return
        lines = []
        for kind, name in (("probe", "Linear probe"), ("knn", "kNN")):
            trained = [r for (k, c), r in self.latest.items() if k == kind and c != RANDOM_INIT]
            random = self.latest.get((kind, RANDOM_INIT))
            if trained:
                text = f"{name}: {trained[0]['checkpoint']} {_pct(trained[0]['top1'])}"
                if random is not None:
                    text += f"  vs  random init {_pct(random['top1'])}"
                lines.append(text)
        self.summary.setText("\n".join(lines))

    def _on_row_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        self._show_details(self.records[rows[0].row()] if rows else None)

    def _show_details(self, record: ProbeRecord | None) -> None:
        self.per_class_plot.clear()
        for item in self._cell_texts:
            self.confusion_plot.removeItem(item)
        self._cell_texts = []
        self.confusion_image.clear()
        if record is None:
            self.detail_note.setText("")
            return
        r = record.result
        per_class = r.get("per_class")
        confusion = r.get("confusion")
        if not per_class or confusion is None:
            self.detail_note.setText(f"{record.kind} ({record.checkpoint}): top-1 "
                                     f"{_pct(r.get('top1'))}. Per-class accuracy and the "
                                     "confusion matrix come with the linear probe.")
            return
        names = list(per_class)
        self.detail_note.setText(
            f"{record.kind} ({record.checkpoint}, {r.get('space', 'h')}, "
            f"{_pct(record.label_fraction)} of the labels): top-1 {_pct(r.get('top1'))} on "
            f"{r.get('test')} held-out images")
        values = [100 * v if v is not None else 0.0 for v in per_class.values()]
        bars = pg.BarGraphItem(x=np.arange(len(names)), height=values, width=0.7,
                               brush=pg.mkBrush(70, 130, 200))
        self.per_class_plot.addItem(bars)
        ticks = [list(enumerate(names))]
        self.per_class_plot.getAxis("bottom").setTicks(ticks)
        self.per_class_plot.setXRange(-0.6, len(names) - 0.4, padding=0)
        matrix = np.asarray(confusion, dtype=np.float64)
        self.confusion_image.setImage(matrix, levels=(0, max(1.0, matrix.max())))
        self.confusion_image.setRect(-0.5, -0.5, len(names), len(names))
        for axis in ("bottom", "left"):
            self.confusion_plot.getAxis(axis).setTicks(ticks)
        if len(names) <= MAX_ANNOTATED_CLASSES:
            top = matrix.max()
            for i in range(len(names)):
                for j in range(len(names)):
                    colour = (0, 0, 0) if matrix[i, j] > 0.6 * top else (255, 255, 255)
                    text = pg.TextItem(f"{int(matrix[i, j])}", color=colour, anchor=(0.5, 0.5))
                    text.setPos(j, i)
                    self.confusion_plot.addItem(text)
                    self._cell_texts.append(text)
        self.confusion_plot.autoRange()

    def confusion_shown(self) -> np.ndarray | None:
        """The matrix drawn in the heatmap (rows: true class), or None."""
        image = self.confusion_image.image
        return None if image is None else np.asarray(image)

    def _update_controls(self) -> None:
        busy = self.jobs.is_busy()
        ready = self.has_checkpoints()
        self.run_button.setEnabled(ready and not busy)
        self.cancel_button.setEnabled(busy)

    def _say(self, text: str, *, error: bool = False) -> None:
        set_role(self.status, "error" if error else "")
        self.status.setText(text)


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:  # deleted since it was listed: its reading fails and says so
        return 0


def _mtime(path: Path) -> str:
    import time

    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))
    except OSError:
        return ""
