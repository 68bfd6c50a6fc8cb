"""benchmarks/: the photo-patch folder and a smoke run of the methods benchmark."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.folders import make_folder

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from make_photo_patches import make_patches  # noqa: E402


def test_photo_patches_are_labelled_crops_of_real_photographs(tmp_path):
    counts = make_patches(tmp_path / "photos", grid=2, per_class=3, size=16)
    assert {"china-r0c0", "china-r1c1", "flower-r0c1", "flower-r1c0"} <= set(counts)
    assert len(counts) % 4 == 0 and set(counts.values()) == {3}
    files = sorted((tmp_path / "photos").glob("*/*.jpg"))
    assert len(files) == 3 * len(counts)
    with Image.open(files[0]) as im:
        assert im.size == (16, 16) and im.mode == "RGB"
    # Different regions give different pictures (the crops are not all alike).
    a, b = (np.asarray(Image.open(tmp_path / "photos" / c / "0000.jpg"))
            for c in ("china-r0c0", "flower-r1c1"))
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 10
    make_patches(tmp_path / "photos", per_class=2, size=16)  # its own folder: replaced
    assert len(list((tmp_path / "photos" / "china-r0c0").glob("*.jpg"))) == 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    with pytest.raises(SystemExit, match="not empty"):
        make_patches(tmp_path / "mine")


@pytest.mark.slow
def test_bench_methods_smoke_run(tmp_path):
    folder = make_folder(tmp_path / "shapes")
    out = tmp_path / "out.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_methods.py"), "--seconds", "4",
         "--methods", "simclr,moco", "--data", str(folder), "--timing-steps", "3",
         "--work", str(tmp_path / "work"), "--out", str(out),
         "--set", "image_size=16", "--set", "batch_size=8", "--set", "proj_hidden_dim=32",
         "--set", "proj_out_dim=16", "--set", "num_threads=2"],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| method | init | steps |" in done.stdout
    rows = json.loads(out.read_text())["datasets"][0]["rows"]
    assert [(r["method"], r["init"]) for r in rows] == [
        ("(untrained)", "random"), ("simclr", "random"), ("moco", "random"),
        ("simclr", "simclr-encoder.pt")]
    for r in rows[1:]:
        assert r["steps"] >= 1 and r["peak_rss_mb"] > 100 and r["pairs_per_s"] > 0
        assert r["status"] in ("finished", "stopped") and r["seconds"] > 0
    assert all(0 <= r["knn_top1"] <= 1 and 0 <= r["probe_top1"] <= 1 for r in rows)
    start = next(json.loads(line) for line in
                 (Path(rows[3]["run_dir"]) / "events.jsonl").read_text().splitlines()
                 if '"run_start"' in line)
    assert start["init"].endswith("simclr-encoder.pt") and len(start["init_sha256"]) == 64
