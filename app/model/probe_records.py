"""The kNN and linear-probe results saved in a run's probes/ folder, as plain Python."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.model.probe_verdict import TrainingKnn, training_knn
from app.model.run_model import read_run_config
from engine.methods import METHODS
from engine.run.events import read_events
from engine.run.layout import RANDOM_INIT, RunDir

#: The kind of the rows made from the kNN evaluations during training (not saved files).
TRAINING_KIND = "knn-training"


@dataclass
class ProbeRecord:
    """One saved evaluation (a probes/*.json file)."""

    path: Path
    result: dict[str, Any]

    @property
    def kind(self) -> str:
        kind = self.result.get("kind")
        if kind == TRAINING_KIND:
            return "kNN (training)"
        return "linear probe" if kind == "linear-probe" else "kNN"

    @property
    def from_training(self) -> bool:
        return self.result.get("kind") == TRAINING_KIND

    @property
    def checkpoint(self) -> str:
        return str(self.result.get("checkpoint", "?"))

    @property
    def label_fraction(self) -> float:
        return float(self.result.get("label_fraction", 1.0))

    def saved_at(self) -> str:
        """When the file was written ("2026-01-31 14:05"), "" if it is gone."""
        try:
            return time.strftime("%Y-%m-%d %H:%M", time.localtime(self.path.stat().st_mtime))
        except OSError:
            return ""


def load_records(run_dir: Path) -> tuple[list[ProbeRecord], list[str]]:
    """The run's saved evaluations, newest first, and the files that could not be read."""
    records, damaged = [], []
    files = sorted(RunDir(run_dir).probes.glob("*.json"), key=_mtime_ns, reverse=True)
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


def training_evals(run_dir: Path) -> list[dict[str, Any]]:
    """The run's ``eval`` events (the kNN accuracy measured during training), in order."""
    path = RunDir(run_dir).events
    if not path.is_file():
        return []
    try:
        return [e for e in read_events(path) if e.get("type") == "eval"]
    except OSError:
        return []


def training_records(run_dir: Path, evals: list[dict[str, Any]] | None = None
                     ) -> tuple[list[ProbeRecord], TrainingKnn | None]:
    """Table rows for the first, best and last kNN evaluation during training (one row
    when they are the same epoch), and their summary for the verdict."""
    summary = training_knn(training_evals(run_dir) if evals is None else evals)
    if summary is None:
        return [], None
    names: dict[int, list[str]] = {}
    values: dict[int, float] = {}
    for role, epoch, top1 in (("first", summary.first_epoch, summary.first),
                              ("best", summary.best_epoch, summary.best),
                              ("last", summary.last_epoch, summary.last)):
        names.setdefault(epoch, []).append(role)
        values[epoch] = top1
    path = RunDir(run_dir).events
    test = summary.test or "?"
    records = [ProbeRecord(path, {
        "kind": TRAINING_KIND, "checkpoint": f"epoch {epoch} ({', '.join(roles)})",
        "space": "h", "top1": values[epoch], "test": test})
        for epoch, roles in sorted(names.items())]
    return records, summary


def comparison(records: list[ProbeRecord]) -> dict[str, dict[str, Any] | None]:
    """The newest saved linear probe and kNN of a trained checkpoint, each with the newest
    random-init result measured the same way (space, split seed and size, label fraction):
    {"probe", "probe_random", "knn", "knn_random"}, None where missing. ``records`` come
    newest first."""
    found: dict[str, dict[str, Any] | None] = dict.fromkeys(
        ("probe", "probe_random", "knn", "knn_random"))
    saved = [r for r in records if not r.from_training]
    for key, kind in (("probe", "linear probe"), ("knn", "kNN")):
        trained = next((r for r in saved if r.kind == kind and r.checkpoint != RANDOM_INIT),
                       None)
        if trained is None:
            continue
        found[key] = trained.result
        same = ("space", "seed", "test", "label_fraction", "k")
        found[f"{key}_random"] = next(
            (r.result for r in saved if r.kind == kind and r.checkpoint == RANDOM_INIT
             and all(r.result.get(f) == trained.result.get(f) for f in same)), None)
    return found


def percent(x: Any) -> str:
    """An accuracy in [0, 1] as "75.0%"; "" for None."""
    return "" if x is None else f"{100 * float(x):.1f}%"


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:  # deleted since it was listed: its reading fails and says so
        return 0


@dataclass(frozen=True)
class RunOrigin:
    """Where a run's encoder came from, as its config.json says: the weights it started
    from (``init``) and whether its method read the labels while it trained."""

    init: str  # "random", "imagenet" or the weights file's name
    method: str  # the method's title ("SimCLR"), or its name when this app does not know it
    uses_labels: bool

    def init_text(self) -> str:
        return f"init: {self.init}"

    def describe(self) -> str:
        """The init in a sentence, for beside the results."""
        if self.init == "random":
            return ("init: random (training started from random weights, like the "
                    "random-init baseline)")
        return (f"init: {self.init} (training started from these weights; the random-init "
                "baseline is the same network with random weights, not the starting point)")

    def labels_warning(self) -> str:
        """Why this run's accuracy is not a self-supervised result ("" when it is one)."""
        if not self.uses_labels:
            return ""
        return (f"This run's method ({self.method}) saw the folder's labels during training: "
                "its kNN and probe accuracy measure supervised learning, not a "
                "self-supervised result.")


def run_origin(run_dir: Path) -> RunOrigin | None:
    """The origin of the run in ``run_dir``; None when its config.json cannot be read."""
    config = read_run_config(run_dir)
    if config is None:
        return None
    init = str(config.get("init") or "")
    shown = "random" if not init else "imagenet" if init == "imagenet" else Path(init).name
    name = str(config.get("method", "?"))
    spec = METHODS.get(name)
    return RunOrigin(shown, spec.title if spec else name,
                     bool(spec.uses_labels) if spec else False)
