"""The wheel and the sdist build, carry the app's assets, and install into a fresh virtual
environment whose console scripts start and train.

Offline by design: the build runs without isolation (setuptools from this environment, no
download), and the fresh venv gets only the wheel (``pip install --no-deps``); its
dependencies (torch is 5.5 GB with CUDA) come from this environment's site-packages through
a .pth file, which adds that folder to sys.path without running its .pth files, so this
checkout's editable install stays out and ``app``/``engine`` come from the wheel.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import venv
import zipfile
from pathlib import Path

import pytest

from tests.helpers.folders import make_folder

ROOT = Path(__file__).resolve().parents[2]
#: What the source tree contributes to the distributions (pyproject.toml decides the rest).
SOURCES = ("pyproject.toml", "README.md", "engine", "app", "assets")
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)

pytestmark = pytest.mark.slow


def run(cmd, **kwargs):
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """(wheel, sdist) built from a copy of the sources, so the checkout gets no build/ or
    egg-info."""
    pytest.importorskip("build")
    tmp = tmp_path_factory.mktemp("dist")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", tmp / "out", src],
        timeout=600)
    wheel, = (tmp / "out").glob("*.whl")
    sdist, = (tmp / "out").glob("*.tar.gz")
    return wheel, sdist


def test_wheel_and_sdist_carry_the_assets(dists):
    wheel, sdist = dists
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"app/assets/style/app.qss", "app/assets/icons/contrastive-explorer.svg",
                "app/assets/__init__.py", "app/main.py", "engine/cli.py"}
    expected |= {f"app/assets/icons/hicolor/{n}x{n}/apps/contrastive-explorer.png"
                 for n in ICON_SIZES}
    assert expected <= names, sorted(expected - names)
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    assert not any("/screenshots/" in n for n in names)  # README images stay out
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "contrastive-engine = engine.cli.main:main" in text
    assert "contrastive-explorer = app.main:main" in text
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    assert {"pyproject.toml", "assets/style/app.qss",
            "assets/icons/hicolor/64x64/apps/contrastive-explorer.png"} <= members


def test_the_installed_wheel_runs_both_console_scripts_and_trains(dists, tmp_path):
    wheel, _ = dists
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    bin_dir = env_dir / "bin"
    py = bin_dir / "python"
    site = Path(run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                .stdout.strip())
    (site / "_deps_from_dev_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index",
         "--quiet", wheel], timeout=300)

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    where = run([py, "-c", "import app, engine, app.assets; print(app.__file__); "
                 "print(engine.__file__)"], cwd=tmp_path, env=env).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where
    icon = run([py, "-c", "from app.icon import icon_file; "
                "print(icon_file(256).is_file())"], cwd=tmp_path, env=env).stdout
    assert icon.strip() == "True"

    assert "usage" in run([bin_dir / "contrastive-engine", "--help"], cwd=tmp_path,
                          env=env, timeout=120).stdout
    assert "--demo" in run([bin_dir / "contrastive-explorer", "--help"], cwd=tmp_path,
                           env=env, timeout=120).stdout
    assert "--epochs" in run([bin_dir / "contrastive-explorer", "--engine", "train",
                              "--help"], cwd=tmp_path, env=env, timeout=120).stdout

    folder = make_folder(tmp_path / "shapes")
    start = time.perf_counter()
    done = run([bin_dir / "contrastive-engine", "train", "--data", folder, "--epochs", 1,
                "--batch-size", 8, "--image-size", 16, "--backbone", "resnet18",
                "--precision", "fp32", "--knn-every", 0, "--runs-root", tmp_path / "runs",
                "--cache-dir", tmp_path / "cache"], cwd=tmp_path, env=env, timeout=600)
    seconds = time.perf_counter() - start
    assert '"type": "run_end"' in done.stdout or '"type":"run_end"' in done.stdout
    assert '"finished"' in done.stdout
    run_dir, = (tmp_path / "runs").iterdir()
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    print(f"installed-wheel training: {seconds:.1f} s")
