"""The app's look: Qt's Fusion style with a light or dark palette that follows the
desktop's colour scheme, the style sheet from assets/, and matching plot colours.

Pages mark widgets with properties the style sheet knows (``role`` = heading, metric,
error or ok on labels; ``invalid`` on setting fields) instead of setting colours in code.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QWidget


@dataclass(frozen=True)
class Colours:
    window: str
    base: str
    text: str
    border: str
    tooltip: str
    accent: str
    highlight: str
    highlighted_text: str
    error: str
    ok: str
    plot_background: str
    plot_foreground: str


LIGHT = Colours(window="#f3f3f3", base="#ffffff", text="#1d1d1d", border="#c8c8c8",
                tooltip="#ffffe8", accent="#2f6fd0", highlight="#cfe0fa",
                highlighted_text="#1d1d1d", error="#c62828", ok="#2e7d32",
                plot_background="#ffffff", plot_foreground="#303030")
DARK = Colours(window="#232629", base="#1b1d20", text="#e4e4e4", border="#43474d",
               tooltip="#2d3136", accent="#5b9cf0", highlight="#2f4a70",
               highlighted_text="#ffffff", error="#ef6b6b", ok="#7bc67e",
               plot_background="#1b1d20", plot_foreground="#d0d0d0")


def is_dark(app: QGuiApplication | None = None) -> bool:
    """Whether the desktop asks for a dark scheme (Qt 6.5+ reports it; else light)."""
    app = app or QGuiApplication.instance()
    hints = app.styleHints() if app is not None else None
    scheme = getattr(hints, "colorScheme", None)
    return scheme is not None and scheme() == Qt.ColorScheme.Dark


def style_sheet(colours: Colours) -> str:
    text = resources.files("app.assets").joinpath("style/app.qss").read_text(encoding="utf-8")
    for name, value in vars(colours).items():
        text = text.replace("{" + name + "}", value)
    return text


def palette(colours: Colours) -> QPalette:
    p = QPalette()
    roles = {QPalette.Window: colours.window, QPalette.Base: colours.base,
             QPalette.AlternateBase: colours.window, QPalette.Text: colours.text,
             QPalette.WindowText: colours.text, QPalette.Button: colours.window,
             QPalette.ButtonText: colours.text, QPalette.ToolTipBase: colours.tooltip,
             QPalette.ToolTipText: colours.text, QPalette.Highlight: colours.accent,
             QPalette.HighlightedText: "#ffffff", QPalette.Link: colours.accent,
             QPalette.PlaceholderText: "#8a8a8a"}
    for role, value in roles.items():
        p.setColor(role, QColor(value))
    for role in (QPalette.Text, QPalette.WindowText, QPalette.ButtonText):
        p.setColor(QPalette.Disabled, role, QColor("#8a8a8a"))
    return p


def apply_style(app: QApplication, dark: bool | None = None) -> Colours:
    """Style ``app`` before its windows are made (plots take their colours when they are
    created). With ``dark=None`` the desktop's scheme decides, and a later change of it
    restyles the widgets; plots made before keep their colours until the next launch."""
    colours = DARK if (is_dark(app) if dark is None else dark) else LIGHT
    app.setStyle("Fusion")
    app.setPalette(palette(colours))
    app.setStyleSheet(style_sheet(colours))
    # No antialiasing: it makes each repaint of a live plot several times slower.
    pg.setConfigOptions(background=colours.plot_background,
                        foreground=colours.plot_foreground, antialias=False)
    hints = app.styleHints()
    if dark is None and hasattr(hints, "colorSchemeChanged") and not getattr(
            app, "_follows_scheme", False):
        hints.colorSchemeChanged.connect(lambda _scheme: apply_style(app))
        app._follows_scheme = True  # connect once
    return colours


def set_role(widget: QWidget, role: str) -> None:
    """Mark a label as heading / metric / error / ok ("" for none) for the style sheet."""
    set_style_property(widget, "role", role)


def set_invalid(widget: QWidget, invalid: bool) -> None:
    """Mark a setting field as holding a value the engine refuses (a red border)."""
    set_style_property(widget, "invalid", "true" if invalid else "false")


def set_style_property(widget: QWidget, name: str, value: str) -> None:
    if widget.property(name) == value:
        return
    widget.setProperty(name, value)
    widget.style().unpolish(widget)  # style sheets read properties when a widget is polished
    widget.style().polish(widget)
