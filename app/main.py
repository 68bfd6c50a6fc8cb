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

    from app.icon import DESKTOP_FILE_NAME, app_icon
    from app.main_window import MainWindow
    from app.style import apply_style
    from engine.config.locations import default_runs_root

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Contrastive Explorer")
    app.setDesktopFileName(DESKTOP_FILE_NAME)
    app.setWindowIcon(app_icon())
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
    from app.dialogs.error_report import ErrorReporter
    from engine.config.locations import user_data_dir

    return ErrorReporter(user_data_dir() / "errors.log", window).install()


def close_on_terminal_signals(window: Any) -> Any:
    """Ctrl-C in the terminal (SIGINT) or SIGTERM closes the window as its close button
    would: with a run training, it asks whether to stop the run (with a checkpoint) or leave
    it going. Training children run in sessions of their own, so these signals reach the
    app, not them. Returns the timer that lets Python see the signals while Qt waits."""
    import signal

    from PySide6.QtCore import QTimer

    def close(_signum: int, _frame: Any) -> None:
        QTimer.singleShot(0, window.close)

    signal.signal(signal.SIGINT, close)
    signal.signal(signal.SIGTERM, close)
    # Python runs signal handlers only between bytecodes; Qt's event loop is C++, so a
    # timer hands control to Python a few times a second.
    timer = QTimer(window)
    timer.timeout.connect(lambda: None)
    timer.start(250)
    return timer


#: First argument that turns this executable into the engine (see ``main``).
ENGINE_FLAG = "--engine"


def main(argv: Sequence[str] | None = None) -> int:
    """Open the window; or, with ``--engine`` first, run the engine CLI in this process
    (``contrastive-explorer --engine train ...`` is ``contrastive-engine train ...``) and
    return its exit status. The worker mode lets a frozen bundle, which has no Python
    interpreter to run ``-m engine`` with, start its own training child
    (app.child.engine_process.engine_command)."""
    import multiprocessing

    multiprocessing.freeze_support()  # a frozen bundle's multiprocessing children stop here
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [ENGINE_FLAG]:
        from engine.cli.main import main as engine_main

        return engine_main(argv[1:])
    args = build_parser().parse_args(argv)
    app, window = create_window(args)
    window.error_reporter = install_error_reporter(window)
    window.signal_timer = close_on_terminal_signals(window)
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
