"""The engine is usable with no GUI toolkit: importing all of it loads no Qt."""

import pkgutil
import subprocess
import sys

import engine


def test_engine_imports_no_qt_or_app():
    modules = [m.name for m in pkgutil.walk_packages(engine.__path__, "engine.")
               if m.name != "engine.__main__"]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('PySide6', 'PyQt5', 'PyQt6', 'pyqtgraph', 'app'))\n"
        "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert len(modules) > 10
    assert out.stdout.strip() == ""
