"""The kNN and linear-probe results saved in a run's probes/ folder, as plain Python."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.run.layout import RunDir


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


def percent(x: Any) -> str:
    """An accuracy in [0, 1] as "75.0%"; "" for None."""
    return "" if x is None else f"{100 * float(x):.1f}%"


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:  # deleted since it was listed: its reading fails and says so
        return 0
