"""The Train page's "I have N minutes" planner: the engine's ``plan`` verb, run in an engine
child with the page's folder and settings, answers with the settings that fit the time
(backbone, image size, batch, epochs), each with its reason, and Apply puts them in the
form.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.child.engine_jobs import EngineJob, EngineQueue
from app.model.estimate import duration

#: The choice's settings that Apply puts in the form.
APPLIED = ("backbone", "image_size", "batch_size", "epochs")


class TimePlan(QWidget):
    """Minutes box, Plan and Apply buttons, and the answer in words.

    ``arguments()`` gives the ``plan`` verb's arguments for the page's folder and settings
    (without ``--time``), or None when there is nothing to plan yet (the reason is shown).

    Signals:
        planned(object): the engine's plan result (a dict).
        apply_requested(object): the settings to put in the form ({name: value}).
    """

    planned = Signal(object)
    apply_requested = Signal(object)

    def __init__(self, jobs: EngineQueue, arguments: Callable[[], list[str] | str],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.jobs = jobs
        self.arguments = arguments
        self.result: dict | None = None
        self.minutes = QSpinBox()
        self.minutes.setRange(1, 7 * 24 * 60)
        self.minutes.setValue(60)
        self.minutes.setSuffix(" min")
        self.minutes.setToolTip("The time you have for the run.")
        self.plan_button = QPushButton("Plan")
        self.plan_button.setToolTip("Time a few backbones and image sizes on this machine "
                                    "(about 20 s) and choose the settings that fit the time.")
        self.plan_button.clicked.connect(self.plan)
        self.apply_button = QPushButton("Apply")
        self.apply_button.setToolTip("Put the planned settings in the form.")
        self.apply_button.setEnabled(False)
        self.apply_button.clicked.connect(self._apply)
        self.answer = QLabel("How long can the run take? Plan times this machine and says "
                             "which settings fit.")
        self.answer.setWordWrap(True)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("I have"))
        row.addWidget(self.minutes)
        row.addWidget(self.plan_button)
        row.addWidget(self.apply_button)
        row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.answer)

    def plan(self) -> bool:
        """Ask the engine for a plan of the page's settings in the minutes given."""
        args = self.arguments()
        if isinstance(args, str):
            self.answer.setText(args)
            return False
        self.jobs.cancel("plan")
        self.result = None
        self.apply_button.setEnabled(False)
        self.plan_button.setEnabled(False)
        self.answer.setText(f"Timing this machine for {self.minutes.value()} min of "
                            "training…")
        self.jobs.enqueue(EngineJob(
            "plan", ["plan", *args, "--time", f"{self.minutes.value()}m"],
            "Planning the run", on_result=self._on_result, on_failed=self._on_failed,
            on_finished=lambda: self.plan_button.setEnabled(True)))
        return True

    def _on_result(self, result: dict) -> None:
        self.result = result
        self.plan_button.setEnabled(True)
        budget = result.get("budget") or {}
        choice, reasons = budget.get("choice") or {}, budget.get("reasons") or {}
        cache = result.get("cache") or {}
        lines = [f"{result['images']:,} images; cache {cache.get('message', '')}."]
        formats = cache.get("formats") or {}
        if formats:  # each format's size on disk, and the one the run would use
            sizes = ", ".join(f"{name} {formats[name]['bytes'] / 1e9:.2f} GB"
                              + ("" if formats[name].get("fits", True) else " (does not fit)")
                              for name in ("raw", "jpeg") if name in formats)
            lines.append(f"Cache format: {cache.get('format', '?')} ({sizes}; none: no "
                         "cache, each epoch decodes the files).")
        if choice:
            lines.append(f"For {self.minutes.value()} min: {choice['backbone']}, "
                         f"{choice['image_size']} px, batch {choice['batch_size']}, "
                         f"{choice['epochs']} epochs.")
            lines += [f"• {name}: {text}" for name, text in reasons.items()]
        lines.append(f"With the settings as they are: {duration(result['epoch_seconds'])} an "
                     f"epoch, {duration(result['run_seconds'])} in all.")
        self.answer.setText("\n".join(lines))
        self.apply_button.setEnabled(bool(choice) and choice.get("epochs", 0) > 0)
        self.planned.emit(result)

    def _on_failed(self, reason: str) -> None:
        self.plan_button.setEnabled(True)
        self.answer.setText(f"No plan: {reason}")

    def _apply(self) -> None:
        choice = ((self.result or {}).get("budget") or {}).get("choice") or {}
        values = {name: choice[name] for name in APPLIED if name in choice}
        if values:
            self.apply_requested.emit(values)
