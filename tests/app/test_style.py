"""The style sheet ships as a package resource and every colour placeholder is filled."""

import re
from pathlib import Path

import pytest

pytest.importorskip("PySide6")

from app.style import DARK, LIGHT, apply_style, style_sheet

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("colours", [LIGHT, DARK])
def test_style_sheet_has_every_colour_filled(colours):
    text = style_sheet(colours)
    body = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    assert not re.findall(r"\{[a-z_]+\}", body)
    assert colours.accent in body and colours.error in body


def test_apply_style_sets_palette_and_plot_colours(qapp):
    import pyqtgraph as pg
    from PySide6.QtGui import QPalette

    try:
        apply_style(qapp, dark=True)
        assert qapp.palette().color(QPalette.Window).name() == DARK.window
        assert pg.getConfigOption("background") == DARK.plot_background
        apply_style(qapp, dark=False)
        assert qapp.palette().color(QPalette.Base).name() == LIGHT.base
    finally:
        qapp.setStyleSheet("")


def test_every_python_package_is_listed_for_installation():
    """pyproject lists packages by name (assets/ is mapped to app.assets), so a new
    sub-package must be added there or it would be missing from the wheel."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for top in ("engine", "app")
             for p in (ROOT / top).rglob("__init__.py")}
    assert found | {"app.assets"} == listed
