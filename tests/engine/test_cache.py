"""The decoded-image cache: aligned with the manifest, built once, rebuilt on change,
safe to interrupt."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.data import cache as cache_mod
from engine.data.cache import (
    ImageCache,
    build_cache,
    cache_paths,
    decode_image,
    largest_fitting_size,
    plan_cache,
)
from engine.data.scan import DataError, Manifest, SkippedFile, scan_folder
from tests.helpers import folders as imagegen
from tests.helpers.data import (
    BIG,
    isolated_home,  # noqa: F401 (autouse fixture)
)

# --- the cache -----------------------------------------------------------------------------


def _folder_with_bad_files(tmp_path: Path) -> Path:
    root = imagegen.make_class_folder(tmp_path / "data", {"a": 3, "b": 2}, width=20, height=14)
    imagegen.make_bad_files(root / "b" / "broken")
    return root


def test_cache_arrays_align_with_manifest_and_match_decode(tmp_path: Path) -> None:
    root = _folder_with_bad_files(tmp_path)
    manifest = scan_folder(root, verify=False)  # the cache finds the bad files on its own
    calls: list[tuple[int, int]] = []
    cache = build_cache(manifest, 12, tmp_path / "cache", max_image_pixels=BIG, num_workers=2,
                        progress=lambda d, t, m: calls.append((d, t)))
    assert isinstance(cache, ImageCache) and cache.size == 12 and len(cache) == 5
    assert isinstance(cache.images, np.memmap) and cache.images.shape == (5, 12, 12, 3)
    assert cache.images.dtype == np.uint8 and not cache.images.flags.writeable
    assert cache.labels.dtype == np.int64 and cache.labels.tolist() == [0, 0, 0, 1, 1]
    assert [r.path for r in cache.manifest.images] == [
        "a/000.png", "a/001.png", "a/002.png", "b/000.png", "b/001.png"]
    assert (cache.labels == cache.manifest.labels()).all()
    for i, record in enumerate(cache.manifest.images):
        np.testing.assert_array_equal(
            cache.images[i], decode_image(root / record.path, 12, max_pixels=BIG))
    reasons = {s.path: s.reason for s in cache.manifest.skipped}
    assert set(reasons) == {f"b/broken/{n}" for n in (
        "empty.png", "broken-link.png", "truncated.jpg", "truncated.png", "text.jpg",
        "bomb.png")}
    assert reasons["b/broken/text.jpg"] == "not an image (cannot identify format)"
    assert reasons["b/broken/bomb.png"].startswith("too large")
    assert calls[-1] == (9, 9)  # progress: 9 files decoded (5 good + 4 bad)
    assert cache.path.stat().st_size == 5 * 12 * 12 * 3
    sidecar = json.loads(cache.path.with_suffix(".json").read_text())
    assert sidecar["count"] == 5 and sidecar["total"] == 9 and len(sidecar["failed"]) == 4


def test_cache_is_built_once_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _folder_with_bad_files(tmp_path)
    manifest = scan_folder(root)
    first = build_cache(manifest, 8, tmp_path / "cache", max_image_pixels=BIG)
    data = np.array(first.images)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(cache_mod, "decode_with_pixels", no_decoding)
    again = build_cache(scan_folder(root), 8, tmp_path / "cache", max_image_pixels=BIG)
    np.testing.assert_array_equal(np.asarray(again.images), data)
    assert again.path == first.path and again.manifest == first.manifest
    # Another pixel limit that refuses and keeps the same images reuses it too.
    build_cache(manifest, 8, tmp_path / "cache", max_image_pixels=BIG // 2)
    # Another size is another cache.
    with pytest.raises(AssertionError, match="decoded again"):
        build_cache(manifest, 10, tmp_path / "cache", max_image_pixels=BIG)


def test_cache_rebuilt_when_the_pixel_limit_changes_the_result(tmp_path: Path) -> None:
    root = tmp_path / "d"
    imagegen.write_image(root / "small.png", 10, 10, seed=1)
    imagegen.write_image(root / "large.png", 40, 30, seed=2)
    manifest = scan_folder(root)
    strict = build_cache(manifest, 8, tmp_path / "cache", max_image_pixels=500)
    assert [r.path for r in strict.manifest.images] == ["small.png"]
    assert strict.manifest.skipped[0].reason.startswith("too large: 40 x 30 pixels")
    relaxed = build_cache(manifest, 8, tmp_path / "cache", max_image_pixels=5000)
    assert len(relaxed) == 2 and relaxed.manifest.skipped == []
    again = build_cache(manifest, 8, tmp_path / "cache", max_image_pixels=99)  # refuses both
    assert len(again) == 0 and again.images.shape == (0, 8, 8, 3)


def test_cache_content_change_gives_a_new_cache(tmp_path: Path) -> None:
    root = imagegen.make_flat_folder(tmp_path / "d", 3)
    first = build_cache(scan_folder(root), 8, tmp_path / "cache", max_image_pixels=BIG)
    imagegen.write_image(root / "001.png", seed=4242)
    second = build_cache(scan_folder(root), 8, tmp_path / "cache", max_image_pixels=BIG)
    assert second.path != first.path
    assert not np.array_equal(second.images[1], first.images[1])
    np.testing.assert_array_equal(second.images[1],
                                  decode_image(root / "001.png", 8, max_pixels=BIG))


def test_cache_skips_files_changed_or_removed_after_the_scan(tmp_path: Path) -> None:
    root = imagegen.make_flat_folder(tmp_path / "d", 4)
    manifest = scan_folder(root)
    imagegen.write_image(root / "001.png", seed=999)  # changed after the scan
    (root / "002.png").unlink()  # removed after the scan
    cache = build_cache(manifest, 8, tmp_path / "cache", max_image_pixels=BIG)
    assert [r.path for r in cache.manifest.images] == ["000.png", "003.png"]
    assert cache.manifest.skipped == [SkippedFile("001.png", "changed since scan"),
                                      SkippedFile("002.png", "disappeared since scan")]
    np.testing.assert_array_equal(cache.images[1],
                                  decode_image(root / "003.png", 8, max_pixels=BIG))
    assert cache.labels.tolist() == [-1, -1]


def test_half_built_cache_is_not_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = imagegen.make_flat_folder(tmp_path / "d", 3)
    manifest = scan_folder(root)
    data_path, meta_path = cache_paths(manifest, 8, tmp_path / "cache")
    good = np.array(build_cache(manifest, 8, tmp_path / "cache", max_image_pixels=BIG).images)
    # A crash after the data file but before the sidecar: garbage data, no sidecar.
    meta_path.unlink()
    data_path.write_bytes(b"\x00" * data_path.stat().st_size)
    decoded: list[int] = []
    real = cache_mod.decode_with_pixels
    monkeypatch.setattr(cache_mod, "decode_with_pixels", lambda *a: decoded.append(1) or real(*a))
    cache = build_cache(manifest, 8, tmp_path / "cache", max_image_pixels=BIG)
    assert len(decoded) == 3
    np.testing.assert_array_equal(np.asarray(cache.images), good)
    # A data file of the wrong length (cut short) is rebuilt too, even with its sidecar.
    with open(data_path, "r+b") as f:
        f.truncate(100)
    cache = build_cache(manifest, 8, tmp_path / "cache", max_image_pixels=BIG)
    assert len(decoded) == 6 and data_path.stat().st_size == good.nbytes


def test_interrupted_build_resumes_where_it_stopped(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root = imagegen.make_flat_folder(tmp_path / "d", 5)
    manifest = scan_folder(root)
    clean = np.asarray(build_cache(manifest, 8, tmp_path / "clean", max_image_pixels=BIG,
                                   num_workers=1).images)
    real = cache_mod.decode_with_pixels
    calls = []

    def crash_on_fourth(*args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(cache_mod, "decode_with_pixels", crash_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        build_cache(manifest, 8, tmp_path / "cache", max_image_pixels=BIG, num_workers=1)
    data_path, meta_path = cache_paths(manifest, 8, tmp_path / "cache")
    assert not data_path.exists() and not meta_path.exists()  # no usable cache yet
    plan = plan_cache(manifest, 8, tmp_path / "cache", max_image_pixels=BIG, num_workers=1)
    assert plan.resume_from == 3 and not plan.reuse
    assert plan.to_write == 2 * 8 * 8 * 3

    decoded = []
    monkeypatch.setattr(cache_mod, "decode_with_pixels",
                        lambda *a: decoded.append(1) or real(*a))
    told = []
    cache = build_cache(manifest, 8, tmp_path / "cache", max_image_pixels=BIG, num_workers=1,
                        announce=told.append)
    assert len(decoded) == 2  # only the images not decoded before the interruption
    assert told[0].resume_from == 3 and "resuming after 3 decoded images" in told[0].describe()
    np.testing.assert_array_equal(np.asarray(cache.images), clean)
    assert sorted(p.name for p in data_path.parent.iterdir()) == sorted(
        [data_path.name, meta_path.name])  # the partial files are gone


def test_a_partial_build_of_other_content_is_not_resumed(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = imagegen.make_flat_folder(tmp_path / "d", 3)
    manifest = scan_folder(root)
    real = cache_mod.decode_with_pixels
    monkeypatch.setattr(cache_mod, "SAVE_EVERY_S", 0.0)

    calls = []

    def crash_on_second(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(cache_mod, "decode_with_pixels", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        build_cache(manifest, 8, tmp_path / "cache", max_image_pixels=BIG, num_workers=1)
    monkeypatch.setattr(cache_mod, "decode_with_pixels", real)
    # another pixel limit could refuse other images: the partial build is not used
    assert plan_cache(manifest, 8, tmp_path / "cache", max_image_pixels=BIG // 2,
                      num_workers=1).resume_from == 0
    assert plan_cache(manifest, 8, tmp_path / "cache", max_image_pixels=BIG,
                      num_workers=1).resume_from == 1


def test_processes_decode_the_same_as_threads(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    root = imagegen.make_flat_folder(tmp_path / "d", 40)
    (root / "bad.png").write_bytes(b"not an image")
    manifest = scan_folder(root)
    threads = build_cache(manifest, 8, tmp_path / "threads", max_image_pixels=BIG,
                          num_workers=2)
    monkeypatch.setattr(cache_mod, "PROCESS_MIN_IMAGES", 1)
    monkeypatch.setattr(cache_mod, "CHUNK", 7)
    told = []
    procs = build_cache(manifest, 8, tmp_path / "procs", max_image_pixels=BIG, num_workers=2,
                        announce=told.append)
    assert told[0].processes and told[0].workers == 2 and "2 processes" in told[0].describe()
    np.testing.assert_array_equal(np.asarray(procs.images), np.asarray(threads.images))
    assert procs.manifest.skipped == threads.manifest.skipped
    assert [s.path for s in procs.manifest.skipped] == ["bad.png"]


def test_plan_states_size_and_free_space(tmp_path: Path) -> None:
    manifest = scan_folder(imagegen.make_flat_folder(tmp_path / "d", 4))
    plan = plan_cache(manifest, 64, tmp_path / "not-yet" / "cache", max_image_pixels=BIG,
                      num_workers=3)
    assert plan.bytes == 4 * 64 * 64 * 3 and plan.images == 4 and plan.size == 64
    assert plan.free == shutil.disk_usage(tmp_path).free or plan.free > 0
    assert plan.fits and not plan.processes  # a small folder decodes on threads
    assert f"4 images at 64 px = {4 * 64 * 64 * 3 / 1e6:.1f} MB" in plan.describe()
    build_cache(manifest, 64, tmp_path / "not-yet" / "cache", max_image_pixels=BIG)
    again = plan_cache(manifest, 64, tmp_path / "not-yet" / "cache", max_image_pixels=BIG)
    assert again.reuse and again.to_write == 0 and "reusing" in again.describe()


def test_largest_fitting_size():
    # 1,000 images, 10 MB free, 90% usable: side^2 * 3 * 1000 <= 9e6 -> side <= 54
    assert largest_fitting_size(1000, 10_000_000, 32, 73) == 54
    assert largest_fitting_size(1000, 10_000_000, 32, 40) == 40
    assert largest_fitting_size(1000, 1_000, 32, 73) is None


def test_empty_manifest_gives_an_empty_cache(tmp_path: Path) -> None:
    manifest = Manifest(str(tmp_path), [], [], [])
    cache = build_cache(manifest, 8, tmp_path / "cache", max_image_pixels=BIG)
    assert cache.images.shape == (0, 8, 8, 3) and cache.labels.shape == (0,)
    assert len(build_cache(manifest, 8, tmp_path / "cache", max_image_pixels=BIG)) == 0


def test_cache_folder_that_cannot_be_written(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    root = imagegen.make_flat_folder(tmp_path / "d", 2)
    manifest = scan_folder(root)
    blocked = tmp_path / "a-file"
    blocked.write_text("a file where the cache folder should be")
    with pytest.raises(DataError, match="--cache-dir") as err:
        build_cache(manifest, 8, blocked, max_image_pixels=BIG)
    assert str(blocked) in str(err.value)

    def disk_full(path, offset):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_mod, "_open_partial", disk_full)
    with pytest.raises(DataError, match="the disk is full. .*--cache-dir"):
        build_cache(manifest, 8, tmp_path / "cache", max_image_pixels=BIG)


def test_cache_checks_free_space_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = scan_folder(imagegen.make_flat_folder(tmp_path / "d", 2))
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda p: shutil._ntuple_diskusage(100, 99, 1))
    with pytest.raises(DataError, match=r"needs 0\.0 MB but only 0\.0 MB is free in .*images"):
        build_cache(manifest, 64, tmp_path / "cache", max_image_pixels=BIG)


def test_cache_same_result_with_one_or_many_workers(tmp_path: Path) -> None:
    root = imagegen.make_flat_folder(tmp_path / "d", 6)
    manifest = scan_folder(root)
    one = build_cache(manifest, 8, tmp_path / "c1", max_image_pixels=BIG, num_workers=1)
    many = build_cache(manifest, 8, tmp_path / "c2", max_image_pixels=BIG, num_workers=4)
    np.testing.assert_array_equal(np.asarray(one.images), np.asarray(many.images))




def test_processes_only_where_spawn_cannot_rerun_a_script(tmp_path, monkeypatch):
    import sys
    import types

    def main_from(text: str | None, spec=None) -> types.ModuleType:
        module = types.ModuleType("__main__")
        if text is not None:
            path = tmp_path / f"script{len(list(tmp_path.glob('script*')))}.py"
            path.write_text(text)
            module.__file__ = str(path)
        module.__spec__ = spec
        return module

    guarded = "import x\nif __name__ == '__main__':\n    x.run()\n"
    for module, safe in ((main_from(guarded), True), (main_from("import x\nx.run()\n"), False),
                         (main_from(None), True),
                         (main_from("x.run()\n", spec=object()), True)):
        monkeypatch.setitem(sys.modules, "__main__", module)
        assert cache_mod.spawn_is_safe() is safe
    monkeypatch.setitem(sys.modules, "__main__", main_from("import x\nx.run()\n"))
    monkeypatch.setattr(cache_mod, "PROCESS_MIN_IMAGES", 1)
    manifest = scan_folder(imagegen.make_flat_folder(tmp_path / "d", 3))
    plan = plan_cache(manifest, 8, tmp_path / "cache", max_image_pixels=BIG, num_workers=2)
    assert not plan.processes and "2 threads" in plan.describe()
