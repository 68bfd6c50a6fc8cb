"""Render every page of the app on the demo dataset to PNG files (the README's screenshots).

    python packaging/screenshots.py --out assets/screenshots [--runs-root DIR] [--epochs 10]

A finished demo run in the runs folder is reused; without one, a run with the demo settings
is trained first (about 3 minutes on two CPU cores). The window is drawn offscreen unless a
screen is available, so this works on a machine without a display.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

PAGES = ("data", "augmentations", "train", "livemap", "explore", "curate", "compare",
         "probe", "export")


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Run the event loop until ``condition()`` holds."""
    from PySide6.QtCore import QEventLoop, QTimer

    deadline = time.monotonic() + timeout
    loop = QEventLoop()
    timer = QTimer()
    timer.timeout.connect(lambda: (condition() or time.monotonic() > deadline) and loop.quit())
    timer.start(50)
    if not condition():
        loop.exec()
    timer.stop()
    if not condition():
        raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s")


def settle(seconds: float) -> None:
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def demo_run(runs_root: Path, epochs: int) -> Path:
    """A finished run on the demo dataset in ``runs_root``, trained now if there is none."""
    from engine.data.demo import DEMO_SETTINGS, demo_dataset

    folder = demo_dataset()
    for config in sorted(runs_root.glob("*/config.json"), reverse=True):
        cfg = json.loads(config.read_text(encoding="utf-8"))
        if Path(cfg.get("data", "")) == folder and (config.parent / "checkpoints" /
                                                     "last.pt").is_file():
            return config.parent
    args = [sys.executable, "-m", "engine", "train", "--data", str(folder), "--runs-root",
            str(runs_root), "--epochs", str(epochs)]
    for name, value in DEMO_SETTINGS.items():
        if name == "augment":
            for key, v in value.items():
                args += ["--" + key.replace("_", "-"), str(v)]
        elif name != "epochs":
            args += ["--" + name.replace("_", "-"), str(value)]
    print(f"training a demo run for {epochs} epochs (a few minutes)…", file=sys.stderr)
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return demo_run(runs_root, epochs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="assets/screenshots", help="folder for the PNGs")
    parser.add_argument("--runs-root", help="runs folder (default: a temporary one)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--theme", choices=("light", "dark"), default="light")
    parser.add_argument("--pages", nargs="*", default=list(PAGES), choices=PAGES)
    args = parser.parse_args(argv)
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs_root = Path(args.runs_root or tempfile.mkdtemp(prefix="screenshots-runs-"))
    run_dir = demo_run(runs_root, args.epochs)

    from app.main import build_parser, create_window
    from app.model.run_model import RunHistory

    app, window = create_window(build_parser().parse_args(
        ["--demo", "--runs-root", str(runs_root), "--theme", args.theme]))
    window.resize(1440, 900)
    window.show()
    written = []

    def shoot(name: str, widget=None) -> None:
        settle(0.5)
        path = out / f"{name}.png"
        (widget or window).grab().save(str(path))
        written.append(path)

    wait_until(lambda: window.data_page.report is not None, 60, "the demo folder scan")
    if "data" in args.pages:
        settle(2)  # thumbnails arrive
        shoot("data")
    if "augmentations" in args.pages:
        window.tabs.setCurrentWidget(window.augment_page)
        wait_until(lambda: window.augment_page.current_pairs() is not None, 60, "the pairs")
        shoot("augmentations")
    window.select_run(run_dir)
    if "train" in args.pages:
        page = window.train_page
        page.history = RunHistory.replay(run_dir / "events.jsonl")
        page.run_dir = run_dir
        page.curves.show_history(page.history)
        page.progress.setValue(100)
        page.status.setText(f"Run {page.history.status}: {page.history.reason}")
        window.tabs.setCurrentWidget(page)
        shoot("train")
    if "livemap" in args.pages:
        page = window.train_page
        page.show_live_map(run_dir)
        page.charts.setCurrentWidget(page.live_map)
        window.tabs.setCurrentWidget(page)
        wait_until(lambda: page.live_map.current_coords() is not None, 60, "the live map")
        shoot("livemap")
        page.charts.setCurrentIndex(0)
    if "explore" in args.pages or "curate" in args.pages:
        page = window.explore_page
        window.tabs.setCurrentWidget(page)
        page.map_settings.set_method("umap")
        shown: list[str] = []
        page.map_shown.connect(shown.append)
        if page.map_view.data is None or page.map_view.data.method != "umap":
            page.compute_map()
            wait_until(lambda: "umap" in shown, 600, "the UMAP map")
        page.show_neighbours(7)
        wait_until(lambda: page.neighbours_result is not None and not page.is_busy(), 120,
                   "the neighbours")
        shoot("explore")
    if "curate" in args.pages:
        # a lasso around the points of one class, then the duplicates found with the run's
        # encoder and the map coloured by the outlier score
        data = page.map_view.data
        points = data.coords[data.labels == 3]
        centre = np.median(points, 0)
        radius = np.percentile(np.linalg.norm(points - centre, axis=1), 80)
        angles = np.linspace(0, 2 * np.pi, 40)
        lasso = centre + radius * np.stack([np.cos(angles), np.sin(angles)], 1)
        page.map_view.view_box.region_selected.emit(lasso, "replace")
        page.tabs.setCurrentWidget(page.selection_grid)
        shoot("selection")
        page.tabs.setCurrentWidget(page.curate)
        for kind in ("outliers", "duplicates"):
            page.curate.run(kind)
            wait_until(lambda: not page.is_busy(), 600, f"the {kind}")
        page.colour_box.choose(page.SCORE_NAMES["outliers"])
        page.curate.tabs.setCurrentIndex(0)
        shoot("curate")
    if "compare" in args.pages:
        page = window.compare_page
        window.tabs.setCurrentWidget(page)
        page.compute_maps()
        wait_until(lambda: not page.is_busy() and all(
            side.map_view.data is not None for side in page.sides), 900, "the two maps")
        page.compare_neighbourhoods()
        wait_until(lambda: page.result is not None and not page.is_busy(), 600,
                   "the comparison")
        shoot("compare")
    if "probe" in args.pages and hasattr(window, "probe_page"):
        page = window.probe_page
        window.tabs.setCurrentWidget(page)
        page.run_probes()
        wait_until(lambda: not page.is_busy() and page.has_results(), 900, "the probes")
        shoot("probe")
    if "export" in args.pages:
        dialog = window.open_export_dialog()
        dialog.resize(900, 640)
        dialog.set_format("torchvision")
        dialog.export()
        wait_until(lambda: dialog.last_result is not None, 300, "the export")
        shoot("export", dialog)
        dialog.close()
    for path in written:
        print(path)
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
