"""The app's icon ships as package data, and the executable doubles as the engine
(``contrastive-explorer --engine ...``), which a frozen bundle uses for its training child."""

import fnmatch
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("PySide6")

from app.child import engine_process
from app.child.engine_process import EngineProcess
from app.icon import ICON_NAME, SIZES, app_icon, icon_file, svg_file
from app.main import main

ROOT = Path(__file__).resolve().parents[2]


def test_every_icon_size_is_found_as_package_data():
    from PySide6.QtGui import QImage

    assert svg_file().is_file() and b"<svg" in svg_file().read_bytes()
    for size in SIZES:
        image = QImage.fromData(icon_file(size).read_bytes(), "PNG")
        assert (image.width(), image.height()) == (size, size)
        assert image.hasAlphaChannel()


def test_app_icon_holds_every_size(qapp):
    icon = app_icon()
    assert not icon.isNull()
    assert {s.width() for s in icon.availableSizes()} == set(SIZES)


def test_pyproject_package_data_takes_the_icons_and_style():
    """Every icon and style file under assets/ matches a package-data pattern of app.assets,
    so the wheel carries it (tests/packaging/test_wheel.py checks a built wheel)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["app.assets"]
    assets = ROOT / "assets"
    files = [p.relative_to(assets).as_posix() for top in ("icons", "style")
             for p in (assets / top).rglob("*") if p.is_file()]
    assert f"icons/{ICON_NAME}.svg" in files and "icons/hicolor/512x512/apps/" \
        f"{ICON_NAME}.png" in files
    # setuptools matches each pattern against the path relative to the package; "*" does
    # not cross a "/" there, as fnmatch's does, so compare part by part.
    def matches(path: str, pattern: str) -> bool:
        parts, pparts = path.split("/"), pattern.split("/")
        return len(parts) == len(pparts) and all(fnmatch.fnmatchcase(a, b)
                                                 for a, b in zip(parts, pparts))
    missing = [f for f in files if not any(matches(f, p) for p in patterns)]
    assert not missing


def test_engine_worker_mode_runs_the_engine_cli(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--engine", "train", "--help"])
    assert exit_info.value.code == 0
    assert "--epochs" in capsys.readouterr().out


def test_engine_worker_mode_as_a_process():
    done = subprocess.run([sys.executable, "-m", "app", "--engine", "train", "--help"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--batch-size" in done.stdout


def test_engine_command_in_a_frozen_bundle_is_the_app_itself(monkeypatch):
    assert engine_process.engine_command() == (sys.executable, ["-m", "engine"])
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", "/opt/contrastive-explorer/contrastive-explorer")
    assert engine_process.engine_command() == (
        "/opt/contrastive-explorer/contrastive-explorer", ["--engine"])


def test_a_frozen_child_starts_through_the_worker_mode(qtbot, monkeypatch, tmp_path):
    """EngineProcess in a 'frozen' app starts ``<executable> --engine <verb ...>``: here the
    executable is a script standing in for the bundle's binary."""
    exe = tmp_path / "contrastive-explorer"
    exe.write_text(f"#!/bin/sh\ncd '{ROOT}' && exec '{sys.executable}' -m app \"$@\"\n")
    exe.chmod(0o755)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(exe))
    child = EngineProcess()
    printed = []  # the engine's help on stdout: not events, so reported as malformed
    child.malformed.connect(printed.append)
    with qtbot.waitSignal(child.ended, timeout=120_000) as ended:
        child.start(["--help"])
    status, code, _ = ended.args
    assert (status, code) == ("finished", 0)
    assert any("contrastive-engine" in line or "usage" in line for line in printed)
