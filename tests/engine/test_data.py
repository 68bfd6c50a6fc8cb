"""Scanning image folders (labels, skipped files and why), user folders and the demo."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.config.locations import default_runs_root, user_cache_dir, user_data_dir
from engine.data import demo as demo_mod
from engine.data import scan as scan_mod
from engine.data.cache import build_cache, decode_image
from engine.data.demo import demo_dataset
from engine.data.scan import DataError, Manifest, SkippedFile, scan_folder
from tests.helpers import folders as imagegen
from tests.helpers.data import (
    BIG,
    IS_ROOT,
    isolated_home,  # noqa: F401 (autouse fixture)
)

# --- paths ---------------------------------------------------------------------------------


def test_paths_follow_env_then_xdg_then_home(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    assert user_cache_dir() == home / ".cache" / "contrastive-explorer"
    assert user_data_dir() == home / ".local" / "share" / "contrastive-explorer"
    assert default_runs_root() == user_data_dir() / "runs"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xc"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xd"))
    assert user_cache_dir() == tmp_path / "xc" / "contrastive-explorer"
    assert user_data_dir() == tmp_path / "xd" / "contrastive-explorer"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/path")  # invalid per the XDG spec
    assert user_data_dir() == home / ".local" / "share" / "contrastive-explorer"
    monkeypatch.setenv("CONTRASTIVE_EXPLORER_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("CONTRASTIVE_EXPLORER_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("CONTRASTIVE_EXPLORER_RUNS", str(tmp_path / "r"))
    assert (user_cache_dir(), user_data_dir(), default_runs_root()) == (
        tmp_path / "c", tmp_path / "d", tmp_path / "r")
    assert not home.exists()  # nothing is created


# --- scanning ------------------------------------------------------------------------------


def test_scan_labels_from_class_folders(tmp_path: Path) -> None:
    root = imagegen.make_class_folder(tmp_path / "data", {"cat": 2, "dog": 1})
    imagegen.write_image(root / "dog" / "puppies" / "deep" / "p.jpg", seed=99)  # nested
    imagegen.write_image(root / "loose.png", seed=98)  # in the root of a labelled folder
    (root / "empty-class").mkdir()  # no images: not a class
    m = scan_folder(root)
    assert m.classes == ["cat", "dog"] and m.has_labels
    assert [(r.path, r.label) for r in m.images] == [
        ("cat/000.png", 0), ("cat/001.png", 0), ("dog/000.png", 1),
        ("dog/puppies/deep/p.jpg", 1)]
    assert m.labels().dtype == np.int64 and m.labels().tolist() == [0, 0, 1, 1]
    assert m.skipped == [SkippedFile("loose.png", scan_mod.NOT_IN_CLASS)]
    record = m.images[0]
    assert record.size == (root / "cat/000.png").stat().st_size and len(record.sha) == 32
    assert m.root == str(root)


def test_scan_flat_folder_is_unlabelled(tmp_path: Path) -> None:
    root = imagegen.make_flat_folder(tmp_path / "flat", 3)
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("not an image")  # no images: not a class
    m = scan_folder(root)
    assert m.classes == [] and not m.has_labels
    assert [r.label for r in m.images] == [None] * 3
    assert m.labels().tolist() == [-1, -1, -1]
    assert m.summary() == "3 images (unlabelled: no class sub-folders)"


def test_scan_ignores_hidden_and_non_images_and_matches_extensions_case_insensitively(
        tmp_path: Path) -> None:
    root = tmp_path / "d"
    for name in ("a.PNG", "b.JPEG", "c.Jpg", "d.bmp", "e.webp", "f.TIFF", "g.gif"):
        imagegen.write_image(root / "x" / name, seed=hash(name) % 1000)
    imagegen.write_image(root / "x" / ".hidden.png", seed=1)
    imagegen.write_image(root / ".thumbnails" / "t.png", seed=2)
    imagegen.write_image(root / "x" / ".cache" / "t.png", seed=3)
    (root / "x" / "notes.txt").write_text("hello")
    (root / "x" / "data.csv").write_text("1,2")
    (root / "x" / "noext").write_bytes(imagegen.encode(imagegen.random_image(8, 8), "PNG"))
    m = scan_folder(root)
    assert m.classes == ["x"]  # ".thumbnails" is hidden
    assert [r.path for r in m.images] == [
        "x/a.PNG", "x/b.JPEG", "x/c.Jpg", "x/d.bmp", "x/e.webp", "x/f.TIFF", "x/g.gif"]
    assert m.skipped == []


def test_scan_order_is_deterministic_and_sorted(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for i, name in enumerate(["b/z.png", "a/y.png", "b/a.png", "a/b/c.png", "a/a.png"]):
        imagegen.write_image(root / name, seed=i)
    first, second = scan_folder(root), scan_folder(root)
    paths = [r.path for r in first.images]
    assert paths == sorted(paths) == [r.path for r in second.images]
    assert first.to_dict() == second.to_dict() and first.key() == second.key()


def test_key_follows_content_not_times_or_location(tmp_path: Path) -> None:
    root = imagegen.make_class_folder(tmp_path / "d", {"a": 2, "b": 2})
    key = scan_folder(root).key()
    os.utime(root / "a" / "000.png", (1, 1))  # touching a file: same content, same key
    assert scan_folder(root).key() == key
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    assert scan_folder(copy).key() == key  # a copy elsewhere: same key
    imagegen.write_image(root / "a" / "000.png", seed=12345)  # same name, new content
    changed = scan_folder(root).key()
    assert changed != key
    imagegen.write_image(root / "b" / "new.png", seed=777)  # a file added
    added = scan_folder(root).key()
    assert added not in (key, changed)
    (root / "b" / "new.png").unlink()  # ... and removed again
    assert scan_folder(root).key() == changed
    (copy / "b").rename(copy / "c")  # a renamed class
    assert scan_folder(copy).key() != key


@pytest.mark.parametrize("kind", ["missing", "file", "broken-link"])
def test_scan_bad_root_raises_a_helpful_data_error(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "nope"
    if kind == "file":
        imagegen.write_image(tmp_path / "nope.png")
        root = tmp_path / "nope.png"
    elif kind == "broken-link":
        os.symlink(tmp_path / "gone", root)
    with pytest.raises(DataError) as err:
        scan_folder(root)
    message = str(err.value)
    assert str(root) in message and "folder" in message
    assert ("not found" in message) if kind != "file" else ("not a folder" in message)


def test_scan_root_that_cannot_be_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = imagegen.make_flat_folder(tmp_path / "d", 1)
    real = os.scandir

    def deny(path):  # root can read anything, so simulate the permission error
        if Path(path) == root:
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(scan_mod.os, "scandir", deny)
    with pytest.raises(DataError, match="cannot read the image folder .*permission denied"):
        scan_folder(root)


def test_scan_sub_folder_that_cannot_be_read_is_reported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = imagegen.make_class_folder(tmp_path / "d", {"a": 1, "b": 1})
    real = os.scandir

    def deny(path):
        if Path(path) == root / "b":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(scan_mod.os, "scandir", deny)
    m = scan_folder(root)
    assert m.classes == ["a"] and [r.path for r in m.images] == ["a/000.png"]
    assert m.skipped == [SkippedFile("b", "folder cannot be read (permission denied)")]
    assert m.summary().endswith("1 file skipped (1 unreadable folder)")


def test_scan_skips_unusable_files_with_reasons(tmp_path: Path) -> None:
    root = tmp_path / "d"
    expected = imagegen.make_bad_files(root / "bad")
    imagegen.make_class_folder(root, {"good": 2})
    target = imagegen.write_image(tmp_path / "elsewhere" / "target.png", seed=5)
    os.symlink(target, root / "good" / "link.png")  # a link to a file is followed
    m = scan_folder(root)
    assert [r.path for r in m.images if r.path.startswith("good/")] == [
        "good/000.png", "good/001.png", "good/link.png"]
    assert m.images[-1].sha == scan_mod.hash_bytes(target.read_bytes())
    # Every bad file is found by the scan itself (it decodes each image once), with the
    # reason the cache gives: one list of skipped files for the engine and every page.
    reasons = {s.path: s.reason for s in m.skipped}
    assert set(reasons) == {f"bad/{name}" for name in expected}
    for name, start in expected.items():
        assert reasons[f"bad/{name}"].startswith(start), (name, reasons[f"bad/{name}"])
    assert not [r for r in m.images if r.path.startswith("bad/")]
    assert m.summary().endswith("; 6 files skipped (2 corrupt, 1 broken link, 1 empty, "
                                "1 not an image, 1 too large)")
    # verify=False reads no pixels: only what the file system shows is skipped.
    quick = scan_folder(root, verify=False)
    assert {s.path: s.reason for s in quick.skipped} == {
        "bad/empty.png": "empty file (0 bytes)", "bad/broken-link.png": scan_mod.BROKEN_LINK}


def test_scan_skips_what_the_cache_skips(tmp_path: Path) -> None:
    """The scan's verdict on each file is the cache's: building the cache of a scanned
    folder skips nothing more, and a lower pixel limit is applied by the scan."""
    root = tmp_path / "d"
    imagegen.make_bad_files(root / "a")
    imagegen.make_class_folder(root, {"b": 3})
    m = scan_folder(root)
    cache = build_cache(m, 8, tmp_path / "cache", max_image_pixels=BIG, num_workers=1)
    assert [s.path for s in cache.manifest.skipped] == [s.path for s in m.skipped]
    assert len(cache) == len(m.images) == 3
    small = scan_folder(root, max_pixels=10)
    assert all(s.reason.startswith("too large") for s in small.skipped
               if s.path.startswith("b/"))
    assert not small.images


def test_scan_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = imagegen.make_flat_folder(tmp_path / "d", 2)
    secret = root / "001.png"
    if IS_ROOT:  # root reads files whatever their mode: fail the open instead
        real_open = open

        def failing_open(path, *args, **kwargs):
            if Path(path) == secret:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(scan_mod, "open", failing_open, raising=False)
    else:
        secret.chmod(0)
    try:
        m = scan_folder(root)
    finally:
        secret.chmod(0o644)
    assert [r.path for r in m.images] == ["000.png"]
    assert m.skipped == [SkippedFile("001.png", "cannot be read (permission denied)")]
    assert "1 unreadable" in m.summary()


def test_scan_non_ascii_and_spaces_and_progress(tmp_path: Path) -> None:
    root = tmp_path / "dossier d'images"
    imagegen.write_image(root / "café au lait" / "été 1.png", seed=1)
    imagegen.write_image(root / "日本" / "写真 2.JPG", seed=2)
    calls: list[tuple[int, int, str]] = []
    m = scan_folder(root, progress=lambda d, t, msg: calls.append((d, t, msg)))
    assert m.classes == ["café au lait", "日本"]
    assert [r.path for r in m.images] == ["café au lait/été 1.png", "日本/写真 2.JPG"]
    assert calls[0][:2] == (0, 2) and calls[-1][:2] == (2, 2)
    assert all(isinstance(msg, str) and msg for _, _, msg in calls)
    # ... and they decode, by path.
    assert decode_image(root / m.images[1].path, 8, max_pixels=BIG).shape == (8, 8, 3)


def test_scan_relative_root_is_made_absolute(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    imagegen.make_flat_folder(tmp_path / "d", 1)
    monkeypatch.chdir(tmp_path)
    assert scan_folder("d").root == str(tmp_path / "d")


def test_scan_empty_folder_is_not_an_error(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    (root / "readme.txt").write_text("no images here")
    m = scan_folder(root)
    assert m.images == [] and m.skipped == [] and m.summary() == "0 images"


def test_symlinked_folder_loop_is_walked_once(tmp_path: Path) -> None:
    root = imagegen.make_class_folder(tmp_path / "d", {"a": 1})
    os.symlink(root, root / "a" / "loop")  # a link back to the root
    assert [r.path for r in scan_folder(root).images] == ["a/000.png"]


def test_manifest_round_trip_summary_and_with_skipped(tmp_path: Path) -> None:
    root = imagegen.make_class_folder(tmp_path / "d", {"0": 2, "1": 1})
    (root / "1" / "empty.png").write_bytes(b"")
    m = scan_folder(root)
    m.save(tmp_path / "manifest.json")
    again = Manifest.load(tmp_path / "manifest.json")
    assert again == m and again.key() == m.key()
    assert Manifest.from_dict(json.loads(json.dumps(m.to_dict()))) == m
    assert m.summary() == "3 images in 2 classes (0: 2, 1: 1); 1 file skipped (1 empty)"
    fewer = m.with_skipped([SkippedFile("0/001.png", "too large: 1 x 1 pixels ...")])
    assert [r.path for r in fewer.images] == ["0/000.png", "1/000.png"]
    assert len(m.images) == 3  # the original is unchanged
    assert fewer.summary() == ("2 images in 2 classes (0: 1, 1: 1); 2 files skipped "
                               "(1 empty, 1 too large)")
    many = Manifest("r", [f"c{i}" for i in range(12)], [], [])
    assert many.summary(max_classes=2) == "0 images in 12 classes (c0: 0, c1: 0, ... 10 more)"


# --- demo ----------------------------------------------------------------------------------


def test_demo_dataset_materialises_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTRASTIVE_EXPLORER_DATA", str(tmp_path / "data"))
    path = demo_dataset(size=16)
    assert path == tmp_path / "data" / "demo" / "digits-16px"
    assert sorted(p.name for p in path.iterdir()) == [str(i) for i in range(10)] + [
        "README.txt"]
    assert "UCI" in (path / "README.txt").read_text()
    assert sum(1 for _ in path.glob("*/*.png")) == 1797
    assert [p.name for p in path.parent.iterdir()] == ["digits-16px"]  # no temporary left
    with Image.open(next(path.glob("0/*.png"))) as im:
        assert im.size == (16, 16) and im.mode == "L"
    m = scan_folder(path)
    assert len(m.images) == 1797 and m.classes == [str(i) for i in range(10)]
    assert m.class_counts()[0] == 178 and not m.skipped

    monkeypatch.setattr(demo_mod, "_write_digits", lambda *a: pytest.fail("rebuilt"))
    assert demo_dataset(size=16) == path  # second call: no work


def test_demo_interrupted_first_use_leaves_nothing(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(folder: Path, size: int) -> None:
        (folder / "0").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_mod, "_write_digits", crash)
    with pytest.raises(KeyboardInterrupt):
        demo_dataset(tmp_path / "demo", size=8)
    assert list((tmp_path / "demo").iterdir()) == []
