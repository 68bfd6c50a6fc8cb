"""A hostile image folder through a real run: every good image (however odd) is trained
on, every bad one is listed with its reason, and files changed between the scan and the
decoding, or after a run, are noticed."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from engine.data import cache as cache_mod
from engine.data import scan as scan_mod
from engine.data.cache import decode_image
from engine.data.scan import Manifest
from engine.training import loop as train_mod
from tests.helpers import faults, folders
from tests.helpers.faults import BIG, IS_ROOT, events_of, make_folder, resume, run, warnings_of

# Fixtures shared with the other fault tests (tests/helpers/faults.py).
_keep_torch_threads = faults.keep_torch_threads


def write_good_oddities(folder: Path) -> list[str]:
    """Images that are unusual but fine; returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    a = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 250)
    Image.fromarray(a).save(folder / "sixteen-bit.png")
    assert Image.open(folder / "sixteen-bit.png").mode.startswith("I")
    folders.random_image(16, 16, seed=301).convert("CMYK").save(folder / "cmyk.jpg",
                                                                 quality=90)
    palette = folders.random_image(16, 16, seed=302).convert("P")
    palette.save(folder / "palette-transparent.png", transparency=0)
    exif = Image.Exif()
    exif[0x0112] = 6
    folders.random_image(24, 16, seed=303).save(folder / "exif-rotated.jpg", exif=exif)
    Image.new("RGB", (1, 1), (10, 200, 30)).save(folder / "one-pixel.png")
    folders.write_image(folder / "été café 1.png", 16, 16, seed=304)
    folders.write_image(folder / "日本 写真.JPG", 16, 16, seed=305)
    folders.write_image(folder / "with  two spaces .jpeg", 16, 16, seed=306)
    folders.random_image(16, 16, seed=307).save(folder / "grey.gif")
    target = folders.write_image(folder.parents[2] / "elsewhere" / "target.png", 16, 16,
                                  seed=308)
    os.symlink(target, folder / "good-link.png")
    return ["sixteen-bit.png", "cmyk.jpg", "palette-transparent.png", "exif-rotated.jpg",
            "one-pixel.png", "été café 1.png", "日本 写真.JPG", "with  two spaces .jpeg",
            "grey.gif", "good-link.png"]


def make_unreadable(path: Path, monkeypatch) -> None:
    if not IS_ROOT:
        path.chmod(0)
        return
    real_open = open

    def failing_open(file, *args, **kwargs):  # root reads any file: fail the open instead
        if isinstance(file, (str, os.PathLike)) and Path(file) == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    for module in (scan_mod, cache_mod):
        monkeypatch.setattr(module, "open", failing_open, raising=False)


def decoded_cache_rows(cache_dir: Path) -> tuple[np.ndarray, dict]:
    (data,) = (cache_dir / "images").glob("*.u8")
    meta = json.loads(data.with_suffix(".json").read_text())
    rows = np.fromfile(data, dtype=np.uint8).reshape(meta["count"], meta["size"],
                                                     meta["size"], 3)
    return rows, meta


def test_hostile_folder_trains_on_every_good_image_and_lists_every_bad_one(tmp_path,
                                                                           monkeypatch):
    root = folders.make_class_folder(tmp_path / "data", {"a": 14, "b": 14}, width=16,
                                      height=16, ext=".jpg")
    good = [f"a/{i:03d}.jpg" for i in range(14)] + [f"b/{i:03d}.jpg" for i in range(14)]
    good += [f"a/odd/{name}" for name in write_good_oddities(root / "a" / "odd")]
    bad = {f"b/bad/{name}": reason
           for name, reason in folders.make_bad_files(root / "b" / "bad").items()}
    (root / "b" / "bad" / "real-bomb.png").write_bytes(folders.big_blank_png(4000, 4000))
    bad["b/bad/real-bomb.png"] = "too large: 4000 x 4000 pixels"
    secret = folders.write_image(root / "b" / "bad" / "secret.png", 16, 16, seed=400)
    make_unreadable(secret, monkeypatch)
    bad["b/bad/secret.png"] = "cannot be read (permission denied)"
    (root / "loose.png").write_bytes((root / "a" / "000.jpg").read_bytes())
    bad["loose.png"] = "not in a class sub-folder"
    try:
        result = run({"data": str(root), "epochs": 1, "max_image_pixels": 1_000_000},
                     tmp_path)
    finally:
        secret.chmod(0o644)
    assert result.status == "finished" and result.step == len(good) // 8, result.reason

    manifest = json.loads((result.run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert sorted(r["path"] for r in manifest["images"]) == sorted(good)
    skipped = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == set(bad)
    for path, reason in bad.items():
        assert skipped[path].startswith(reason), (path, skipped[path])
    start = next(e for e in events_of(result.run_dir) if e["type"] == "run_start")
    assert start["dataset"]["images"] == len(good) and start["dataset"]["skipped"] == len(bad)
    assert any(f"{len(bad)} file(s) skipped" in e["message"]
               for e in events_of(result.run_dir) if e["type"] == "warning")
    # Every good image is in the cache, decoded from its own file.
    rows, meta = decoded_cache_rows(tmp_path / "cache")
    assert meta["count"] == len(good)
    for i, record in enumerate(manifest["images"]):
        np.testing.assert_array_equal(rows[i], decode_image(root / record["path"], 16,
                                                            max_pixels=BIG))


def test_files_changed_or_removed_between_scan_and_decoding(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "data")
    real_scan = train_mod.scan_data

    def scan_then_change(*args, **kwargs):
        manifest = real_scan(*args, **kwargs)
        folders.write_image(root / "a" / "003.png", 16, 16, seed=999)  # new content
        (root / "b" / "007.png").unlink()
        return manifest

    monkeypatch.setattr(train_mod, "scan_data", scan_then_change)
    result = run({"data": str(root), "epochs": 1}, tmp_path)
    assert result.status == "finished" and result.step == 46 // 8
    manifest = Manifest.load(result.run_dir / "manifest.json")
    assert {(s.path, s.reason) for s in manifest.skipped} == {
        ("a/003.png", "changed since scan"), ("b/007.png", "disappeared since scan")}
    assert len(manifest.images) == 46


def test_images_added_removed_or_changed_after_a_run_give_a_new_cache(tmp_path):
    root = make_folder(tmp_path / "data")
    first = run({"data": str(root), "epochs": 1}, tmp_path)
    folders.write_image(root / "a" / "005.png", 16, 16, seed=4242)  # same name, new pixels
    (root / "b" / "010.png").unlink()
    for i in range(9):
        folders.write_image(root / "b" / f"new-{i}.png", 16, 16, seed=5000 + i)
    more = resume(first.run_dir, tmp_path, epochs=2)
    assert more.status == "finished", more.reason
    assert any("the folder changed since this run started: 7 steps per epoch now, 6 before"
               in w for w in warnings_of(first.run_dir))
    manifest = Manifest.load(first.run_dir / "manifest.json")
    assert len(manifest.images) == 56 and "b/010.png" not in {r.path for r in manifest.images}
    assert len(list((tmp_path / "cache" / "images").glob("*.u8"))) == 2  # a new cache
    data, _ = cache_mod.cache_paths(manifest, 16, tmp_path / "cache")
    rows = np.fromfile(data, dtype=np.uint8).reshape(56, 16, 16, 3)
    for i, record in enumerate(manifest.images):  # never stale pixels
        np.testing.assert_array_equal(rows[i], decode_image(root / record.path, 16,
                                                            max_pixels=BIG))


