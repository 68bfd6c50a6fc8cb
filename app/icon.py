"""The app's icon, from the PNGs rendered out of assets/icons/contrastive-explorer.svg
(packaging/make_icons.py), found through importlib.resources like the style sheet.

The PNGs are read as bytes, so the icon loads from a source checkout, an installed wheel
and a frozen bundle alike, with or without a file system path behind the package.
"""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable

#: The icon's name: the .desktop file, the AppStream launchable and the hicolor theme use it.
ICON_NAME = "contrastive-explorer"
#: Desktop file name that Wayland compositors match windows to (without ".desktop").
DESKTOP_FILE_NAME = "contrastive-explorer"
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


def icon_file(size: int) -> Traversable:
    """The packaged PNG of the icon at ``size`` x ``size`` pixels."""
    return resources.files("app.assets").joinpath(
        f"icons/hicolor/{size}x{size}/apps/{ICON_NAME}.png")


def svg_file() -> Traversable:
    """The icon's vector source."""
    return resources.files("app.assets").joinpath(f"icons/{ICON_NAME}.svg")


def app_icon():
    """A QIcon holding every packaged size (empty if none is found)."""
    from PySide6.QtGui import QIcon, QPixmap

    icon = QIcon()
    for size in SIZES:
        path = icon_file(size)
        if not path.is_file():
            continue
        pixmap = QPixmap()
        if pixmap.loadFromData(path.read_bytes(), "PNG"):
            icon.addPixmap(pixmap)
    return icon
