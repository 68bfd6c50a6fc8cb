"""The Data page and the Explore page on a 100,000-image folder: how long each takes to open,
how smooth scrolling, panning, zooming, hovering and selecting are, and the memory of the
process after each stage.

Builds its inputs once under --work (kept for the next run): a folder of --images JPEGs
(benchmarks/bench_100k.py's generator: 10 classes, mixed sizes, three bad files), the
engine's scan manifest of it, and a finished run folder on it as the engine writes one
(config.json, manifest.json, a checkpoint, embeddings of every image, a saved PCA map, two
tags), the embeddings made up (class clusters of dimension 512) rather than computed: what
is measured here is the app, not the encoder. Then, in this process on the offscreen Qt
platform, in the app's window (its other pages take their part of a scan or a run's choice,
as they do for a person):

  data     choosing the folder (the page scans it: the engine's scan, every file hashed and
           decoded) until the counts are shown and the first screen of thumbnails is drawn;
           showing an already scanned folder (the GUI thread's part); page-down through the
           grid; a jump to the middle until its thumbnails are drawn; the orders; the run's
           tags (30,000 and 1,031 images) and the tag filter
  explore  choosing the run until all points are drawn; pan, zoom and hover (real mouse
           events); colour by sub-folder and back; a lasso around ~30,000 points and the
           Selection grid of them; a click's neighbours (the saved embeddings read and
           searched in a worker thread)

A timer asks to be called every 10 ms; the longest gap beyond that while a stage runs is its
worst stall ("worst frame"). Memory is VmRSS after each stage and VmHWM (the process's peak
so far; Linux cannot reset it between stages). Results are printed and written to
benchmarks/results/app_100k.json.

Target: no GUI-thread stall over 100 ms once the data is loaded; opening within seconds.

Run:  QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_app_100k.py
      [--images 100000] [--work /tmp/bench-app-100k] [--stages data explore]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_100k import CLASSES, make_folder

TICK_MS = 10
#: The time between two mouse moves of a drag (pyqtgraph drops moves closer than its
#: mouseRateLimit, 100 a second by default).
MOVE_S = 0.012
DIM_H, DIM_Z = 512, 128
RESULTS = Path(__file__).resolve().parent / "results" / "app_100k.json"
figures: dict[str, dict] = {}
STALLS: Stalls | None = None  # made once the QApplication is


# --- inputs -------------------------------------------------------------------------------


def build_inputs(work: Path, n: int) -> tuple[Path, Path]:
    """(folder, run folder) under ``work``, made when missing."""
    from engine.config.train_config import TrainConfig
    from engine.data.scan import Manifest, scan_folder
    from engine.evaluate.embed import _save_npy
    from engine.evaluate.maps import MapParams, load_or_compute_map
    from engine.run.checkpoint import save_checkpoint
    from engine.run.io import file_sha256, write_json_atomic
    from engine.run.layout import LAST, RunDir

    folder = make_folder(work / "data", n)
    run = RunDir(work / "run")
    files = run.embedding(LAST)
    if files.index.is_file() and run.manifest.is_file():
        if not run.tags.is_file():
            tag_images(run.path, Manifest.load(run.manifest))
        return folder, run.path
    started = time.perf_counter()
    manifest_path = work / "manifest.json"
    if manifest_path.is_file():
        manifest = Manifest.load(manifest_path)
    else:
        manifest = scan_folder(folder)
        manifest.save(manifest_path)
    print(f"scan manifest: {len(manifest.images):,} images "
          f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    run.path.mkdir(parents=True, exist_ok=True)
    TrainConfig.from_dict({"data": str(folder)}).save(run.config)
    manifest.save(run.manifest)
    run.checkpoints.mkdir(exist_ok=True)
    save_checkpoint(run.last_checkpoint, {"step": 0, "epoch": 1})
    # Class clusters, so the map has structure: what a trained encoder gives, roughly.
    rng = np.random.default_rng(0)
    labels = manifest.labels()
    centres = rng.standard_normal((len(manifest.classes) or 1, DIM_H)).astype(np.float32)
    h = centres[np.maximum(labels, 0)] + 0.8 * rng.standard_normal(
        (len(labels), DIM_H), dtype=np.float32)
    z = h[:, :DIM_Z] + 0.1 * rng.standard_normal((len(labels), DIM_Z), dtype=np.float32)
    files.path.mkdir(parents=True, exist_ok=True)
    _save_npy(files.features, h)
    _save_npy(files.projections, z)
    write_json_atomic(files.index, {
        "checkpoint": LAST, "checkpoint_sha256": file_sha256(run.last_checkpoint),
        "step": 0, "epoch": 1, "root": manifest.root, "data_key": manifest.key(),
        "classes": manifest.classes, "paths": [r.path for r in manifest.images],
        "labels": labels.tolist(), "skipped": len(manifest.skipped), "image_size": 32,
        "processes": 1, "seconds": 0.0,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    load_or_compute_map(h, MapParams(method="pca"), run.maps, f"{LAST}-h")
    tag_images(run.path, manifest)
    print(f"run folder made in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return folder, run.path


def tag_images(run_dir: Path, manifest) -> None:
    """Two tags in the run's tags.json: "picked" (30,000 random images) and "doubtful"
    (every 97th)."""
    from engine.evaluate.tags import refs_for_indices, save_tags

    n = len(manifest.images)
    picked = np.sort(np.random.default_rng(0).choice(n, min(30_000, n), replace=False))
    save_tags(run_dir, {"picked": refs_for_indices(manifest, picked.tolist()),
                        "doubtful": refs_for_indices(manifest, list(range(0, n, 97)))})


# --- measuring ------------------------------------------------------------------------------


def memory() -> dict[str, float]:
    """VmRSS and VmHWM of this process, in GB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 2**20, 3)
    return out


class Stalls:
    """The longest gap of a 10 ms timer beyond its interval, from :meth:`reset` on, and the
    longest garbage collection in that time (any thread's: it holds every thread)."""

    def __init__(self) -> None:
        from PySide6.QtCore import QElapsedTimer, Qt, QTimer

        self.clock = QElapsedTimer()
        self.worst = 0.0
        self.gc_worst = self.gc_taken = 0.0
        #: the GUI thread's own CPU time in the worst gap (the rest it waited: for a core
        #: on a busy machine, or for the GIL that a worker thread held)
        self.worst_cpu = self.cpu_taken = 0.0
        self._cpu = time.thread_time()
        self._gc_started = 0.0
        gc.callbacks.append(self._gc)
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.setTimerType(Qt.PreciseTimer)
        self.timer.timeout.connect(self._tick)
        self.clock.start()
        self.timer.start()

    def _tick(self) -> None:
        gap, cpu = self.clock.nsecsElapsed() / 1e6 - TICK_MS, time.thread_time()
        if gap > self.worst:
            self.worst, self.worst_cpu = gap, (cpu - self._cpu) * 1e3
        self._cpu = cpu
        self.clock.restart()

    def _gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_worst = max(self.gc_worst, (time.perf_counter() - self._gc_started) * 1e3)

    def reset(self) -> None:
        self.worst = self.gc_worst = self.worst_cpu = 0.0
        self._cpu = time.thread_time()
        self.clock.restart()

    def take(self) -> float:
        """The worst stall since the last reset (the current gap included), then reset;
        :attr:`gc_taken` is the longest collection in that time."""
        self._tick()
        worst, self.worst = self.worst, 0.0
        self.gc_taken, self.gc_worst = round(self.gc_worst, 1), 0.0
        self.cpu_taken, self.worst_cpu = round(self.worst_cpu, 1), 0.0
        return round(max(0.0, worst), 1)


def pump(seconds: float = 0.0) -> None:
    """Process events for ``seconds`` (at least once)."""
    from PySide6.QtCore import QCoreApplication, QEventLoop

    end = time.perf_counter() + seconds
    while True:
        QCoreApplication.processEvents(QEventLoop.AllEvents, 5)
        if time.perf_counter() >= end:
            return
        time.sleep(0.001)


def wait_until(condition: Callable[[], bool], timeout: float = 600.0) -> float:
    """Process events until ``condition()``; the seconds it took (raises after timeout)."""
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"gave up after {timeout:.0f} s")
        pump(0.002)
    return time.perf_counter() - started


def frames(steps: list[Callable[[], None]], gap_s: float = 0.0) -> dict[str, float]:
    """Each step, then the events it caused (its repaint): the median and longest, in ms."""
    times = []
    for step in steps:
        started = time.perf_counter()
        step()
        pump()
        times.append((time.perf_counter() - started) * 1e3)
        if gap_s:
            pump(gap_s)
    return {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1),
            "steps": len(times)}


def report(stage: str, name: str, **values: object) -> None:
    if "worst_stall_ms" in values and STALLS is not None:
        values["its_gui_cpu_ms"] = STALLS.cpu_taken
        values["longest_gc_ms"] = STALLS.gc_taken
    figures.setdefault(stage, {})[name] = values
    print(f"  {name:<46} " + ", ".join(f"{k} {v}" for k, v in values.items()), flush=True)


def grid_rows_in_view(view) -> list[int]:
    """The rows of an icon-mode list view of uniform cells that are (at least partly) in
    view, worked out from its grid and scroll position: asking the view (indexAt,
    visualRect) would lay out every row first, as its batched layout has not yet done."""
    grid, area = view.gridSize(), view.viewport().rect()
    columns = max(1, area.width() // grid.width())
    top = view.verticalScrollBar().value()  # pixels: icon mode scrolls per pixel
    first, last = top // grid.height(), (top + area.height() - 1) // grid.height()
    return list(range(first * columns, min(view.model().rowCount(), (last + 1) * columns)))


def visible_rows(view) -> list[int]:
    """The rows of a list view whose cells are (at least partly) in view."""
    model, area = view.model(), view.viewport().rect()
    first = view.indexAt(area.topLeft())
    if not first.isValid():
        first = model.index(0, 0)
    rows = []
    for row in range(max(0, first.row()), model.rowCount()):
        rect = view.visualRect(model.index(row, 0))
        if rect.top() > area.bottom():
            break
        if rect.intersects(area):
            rows.append(row)
    return rows


# --- the Data page --------------------------------------------------------------------------


def bench_data_page(window, folder: Path, run_dir: Path, stalls: Stalls) -> None:
    from PySide6.QtWidgets import QAbstractSlider

    print("Data page")
    page = window.data_page
    window.tabs.setCurrentWidget(page)
    pump(0.2)
    view, model = page.thumbnails, page.model

    def screen_drawn() -> bool:
        rows = grid_rows_in_view(view)
        return bool(rows) and all(model.is_loaded(r) or model.image(r) in model._failed
                                  for r in rows)

    stalls.reset()
    started = time.perf_counter()
    window.open_folder(folder)  # as the Start page's and the Data page's choices do
    wait_until(lambda: page.report is not None)
    counted = time.perf_counter() - started
    scan_stall = stalls.take()
    wait_until(screen_drawn)
    report("data", "open: choose the folder -> counts shown", seconds=round(counted, 2),
           worst_stall_ms=scan_stall, text=page.counts.text())
    report("data", "open: -> first screen of thumbnails",
           seconds=round(time.perf_counter() - started, 2), rows=len(grid_rows_in_view(view)),
           worst_stall_ms=stalls.take())

    # The GUI thread's part of opening: the scanned folder shown again.
    pump(0.5)
    stalls.reset()
    result = page.report
    shown = time.perf_counter()
    page._on_scanned(page._generation, result)
    pump()
    report("data", "show a scanned folder (GUI thread)",
           ms=round((time.perf_counter() - shown) * 1e3, 1), worst_stall_ms=stalls.take())

    bar = view.verticalScrollBar()
    stalls.reset()
    page_down = frames([lambda: bar.triggerAction(QAbstractSlider.SliderPageStepAdd)] * 40,
                       gap_s=0.05)
    report("data", "page-down x40 (50 ms apart)", **page_down, worst_stall_ms=stalls.take())
    stalls.reset()
    fast = frames([lambda: bar.triggerAction(QAbstractSlider.SliderPageStepAdd)] * 100)
    report("data", "page-down x100, no pause", **fast, worst_stall_ms=stalls.take())
    stalls.reset()
    jump = time.perf_counter()
    bar.setValue(bar.maximum() // 2)
    wait_until(screen_drawn)
    report("data", "jump to the middle -> its thumbnails drawn",
           seconds=round(time.perf_counter() - jump, 2), worst_stall_ms=stalls.take())
    pump(0.3)

    for key in ("shuffled", "name", "size", "class"):
        shown_orders: list[str] = []
        page.order_shown.connect(shown_orders.append)
        stalls.reset()
        began = time.perf_counter()
        page.set_order(key)
        wait_until(lambda shown_orders=shown_orders: bool(shown_orders))
        pump()
        page.order_shown.disconnect(shown_orders.append)
        report("data", f"order: {key}", ms=round((time.perf_counter() - began) * 1e3, 1),
               worst_stall_ms=stalls.take())

    stalls.reset()
    began = time.perf_counter()
    page.show_tags_of(run_dir)  # as the window does when a run is chosen
    wait_until(lambda: page.tag_filter.count() > 1)
    pump()
    report("data", "a run's tags shown (read and found in a worker)",
           ms=round((time.perf_counter() - began) * 1e3, 1),
           tags=[page.tag_filter.itemText(i) for i in range(1, page.tag_filter.count())],
           worst_stall_ms=stalls.take())
    tagged = {name: [model.paths()[i] for i in indices]
              for name, indices in page._tagged.items()}
    stalls.reset()
    began = time.perf_counter()
    page.set_tags(tagged, "bench")
    pump()
    report("data", "the same tags given as paths (set_tags, in the GUI thread)",
           ms=round((time.perf_counter() - began) * 1e3, 1), worst_stall_ms=stalls.take())
    for entry in (1, 2, 0):
        stalls.reset()
        began = time.perf_counter()
        page.tag_filter.setCurrentIndex(entry)
        pump()
        report("data", f"tag filter: {page.tag_filter.currentText()}",
               ms=round((time.perf_counter() - began) * 1e3, 1), worst_stall_ms=stalls.take())
    figures["data"]["memory after the Data page (GB)"] = memory()
    print(f"  memory: {memory()}")
    pump(0.2)


# --- the Explore page -----------------------------------------------------------------------


def bench_explore_page(window, run_dir: Path, stalls: Stalls) -> None:
    from bench_map import lasso_around, mouse
    from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    from app.widgets.map_items import LASSO, PAN

    print("Explore page")
    page = window.explore_page
    window.tabs.setCurrentWidget(page)
    pump(0.2)
    view = page.map_view
    viewport = view.plot.viewport()
    shown: list[str] = []
    page.map_shown.connect(shown.append)
    stalls.reset()
    started = time.perf_counter()
    window.run_selected.emit(run_dir)  # as choosing it in the sidebar does
    wait_until(lambda: bool(shown))
    viewport.repaint()
    pump()
    report("explore", "open: choose the run -> all points drawn",
           seconds=round(time.perf_counter() - started, 2), points=len(view.data),
           worst_stall_ms=stalls.take())
    data = view.data
    stalls.reset()
    began = time.perf_counter()
    view.scatter.update()
    viewport.repaint()
    report("explore", "full repaint", ms=round((time.perf_counter() - began) * 1e3, 1))

    rect = viewport.rect()
    cx, cy = rect.width() // 2, rect.height() // 2
    t = np.linspace(0, 4 * np.pi, 200)
    spiral = [QPoint(int(cx + 0.35 * rect.width() * np.cos(a) * (0.3 + 0.7 * a / t[-1])),
                     int(cy + 0.35 * rect.height() * np.sin(a) * (0.3 + 0.7 * a / t[-1])))
              for a in t]
    none, left, no_mod = Qt.NoButton, Qt.LeftButton, Qt.NoModifier

    def drag(points: list[QPoint]) -> list[Callable[[], None]]:
        steps = [lambda: mouse(viewport, QEvent.MouseButtonPress, points[0], left, left,
                               no_mod)]
        steps += [lambda p=p: mouse(viewport, QEvent.MouseMove, p, none, left, no_mod)
                  for p in points[1:]]
        steps.append(lambda: mouse(viewport, QEvent.MouseButtonRelease, points[-1], left,
                                   none, no_mod))
        return steps

    hovered: list[int] = []
    view.point_hovered.connect(hovered.append)
    stalls.reset()
    hover = frames([lambda p=p: mouse(viewport, QEvent.MouseMove, p, none, none, no_mod)
                    for p in spiral], gap_s=MOVE_S)
    report("explore", "hover, 200 moves", **hover,
           points_hovered=sum(i >= 0 for i in hovered), worst_stall_ms=stalls.take())
    mouse(viewport, QEvent.MouseMove, QPoint(2, 2), none, none, no_mod)
    view.leaveEvent(QEvent(QEvent.Leave))
    pump(0.2)

    view.set_tool(PAN)
    stalls.reset()
    report("explore", "pan, a drag of 200 moves", **frames(drag(spiral), gap_s=MOVE_S),
           worst_stall_ms=stalls.take())
    view.plot.autoRange()
    pump(0.1)
    middle = QPointF(cx, cy)

    def wheel(delta: int) -> None:
        QApplication.sendEvent(viewport, QWheelEvent(
            middle, viewport.mapToGlobal(middle), QPoint(), QPoint(0, delta), Qt.NoButton,
            Qt.NoModifier, Qt.NoScrollPhase, False))

    stalls.reset()
    report("explore", "zoom, 10 wheel steps in and out",
           **frames([lambda d=d: wheel(d) for d in [120] * 5 + [-120] * 5], gap_s=0.03),
           worst_stall_ms=stalls.take())
    view.plot.autoRange()
    pump(0.1)

    for name in ("sub-folder", "class"):
        stalls.reset()
        began = time.perf_counter()
        page.colour_box.choose(name)
        viewport.repaint()
        pump()
        report("explore", f"colour by {name}", ms=round((time.perf_counter() - began) * 1e3, 1),
               worst_stall_ms=stalls.take())

    # A lasso around ~30,000 points, drawn with the mouse in viewport pixels.
    polygon = lasso_around(data, min(30_000, len(data) // 3))[::3]
    vb = view.view_box

    def to_pixel(x: float, y: float) -> QPoint:
        return view.plot.mapFromScene(vb.mapViewToScene(QPointF(x, y)))

    pixels = [to_pixel(float(x), float(y)) for x, y in polygon]
    pixels.append(pixels[0])
    view.set_tool(LASSO)
    made: list[int] = []
    view.selection_made.connect(lambda indices, mode: made.append(len(indices)))
    stalls.reset()
    lasso = frames(drag(pixels), gap_s=MOVE_S)
    report("explore", f"lasso, a drag of {len(pixels)} moves and its release", **lasso,
           selected=made[-1] if made else 0, worst_stall_ms=stalls.take())
    # The same outline given whole, as the lasso's release gives it (the drag's own
    # outline depends on which moves the plot took).
    stalls.reset()
    began = time.perf_counter()
    vb.region_selected.emit(polygon, "replace")
    viewport.repaint()
    pump()
    report("explore", "lasso release: selection, dimming, grid",
           ms=round((time.perf_counter() - began) * 1e3, 1), selected=len(page.selection),
           worst_stall_ms=stalls.take())
    grid = page.selection_grid

    def grid_drawn() -> bool:
        rows, model = visible_rows(grid.view), grid.model
        return bool(rows) and all(model.requests._drawn.get(model.path(r)) is not None
                                  or model.requests.reason(model.path(r)) is not None
                                  for r in rows)

    began = time.perf_counter()
    try:
        wait_until(grid_drawn, timeout=60)
        report("explore", "selection grid: its first screen of thumbnails",
               seconds=round(time.perf_counter() - began, 2), rows=grid.count(),
               worst_stall_ms=stalls.take())
    except TimeoutError:
        report("explore", "selection grid: its first screen of thumbnails",
               seconds="over 60", rows=grid.count(), worst_stall_ms=stalls.take())

    neighbours: list[int] = []
    page.neighbours_shown.connect(lambda: neighbours.append(1))
    stalls.reset()
    began = time.perf_counter()
    page.show_neighbours(int(len(data) // 2))
    wait_until(lambda: bool(neighbours), timeout=300)
    report("explore", "a click's neighbours (first query: embeddings read, index built)",
           seconds=round(time.perf_counter() - began, 2), worst_stall_ms=stalls.take())
    neighbours.clear()
    stalls.reset()
    began = time.perf_counter()
    page.show_neighbours(7)
    wait_until(lambda: bool(neighbours), timeout=60)
    report("explore", "another click's neighbours",
           ms=round((time.perf_counter() - began) * 1e3, 1), worst_stall_ms=stalls.take())
    figures["explore"]["memory after the Explore page (GB)"] = memory()
    print(f"  memory: {memory()}")
    page.cancel(quiet=True)
    page.thumbnails.wait()


# --- main ---------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-app-100k"))
    parser.add_argument("--stages", nargs="+", default=["data", "explore"],
                        choices=["data", "explore"])
    parser.add_argument("--out", type=Path, default=RESULTS, help="the JSON file written")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    folder, run_dir = build_inputs(args.work, args.images)
    figures["inputs"] = {"memory after building (GB)": memory()}

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow

    application = QApplication.instance() or QApplication(sys.argv[:1])
    global STALLS
    stalls = STALLS = Stalls()
    # The app's window (its other pages listen to a scan and a run's choice), with its own
    # settings and runs folder under --work, the user's left alone.
    settings = QSettings(str(args.work / "settings.ini"), QSettings.IniFormat)
    window = MainWindow(args.work / "runs", cache_dir=args.work / "cache", settings=settings)
    window.resize(1600, 1000)
    window.show()
    pump(0.3)
    gc.collect()  # as app.main does: the start-up heap out of the collector's full passes
    gc.freeze()
    print(f"{machine()}; Qt platform {os.environ.get('QT_QPA_PLATFORM', 'default')}; "
          f"{args.images:,} images in {CLASSES} classes; load "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    if "data" in args.stages:
        bench_data_page(window, folder, run_dir, stalls)
    if "explore" in args.stages:
        bench_explore_page(window, run_dir, stalls)
    figures["machine"] = {"cpu": machine(), "load_after": [round(v, 2) for v in
                                                           os.getloadavg()],
                          "images": args.images, "date": time.strftime("%Y-%m-%d %H:%M")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    print(f"peak memory (VmHWM) {memory()['VmHWM']:.2f} GB; written to {args.out}")
    window.data_page.shutdown()
    window.augment_page.close()
    window.explore_page.cancel(quiet=True)
    del application
    return 0


if __name__ == "__main__":
    sys.exit(main())
