"""How the Explore page's map copes with 100,000 points: the time of each change the page
makes (a new map, a new colouring, showing a selection, a lasso's selection) and the
longest stall of the GUI event loop while the mouse hovers over the points, pans the map
and draws a lasso.

The map is synthetic: --points clustered 2-D coordinates in 10 classes with paths in
train/ and test/ sub-folders (no image files are needed). Mouse input is real Qt mouse and
wheel events sent to the plot's viewport, a move every --move-ms; a timer asks to be called
every 5 ms and each gap beyond that is a stall, as in bench_gui.py.

Target: no stall over 50 ms.

Run:  QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_map.py
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

TICK_MS = 5


def synthetic_map(n: int, seed: int = 0):
    """A MapData of ``n`` points in 10 Gaussian clusters (one class each), with fake paths."""
    from app.model.explore_data import MapData

    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (10, 2))
    labels = rng.integers(0, 10, n)
    coords = (centres[labels] + rng.normal(0, 1.5, (n, 2))).astype(np.float32)
    split = np.where(rng.random(n) < 0.8, "train", "test")
    paths = [f"{s}/class{c}/img{i:06d}.png" for i, (s, c) in enumerate(zip(split, labels))]
    return MapData(coords, paths, labels.astype(np.int64), [f"class{c}" for c in range(10)],
                   "/data/folder", "last", "h", "umap")


def timed(action: Callable[[], object], repeats: int = 3) -> float:
    """The median wall time of ``action`` in ms."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def lasso_around(data, target: int) -> np.ndarray:
    """A wobbly (concave) polygon of ~600 vertices around a cluster centre holding about
    ``target`` points."""
    centre = np.median(data.coords[data.labels == 0], axis=0)
    distance = np.linalg.norm(data.coords - centre, axis=1)
    radius = float(np.sort(distance)[target])
    angles = np.linspace(0, 2 * np.pi, 600, endpoint=False)
    r = radius * (1 + 0.15 * np.sin(7 * angles))
    r *= radius / np.sqrt(np.mean(r ** 2))  # about the same area as the circle
    return np.stack([centre[0] + r * np.cos(angles), centre[1] + r * np.sin(angles)], 1)


def stalls(steps: list[Callable[[], None]], step_ms: int) -> dict:
    """Run ``steps`` one per ``step_ms`` on the event loop; the stalls of a 5 ms timer."""
    from PySide6.QtCore import QElapsedTimer, QEventLoop, Qt, QTimer

    loop = QEventLoop()  # not app.exec(): quitting the application closes its windows
    gaps: list[float] = []
    clock = QElapsedTimer()
    tick = QTimer()
    tick.setInterval(TICK_MS)
    tick.setTimerType(Qt.PreciseTimer)
    tick.timeout.connect(lambda: (gaps.append(clock.nsecsElapsed() / 1e6), clock.restart()))
    queue = list(steps)
    driver = QTimer()
    driver.setInterval(step_ms)

    def step() -> None:
        if queue:
            queue.pop(0)()
        else:
            driver.stop()
            QTimer.singleShot(100, loop.quit)  # let the last repaint land

    driver.timeout.connect(step)
    clock.start()
    tick.start()
    driver.start()
    loop.exec()
    tick.stop()
    over = sorted(max(0.0, g - TICK_MS) for g in gaps)
    return {"ticks": len(gaps), "max": over[-1], "p99": over[int(0.99 * (len(over) - 1))],
            "median": statistics.median(over), "over_50ms": sum(s > 50 for s in over)}


def mouse(widget, kind, pos, button, buttons, modifiers):
    from PySide6.QtCore import QPointF
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    point = QPointF(pos)
    QApplication.sendEvent(widget, QMouseEvent(kind, point, widget.mapToGlobal(point),
                                               button, buttons, modifiers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--moves", type=int, default=300)
    parser.add_argument("--move-ms", type=int, default=10)
    args = parser.parse_args()

    from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    from app.model.map_regions import points_in_polygon
    from app.widgets.map_colours import by_score, by_subfolder
    from app.widgets.map_items import LASSO, PAN
    from app.widgets.map_view import MapView

    app = QApplication.instance() or QApplication([])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Qt platform {os.environ.get('QT_QPA_PLATFORM', 'default')}, "
          f"{args.points:,} points")
    data = synthetic_map(args.points)
    view = MapView()
    view.resize(1000, 800)
    view.show()
    app.processEvents()

    print(f"set_map, a first map: {timed(lambda: view.set_map(data), repeats=1):.0f} ms")
    print(f"set_map, a new map of the same images (UMAP after PCA): "
          f"{timed(lambda: view.set_map(data)):.0f} ms")
    viewport = view.plot.viewport()
    print(f"full repaint: {timed(lambda: (view.scatter.update(), viewport.repaint())):.0f} ms")
    folders = by_subfolder(data)
    score = by_score("score", np.where(np.arange(len(data)) % 10 == 0, np.nan,
                                       data.coords[:, 0]))
    print(f"by_subfolder (build the colouring): {timed(lambda: by_subfolder(data)):.0f} ms")
    print(f"set_colouring, sub-folder: {timed(lambda: view.set_colouring(folders)):.0f} ms")
    print(f"set_colouring, score: {timed(lambda: view.set_colouring(score)):.0f} ms")
    half = np.random.default_rng(1).choice(len(data), len(data) // 2, replace=False)
    print(f"set_selection of {len(half):,}: "
          f"{timed(lambda: (view.set_selection(half), view.set_selection([]))) / 2:.0f} ms")
    polygon = lasso_around(data, 30_000)
    inside = points_in_polygon(data.coords, polygon)
    print(f"lasso selection ({len(polygon)} vertices, {len(inside):,} points inside): "
          f"{timed(lambda: points_in_polygon(data.coords, polygon), repeats=5):.1f} ms")
    print(f"a lasso's release (selection computed, combined, shown): "
          f"{timed(lambda: view.view_box.region_selected.emit(polygon, 'replace')):.0f} ms")
    view.selection.clear()
    app.processEvents()

    # a spiral of mouse positions (viewport pixels) out from the middle of the map
    rect = viewport.rect()
    cx, cy = rect.width() // 2, rect.height() // 2
    t = np.linspace(0, 4 * np.pi, args.moves)
    path = [QPoint(int(cx + 0.35 * rect.width() * np.cos(a) * (0.3 + 0.7 * a / t[-1])),
                   int(cy + 0.35 * rect.height() * np.sin(a) * (0.3 + 0.7 * a / t[-1])))
            for a in t]
    hovered = []
    view.point_hovered.connect(hovered.append)
    none, left = Qt.NoButton, Qt.LeftButton
    no_mod = Qt.NoModifier
    moves = [lambda p=p: mouse(viewport, QEvent.MouseMove, p, none, none, no_mod)
             for p in path]
    result = stalls(moves, args.move_ms)
    print(f"hover, {len(moves)} moves ({sum(i >= 0 for i in hovered)} points hovered): max "
          f"{result['max']:.1f} ms, p99 {result['p99']:.1f} ms, median "
          f"{result['median']:.2f} ms, {result['over_50ms']} over 50 ms")

    def drag(modifiers) -> list[Callable[[], None]]:
        steps = [lambda: mouse(viewport, QEvent.MouseButtonPress, path[0], left, left,
                               modifiers)]
        steps += [lambda p=p: mouse(viewport, QEvent.MouseMove, p, none, left, modifiers)
                  for p in path[1:]]
        steps.append(lambda: mouse(viewport, QEvent.MouseButtonRelease, path[-1], left,
                                   none, modifiers))
        return steps

    view.set_tool(PAN)
    result = stalls(drag(no_mod), args.move_ms)
    print(f"pan, a drag of {len(path)} moves: max {result['max']:.1f} ms, p99 "
          f"{result['p99']:.1f} ms, median {result['median']:.2f} ms, "
          f"{result['over_50ms']} over 50 ms")
    view.plot.autoRange()
    app.processEvents()
    middle = QPointF(rect.width() / 2, rect.height() / 2)
    ranges = []

    def wheel(delta: int) -> None:
        QApplication.sendEvent(viewport, QWheelEvent(
            middle, viewport.mapToGlobal(middle), QPoint(), QPoint(0, delta), Qt.NoButton,
            Qt.NoModifier, Qt.NoScrollPhase, False))
        ranges.append(view.view_box.viewRange()[0][1] - view.view_box.viewRange()[0][0])

    result = stalls([lambda d=d: wheel(d) for d in [120] * 5 + [-120] * 5], 60)
    print(f"zoom, 10 wheel steps (each redraws every point; width "
          f"{' '.join(f'{w:.1f}' for w in ranges)}): max {result['max']:.1f} ms, p99 "
          f"{result['p99']:.1f} ms, median {result['median']:.2f} ms, "
          f"{result['over_50ms']} over 50 ms")
    view.plot.autoRange()
    app.processEvents()
    view.set_tool(LASSO)
    made = []
    view.selection_made.connect(lambda indices, mode: made.append(len(indices)))
    result = stalls(drag(no_mod), args.move_ms)
    print(f"lasso, a drag of {len(path)} moves then the selection ({made[-1] if made else 0:,}"
          f" points): max {result['max']:.1f} ms, p99 {result['p99']:.1f} ms, median "
          f"{result['median']:.2f} ms, {result['over_50ms']} over 50 ms")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
