"""The Train page's time estimate before a run: how long the settings take on this machine
for the folder's images, and the measurement behind it (a "Measure speed" button runs the
engine's ``bench`` in a child process; its results are kept per device)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from app.child.engine_process import EngineProcess
from app.model.estimate import (
    Speed,
    duration,
    first_run_epochs,
    load_bench,
    run_seconds,
    save_bench,
    speed_from_bench,
    speed_from_runs,
    total_steps,
)
from app.model.run_model import window_words
from engine.config.locations import user_cache_dir
from engine.config.resolve import DeviceInfo, resolve_config, resolve_device
from engine.config.train_config import TrainConfig

#: Seconds the bench may take in all (three configurations of the device).
BENCH_SECONDS = 24
#: Pairs/s of ResNet-18 at 32 px on a 2-core CPU (DESIGN.md, measured 2026-12-01), for a
#: rough guess until this machine's speed is measured; ResNet-50 is about 15x slower.
ROUGH_CPU_PAIRS_PER_S = 20.0


def rough_cpu_speed(settings: dict) -> Speed:
    size = settings.get("image_size") or 32
    rate = ROUGH_CPU_PAIRS_PER_S * (32 / size) ** 2
    if settings.get("backbone") != "resnet18":
        rate /= 15
    return Speed(rate, "a rough guess for a small CPU: press Measure speed for this "
                       "machine's own")


class RunEstimate(QWidget):
    """A line with the time the current settings take, and a Measure speed button.

    Signals:
        measured(): the bench finished (its speeds are kept): estimate again.
    """

    measured = Signal()

    def __init__(self, runs_root: Path, cache_dir: Path | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runs_root = Path(runs_root)
        self.bench_file = Path(cache_dir or user_cache_dir()) / "speed.json"
        self._devices: dict[str, DeviceInfo | None] = {}
        #: Why the settings do not resolve (the engine's message), "" when they do.
        self.problem = ""
        self.label = QLabel("")
        self.label.setWordWrap(True)
        self.label.setObjectName("estimate")
        self.measure_button = QPushButton("Measure speed")
        self.measure_button.setToolTip(
            "Time training steps on this machine (under a minute, in a background process) "
            "so the estimate and the CPU's choice of epochs are this machine's")
        self.measure_button.clicked.connect(self.measure)
        self.bench = EngineProcess(self)
        self.bench.result.connect(self._on_bench_result)
        self.bench.ended.connect(self._on_bench_ended)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addStretch(1)
        row.addWidget(self.measure_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label)
        layout.addLayout(row)

    # --- what the estimate rests on --------------------------------------------------------

    def device(self, requested: str = "auto") -> DeviceInfo | None:
        if requested not in self._devices:
            try:
                self._devices[requested] = resolve_device(requested)[1]
            except (ValueError, RuntimeError):  # a device that is not there: no estimate
                self._devices[requested] = None
        return self._devices[requested]

    def resolved(self, cfg: TrainConfig, images: int) -> tuple[dict, DeviceInfo] | None:
        """The settings the engine would train with on this device (the "auto" values
        chosen as it chooses them), or None when they do not resolve."""
        info = self.device(cfg.device)
        if info is None:
            return None
        try:
            run, _ = resolve_config(dataclasses.replace(cfg, data="."), info,
                                    typical_side=None, num_images=images)
        except (ValueError, TypeError) as exc:
            self.problem = window_words(str(exc))
            return None
        self.problem = ""
        return {f.name: getattr(run, f.name) for f in dataclasses.fields(run)}, info

    def speed(self, settings: dict, info: DeviceInfo) -> Speed | None:
        """This machine's speed for ``settings``: an earlier run's, the bench's, or (CPU)
        a rough guess; None on a GPU that was not measured."""
        return (speed_from_runs(self.runs_root, info.name, settings)
                or speed_from_bench(load_bench(self.bench_file, info.name), settings)
                or (rough_cpu_speed(settings) if info.type == "cpu" else None))

    def cpu_epochs(self, cfg: TrainConfig, images: int) -> tuple[int, str] | None:
        """On a CPU, the epochs of a first run of minutes and why; None on a GPU."""
        resolved = self.resolved(cfg, images)
        if resolved is None or resolved[1].type != "cpu":
            return None
        settings, info = resolved
        speed = self.speed(settings, info)
        if speed is None:
            return None
        epochs = first_run_epochs(images, speed)
        paper = run_seconds(images, {**settings, "epochs": cfg.epochs, "max_steps": None},
                            speed)
        return epochs, (f"epochs {epochs}: chosen for this CPU so that a first run takes "
                        f"minutes ({cfg.epochs} epochs would take about {duration(paper)}); "
                        "type another number to change it")

    # --- the line ----------------------------------------------------------------------------

    def show_for(self, cfg: TrainConfig, images: int | None, note: str = "") -> None:
        """Say how long ``cfg`` takes for ``images`` images (None: not counted yet)."""
        if images is None:
            self._say("Time: open the folder (Data page) to estimate how long a run takes.")
            return
        resolved = self.resolved(cfg, images)
        if resolved is None:
            self._say(f"Time: no estimate, the engine would refuse these settings: "
                      f"{self.problem}" if self.problem else
                      "Time: no estimate for this device.")
            return
        settings, info = resolved
        steps = total_steps(images, settings["batch_size"], settings["epochs"],
                            settings.get("max_steps"))
        speed = self.speed(settings, info)
        if speed is None:
            text = (f"{steps:,} steps; the time shows after the first steps (or press "
                    "Measure speed).")
        else:
            text = (f"Estimated time: about {duration(run_seconds(images, settings, speed))} "
                    f"for {settings['epochs']} epochs ({steps:,} steps) at "
                    f"{speed.pairs_per_s:.0f} pairs/s ({speed.source}).")
        self._say(text + (f"\n{note}" if note else ""))

    def _say(self, text: str) -> None:
        self.label.setText(text)

    # --- the bench -------------------------------------------------------------------------

    def measure(self) -> None:
        if self.bench.is_running():
            return
        self.measure_button.setEnabled(False)
        self._say("Measuring this machine's training speed (under a minute)…")
        self.bench.start(["bench", "--seconds", str(BENCH_SECONDS), "--json"])

    def _on_bench_result(self, result: dict) -> None:
        results, info = result.get("results"), self.device("auto")
        if isinstance(results, list) and info is not None:
            try:
                save_bench(self.bench_file, info.name, results)
            except OSError:
                pass  # the estimate is only a guess without it

    def _on_bench_ended(self, status: str, _code: int, reason: str) -> None:
        self.measure_button.setEnabled(True)
        if status != "finished":
            self._say(f"The speed could not be measured ({status}): {reason}")
            return
        self.measured.emit()
