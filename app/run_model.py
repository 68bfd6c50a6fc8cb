"""What the app knows about training runs, as plain Python (no Qt): the curves of one run
built from its events, and the list of runs in a runs folder.

Widgets subscribe to these and render; they do not compute.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.events import read_events

CURVES = ("loss", "lr", "positive_pair_similarity", "embedding_std", "pairs_per_s")


@dataclass
class RunHistory:
    """The curves and state of one run, built event by event (live or replayed)."""

    steps: list[int] = field(default_factory=list)
    curves: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in CURVES})
    smoothed_loss: list[float] = field(default_factory=list)
    epoch_losses: list[tuple[int, float]] = field(default_factory=list)
    #: (step, weighted kNN top-1 accuracy) from the engine's "eval" events, in step order.
    knn: list[tuple[int, float]] = field(default_factory=list)
    total_steps: int | None = None
    steps_per_epoch: int | None = None
    status: str = "running"
    reason: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    unknown_events: int = 0
    smoothing: float = 0.9  # exponential moving average weight of the smoothed loss

    def add(self, event: dict[str, Any]) -> None:
        """Fold one event in; unknown types (from a newer engine) are counted and ignored."""
        kind = event.get("type")
        if kind == "run_start":
            self.total_steps = event.get("total_steps")
            self.steps_per_epoch = event.get("steps_per_epoch")
            self.config = event.get("config") or {}
            self.dataset = event.get("dataset") or {}
            self.device = event.get("device") or {}
            self.status, self.reason = "running", ""
        elif kind == "step":
            step = event.get("step")
            if not isinstance(step, int):
                return
            if self.steps and step <= self.steps[-1]:
                self._truncate(step)  # a resumed run repeats no steps, but be safe
            self.steps.append(step)
            for key in CURVES:
                value = event.get(key)
                self.curves[key].append(float(value) if isinstance(value, (int, float))
                                        else math.nan)
            loss = self.curves["loss"][-1]
            previous = self.smoothed_loss[-1] if self.smoothed_loss else loss
            if math.isnan(previous):
                previous = loss
            self.smoothed_loss.append(self.smoothing * previous + (1 - self.smoothing) * loss)
        elif kind == "epoch_end":
            self.epoch_losses.append((int(event.get("epoch", 0)), float(event.get("loss")
                                                                        or math.nan)))
        elif kind == "eval":
            step, top1 = event.get("step"), event.get("knn_top1")
            if isinstance(step, int) and isinstance(top1, (int, float)):
                self.knn = [(s, v) for s, v in self.knn if s < step] + [(step, float(top1))]
        elif kind == "warning":
            self.warnings.append(str(event.get("message", "")))
        elif kind == "run_end":
            self.status = str(event.get("status", "failed"))
            self.reason = str(event.get("reason", ""))
        elif kind not in ("progress", "checkpoint"):
            self.unknown_events += 1

    def _truncate(self, step: int) -> None:
        keep = next((i for i, s in enumerate(self.steps) if s >= step), len(self.steps))
        del self.steps[keep:]
        del self.smoothed_loss[keep:]
        for values in self.curves.values():
            del values[keep:]

    @property
    def has_labels(self) -> bool | None:
        """Whether the run's folder has classes (None before its run_start)."""
        if not self.dataset:
            return None
        return len(self.dataset.get("classes") or []) >= 2

    @property
    def best_knn(self) -> float | None:
        """The best kNN accuracy measured so far, or None."""
        return max((v for _, v in self.knn), default=None)

    @property
    def progress(self) -> float | None:
        """Fraction of the planned steps done, or None before the run has started."""
        if not self.total_steps or not self.steps:
            return None
        return min(1.0, self.steps[-1] / self.total_steps)

    def eta_seconds(self, window: int = 5) -> float | None:
        """Seconds left at the recent training speed."""
        if not self.total_steps or not self.steps:
            return None
        rates = [r for r in self.curves["pairs_per_s"][-window:] if r > 0 and math.isfinite(r)]
        batch = self.config.get("batch_size")
        if not rates or not batch:
            return None
        steps_per_s = (sum(rates) / len(rates)) / batch
        return (self.total_steps - self.steps[-1]) / steps_per_s

    @classmethod
    def replay(cls, events_path: Path) -> RunHistory:
        history = cls()
        for event in read_events(events_path):  # half-written lines are skipped
            history.add(event)
        if history.status == "running":
            history.status = "interrupted"  # no run_end: the engine died or is still going
        return history


@dataclass
class RunSummary:
    """One line of the runs list."""

    path: Path
    name: str
    method: str
    dataset: str
    status: str
    steps: int
    last_loss: float | None
    best_knn: float | None = None
    problem: str = ""


def summarise_run(path: Path) -> RunSummary:
    """A run folder's summary; a damaged folder gives a summary that says what is wrong."""
    name = path.name
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return RunSummary(path, name, "?", "?", "unreadable", 0, None, None,
                          f"config.json cannot be read ({type(exc).__name__})")
    events = path / "events.jsonl"
    history = RunHistory.replay(events) if events.is_file() else RunHistory(status="new")
    last = history.curves["loss"][-1] if history.steps else None
    return RunSummary(path, name, str(config.get("method", "?")),
                      Path(str(config.get("data", "?"))).name, history.status,
                      history.steps[-1] if history.steps else 0, last, history.best_knn)


def list_runs(runs_root: Path) -> list[RunSummary]:
    """Every run folder under ``runs_root`` (folders with a config.json), newest first."""
    root = Path(runs_root)
    if not root.is_dir():
        return []
    runs = [summarise_run(p) for p in root.iterdir()
            if p.is_dir() and (p / "config.json").exists()]
    return sorted(runs, key=lambda r: r.name, reverse=True)
