"""The Linux desktop entry and AppStream metadata agree with the app and pass the
freedesktop validators (Debian's desktop-file-utils and appstream; skipped without them)."""

import configparser
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINUX = ROOT / "packaging" / "linux"
DESKTOP = LINUX / "contrastive-explorer.desktop"
METAINFO = LINUX / "io.github.contrastive_explorer.metainfo.xml"


def test_desktop_entry_names_the_icon_and_the_command():
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str
    entry.read(DESKTOP, encoding="utf-8")
    main = entry["Desktop Entry"]
    assert main["Icon"] == "contrastive-explorer"  # app.icon.ICON_NAME, the hicolor name
    assert main["Exec"].split()[0] == "contrastive-explorer"
    assert {"Education", "Science", "Graphics"} <= set(main["Categories"].split(";"))
    # Wayland matches windows to QGuiApplication.desktopFileName (set in app.main)
    assert DESKTOP.stem == "contrastive-explorer"


def test_metainfo_launches_the_desktop_entry_and_shows_screenshots_that_exist():
    root = ET.parse(METAINFO).getroot()
    assert root.findtext("launchable") == DESKTOP.name
    assert METAINFO.name == root.findtext("id") + ".metainfo.xml"
    images = [e.text for e in root.iter("image")]
    assert images
    for url in images:
        assert (ROOT / url.split("/main/", 1)[1]).is_file(), url
    assert {c.text for c in root.iter("category")} == {"Education", "Science", "Graphics"}


@pytest.mark.skipif(not shutil.which("desktop-file-validate"),
                    reason="desktop-file-validate not installed (Debian: desktop-file-utils)")
def test_desktop_entry_is_valid():
    done = subprocess.run(["desktop-file-validate", str(DESKTOP)], capture_output=True,
                          text=True)
    assert done.returncode == 0 and "error" not in done.stdout, done.stdout


@pytest.mark.skipif(not shutil.which("appstreamcli"),
                    reason="appstreamcli not installed (Debian: appstream)")
def test_metainfo_is_valid():
    done = subprocess.run(["appstreamcli", "validate", "--no-net", str(METAINFO)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
