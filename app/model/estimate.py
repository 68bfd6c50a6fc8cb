"""How long a run would take on this machine, before it starts: from the folder's image
count, the settings (resolved for the device as the engine resolves them) and a speed
measured here, by earlier runs with the same settings or by the engine's ``bench``. The ETA
during a run (RunHistory.eta_seconds) uses the same arithmetic on the run's own speed, so
the two agree. No Qt here.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.run.events import read_events
from engine.run.layout import RunDir

#: On a CPU, a first run is planned to take about this long (the papers' 100 epochs take
#: hours there); on a GPU the method's own epochs are kept.
FIRST_RUN_MINUTES = 10
#: Earlier runs read for their measured speed (the newest run folders).
RUNS_READ = 20
#: The settings a speed depends on.
SPEED_KEYS = ("method", "backbone", "image_size", "batch_size")


@dataclass(frozen=True)
class Speed:
    """Training pairs per second on this machine for some settings, and where it comes
    from, for people ("measured by run 20261201-..." / "from bench, 64 px scaled")."""

    pairs_per_s: float
    source: str


def total_steps(images: int, batch_size: int, epochs: int, max_steps: int | None) -> int:
    """The steps a run plans, as the engine counts them (whole batches per epoch)."""
    steps = epochs * (images // batch_size)
    return min(steps, max_steps) if max_steps else steps


def run_seconds(images: int, settings: dict[str, Any], speed: Speed) -> float:
    """Seconds of training for ``settings`` (resolved: batch_size, epochs, max_steps)."""
    batch = int(settings["batch_size"])
    steps = total_steps(images, batch, int(settings["epochs"]), settings.get("max_steps"))
    return steps * batch / speed.pairs_per_s


def first_run_epochs(images: int, speed: Speed, minutes: float = FIRST_RUN_MINUTES,
                     most: int = 100) -> int:
    """Epochs that take about ``minutes`` at ``speed`` (at least 1, at most ``most``)."""
    if images <= 0:
        return most
    return max(1, min(most, math.floor(minutes * 60 * speed.pairs_per_s / images)))


def _matches(config: dict[str, Any], settings: dict[str, Any]) -> bool:
    return all(config.get(k) == settings.get(k) for k in SPEED_KEYS)


def speed_from_runs(runs_root: Path, device_name: str, settings: dict[str, Any]
                    ) -> Speed | None:
    """The median pairs/s of the newest earlier run on this device with the same method,
    backbone, image size and batch (from its step events), or None."""
    root = Path(runs_root)
    try:
        folders = sorted((p for p in root.iterdir() if RunDir(p).events.is_file()),
                         reverse=True)[:RUNS_READ]
    except OSError:
        return None
    for folder in folders:
        measured = _run_speed(RunDir(folder).events)
        if measured is None:
            continue
        device, config, rate = measured
        if device == device_name and _matches(config, settings):
            return Speed(rate, f"measured by the run {folder.name}")
    return None


#: events.jsonl -> (mtime in ns, what _run_speed found), so typing in the form reads no file
#: twice.
_speeds: dict[Path, tuple[int, tuple[str, dict, float] | None]] = {}


def _run_speed(events: Path) -> tuple[str, dict, float] | None:
    """(device name, config, median pairs/s of its last 50 steps) of a run, or None."""
    try:
        mtime = events.stat().st_mtime_ns
    except OSError:
        return None
    cached = _speeds.get(events)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    rates: list[float] = []
    start: dict | None = None
    try:
        for event in read_events(events):
            kind = event.get("type")
            if kind == "run_start":
                start = event
            elif kind == "step" and isinstance(event.get("pairs_per_s"), (int, float)):
                rates.append(float(event["pairs_per_s"]))
    except OSError:
        return None
    rates = [r for r in rates[-50:] if r > 0 and math.isfinite(r)]
    found = None
    if start is not None and rates:
        config, device = start.get("config") or {}, start.get("device") or {}
        if isinstance(config, dict) and isinstance(device, dict):
            found = (str(device.get("name")), config, statistics.median(rates))
    _speeds[events] = (mtime, found)
    return found


def speed_from_bench(results: list[dict[str, Any]], settings: dict[str, Any]) -> Speed | None:
    """A speed from ``contrastive-engine bench`` results: the same backbone at the same
    size, or at the nearest size scaled by the pixels per image (the work of a step grows
    with them), or None when the bench did not time that backbone."""
    same = [r for r in results if r.get("backbone") == settings.get("backbone")
            and r.get("method", settings.get("method")) == settings.get("method")]
    size = settings.get("image_size")
    if not same or not isinstance(size, int):
        return None
    nearest = min(same, key=lambda r: (abs(r["image_size"] - size),
                                       abs(r["batch_size"] - settings.get("batch_size", 0))))
    scale = (nearest["image_size"] / size) ** 2
    how = ("benchmarked here" if nearest["image_size"] == size else
           f"benchmarked here at {nearest['image_size']} px, scaled to {size} px")
    return Speed(float(nearest["pairs_per_s"]) * scale, how)


def load_bench(path: Path, device_name: str) -> list[dict[str, Any]]:
    """The bench results saved for ``device_name`` ([] when none)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    results = data.get(device_name) if isinstance(data, dict) else None
    return results if isinstance(results, list) else []


def save_bench(path: Path, device_name: str, results: list[dict[str, Any]]) -> None:
    """Keep ``results`` for ``device_name`` (other devices' results stay)."""
    from engine.run.io import write_json_atomic

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    data = data if isinstance(data, dict) else {}
    data[device_name] = results
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(path), data)


def duration(seconds: float) -> str:
    """A duration for people: "45 s", "12 min", "2 h 30 min"."""
    seconds = int(seconds)
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
