"""How responsive the desktop app is: time from launch to the first painted window, and
the longest stall of the GUI event loop while a run trains and its curves update.

a) Launch to first paint, in fresh processes (median of --launches): the time from the
   child process's start (as seen by this process, so the interpreter's own start-up and
   every import count) to the first Paint event of the main window, opened on the demo
   dataset as `contrastive-explorer --demo` opens it.
b) Event-loop stalls: the real window on the demo dataset, the Train page showing, a run
   with the demo settings training in its engine child. A timer asks to be called every
   5 ms; each gap beyond that is time the event loop could not answer (a stall). Measured
   over --seconds after the first step event arrives, with the curves redrawing live.

Target: no stall over 50 ms.

Run:  QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_gui.py
      (or under Xvfb with QT_QPA_PLATFORM=xcb to include the X server's painting)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TICK_MS = 5


def first_paint_child(runs_root: str) -> None:
    """Open the window as the app does and print when its first Paint event arrives."""
    from PySide6.QtCore import QEvent, QObject

    from app.main import build_parser, create_window

    app, window = create_window(build_parser().parse_args(["--demo", "--runs-root",
                                                           runs_root]))

    class FirstPaint(QObject):
        def eventFilter(self, obj, event):
            if event.type() == QEvent.Paint and obj is window:
                print(f"first-paint {time.time():.6f}", flush=True)
                app.exit(0)
            return False

    watcher = FirstPaint()
    window.installEventFilter(watcher)
    window.show()
    app.exec()
    window.data_page.shutdown()
    window.augment_page.close()


def launch_to_first_paint(launches: int, runs_root: str) -> list[float]:
    times = []
    for _ in range(launches):
        started = time.time()
        out = subprocess.run([sys.executable, __file__, "--child-first-paint", runs_root],
                             capture_output=True, text=True, timeout=300)
        line = next((x for x in out.stdout.splitlines() if x.startswith("first-paint")), None)
        if line is None:
            raise RuntimeError(f"the window did not paint:\n{out.stderr[-2000:]}")
        times.append(float(line.split()[1]) - started)
    return times


def stalls_while_training(seconds: float, runs_root: str) -> dict:
    from PySide6.QtCore import QElapsedTimer, Qt, QTimer

    from app.main import build_parser, create_window

    app, window = create_window(build_parser().parse_args(["--demo", "--runs-root",
                                                           runs_root]))
    window.show()
    page = window.train_page
    window.tabs.setCurrentWidget(page)
    gaps: list[float] = []
    clock = QElapsedTimer()
    state = {"measuring": False, "steps": 0, "first_step": None}
    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.setTimerType(Qt.PreciseTimer)

    def tick() -> None:
        if state["measuring"]:
            gaps.append(clock.nsecsElapsed() / 1e6)
        clock.restart()

    def on_event(event: dict) -> None:
        if event.get("type") != "step":
            return
        state["steps"] += 1
        if state["first_step"] is None:
            state["first_step"] = time.monotonic()
            state["measuring"] = True
            clock.restart()
            QTimer.singleShot(int(seconds * 1000), lambda: app.exit(0))

    timer.timeout.connect(tick)
    page.engine.event.connect(on_event)
    timer.start()
    page.start()
    QTimer.singleShot(int((seconds + 180) * 1000), lambda: app.exit(0))  # no step: give up
    app.exec()
    steps = state["steps"]
    page.engine.kill()
    page.engine.wait(30_000)
    window.data_page.shutdown()
    window.augment_page.close()
    if not gaps:
        raise RuntimeError("no step event arrived; see the engine log:\n"
                           + "\n".join(page.engine.log_tail))
    stalls = sorted(max(0.0, g - TICK_MS) for g in gaps)
    return {"ticks": len(gaps), "steps": steps, "max": stalls[-1],
            "p99": stalls[int(0.99 * (len(stalls) - 1))],
            "median": statistics.median(stalls), "over_50ms": sum(s > 50 for s in stalls)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--launches", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--child-first-paint", metavar="RUNS_ROOT")
    args = parser.parse_args()
    if args.child_first_paint:
        first_paint_child(args.child_first_paint)
        return
    platform_name = os.environ.get("QT_QPA_PLATFORM", "default")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Qt platform {platform_name}")
    with tempfile.TemporaryDirectory() as runs_root:
        times = launch_to_first_paint(args.launches, runs_root)
        print(f"launch to first paint: median {statistics.median(times):.2f} s "
              f"(min {min(times):.2f}, max {max(times):.2f}, {len(times)} launches)")
        result = stalls_while_training(args.seconds, runs_root)
    print(f"event-loop stalls over {args.seconds:.0f} s of training ({result['steps']} step "
          f"events, {result['ticks']} timer ticks of {TICK_MS} ms): max {result['max']:.1f} ms, "
          f"p99 {result['p99']:.1f} ms, median {result['median']:.2f} ms, "
          f"{result['over_50ms']} over 50 ms")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
