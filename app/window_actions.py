"""The main window's actions: its menus, its toolbar and their shortcuts (each action is made
once and used in both), and which of them can be used while a run trains or is followed."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence

from app.pages.train_page import STOP_ELSEWHERE_TIP, STOP_TIP

if TYPE_CHECKING:
    from app.main_window import MainWindow

#: The actions on the toolbar, in order.
TOOLBAR = ("open", "start", "stop", "export")


def build_actions(window: MainWindow) -> dict[str, QAction]:
    """Make the File, Run and View menus and the toolbar of ``window``; returns the actions
    by name ("open", "quit", "start", "stop", "resume", "unfollow", "export", "refresh",
    "page0", "page1", ...)."""
    actions: dict[str, QAction] = {}

    def action(key: str, text: str, slot: Callable, shortcut=None, tip: str = "") -> QAction:
        made = QAction(text, window)
        if shortcut is not None:
            made.setShortcut(QKeySequence(shortcut))
        made.setToolTip(tip or text.replace("&", "").rstrip("…"))
        made.setStatusTip(made.toolTip())
        made.triggered.connect(slot)
        actions[key] = made
        return made

    file_menu = window.menuBar().addMenu("&File")
    file_menu.addAction(action("open", "&Open image folder…", window.choose_folder,
                               QKeySequence.Open, "Open a folder of images (Ctrl+O); "
                               "class sub-folders give labels"))
    file_menu.addSeparator()
    file_menu.addAction(action("quit", "&Quit", window.close, QKeySequence.Quit))
    run_menu = window.menuBar().addMenu("&Run")
    page = window.train_page
    for key, text, slot, keys, tip in [
            ("start", "&Start training", page.start, "Ctrl+Return",
             "Start a new run with the Train page's settings (Ctrl+Return)"),
            ("stop", "S&top (checkpoint)", page.stop, "Ctrl+.",
             "Save a checkpoint and stop the run (Ctrl+.)"),
            ("resume", "&Resume", page.resume, None, "Continue the stopped run"),
            ("unfollow", "Stop f&ollowing", page.stop_following, None,
             "Stop showing the run trained by another process on the Train page (it "
             "goes on where it runs)"),
            ("export", "&Export encoder or embeddings…", window.open_export_dialog,
             "Ctrl+E", "Export the selected run's encoder or embeddings (Ctrl+E)"),
            ("refresh", "Re&fresh runs", window.refresh_runs, QKeySequence.Refresh, "")]:
        run_menu.addAction(action(key, text, slot, keys, tip))
    view_menu = window.menuBar().addMenu("&View")
    tabs = window.tabs
    for i in range(tabs.count()):
        view_menu.addAction(action(
            f"page{i}", tabs.tabText(i), lambda _=False, i=i: tabs.setCurrentIndex(i),
            f"Ctrl+{i + 1}", f"Show the {tabs.tabText(i)} page (Ctrl+{i + 1})"))
    toolbar = window.addToolBar("Main")
    toolbar.setObjectName("main-toolbar")  # saveState needs a name
    toolbar.setMovable(False)
    toolbar.setToolButtonStyle(Qt.ToolButtonTextOnly)
    for key in TOOLBAR:
        toolbar.addAction(actions[key])
    return actions


def update_actions(actions: dict[str, QAction], *, running: bool, following: bool) -> None:
    """Start only when nothing trains or is followed; Stop only for this window's run (a
    followed run is stopped where it runs, as the tooltip says)."""
    actions["start"].setEnabled(not running and not following)
    actions["stop"].setEnabled(running)
    actions["stop"].setToolTip(STOP_ELSEWHERE_TIP if following else f"{STOP_TIP} (Ctrl+.)")
    actions["unfollow"].setEnabled(following)
