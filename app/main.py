"""``contrastive-explorer``: open the main window."""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="contrastive-explorer",
                                     description="Learn and explore contrastive image "
                                     "representations on your own images.")
    parser.add_argument("folder", nargs="?", help="an image folder to open")
    parser.add_argument("--demo", action="store_true", help="open the built-in demo dataset "
                        "(1,797 labelled handwritten digits)")
    parser.add_argument("--runs-root", metavar="DIR", help="the folder of runs")
    parser.add_argument("--theme", choices=("auto", "light", "dark"), default="auto",
                        help="colour scheme (default: follow the desktop)")
    return parser


def create_window(args: argparse.Namespace) -> tuple[Any, Any]:
    """The QApplication and the main window for parsed arguments, not yet shown."""
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow
    from app.style import apply_style
    from engine.paths import default_runs_root

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Contrastive Explorer")
    apply_style(app, dark=None if args.theme == "auto" else args.theme == "dark")
    window = MainWindow(Path(args.runs_root) if args.runs_root else default_runs_root())
    if args.demo:
        from engine.data.demo import DEMO_SETTINGS, demo_dataset

        window.open_folder(demo_dataset())
        window.apply_settings(DEMO_SETTINGS)
    elif args.folder:
        window.open_folder(Path(args.folder))
    # The start-up heap (torch, Qt wrappers, pyqtgraph) lives as long as the window: keep it
    # out of the garbage collector's full passes, which otherwise stall the event loop for
    # 70-180 ms every few seconds while a run's events arrive (benchmarks/bench_gui.py).
    gc.collect()
    gc.freeze()
    return app, window


def install_error_reporter(window: Any) -> Any:
    """Report exceptions that nothing caught (in slots, timers, worker threads) in a message
    box over ``window`` and in ``errors.log`` of the app's data folder, instead of losing
    them on a terminal nobody sees; the app goes on."""
    from app.error_report import ErrorReporter
    from engine.paths import user_data_dir

    return ErrorReporter(user_data_dir() / "errors.log", window).install()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    app, window = create_window(args)
    window.error_reporter = install_error_reporter(window)
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
