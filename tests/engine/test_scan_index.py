"""A scan reuses what an earlier scan found for files unchanged since (engine.data.scan_index),
and reads again every file that changed, whatever the change."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from engine.data import scan as scan_module
from engine.data import scan_index
from engine.data.scan import hash_bytes, scan_folder, scan_list
from engine.data.scan_index import RACY_SECONDS, ScanIndex
from tests.helpers.folders import make_class_folder, write_image

HOUR_AGO = time.time() - 3600


def _age(root: Path) -> None:
    """Set every file's modification time an hour back, out of the index's racy window."""
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (HOUR_AGO, HOUR_AGO))


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The paths the scan actually read (hashed and verified), in call order."""
    seen: list[str] = []
    real = scan_module._hash_and_check

    def counting(path: str, max_pixels: int | None):
        seen.append(Path(path).name)
        return real(path, max_pixels)

    monkeypatch.setattr(scan_module, "_hash_and_check", counting)
    return seen


@pytest.fixture(autouse=True)
def no_racy_window(monkeypatch) -> None:
    """Files here were written a moment ago (and os.utime cannot set their ctime back), so the
    racy window is closed except in the test of it."""
    monkeypatch.setattr(scan_index, "RACY_SECONDS", 0.0)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = make_class_folder(tmp_path / "data", {"a": 4, "b": 4})
    _age(root)
    return root


def _records(manifest) -> list[tuple[str, int | None, int, str]]:
    return [(r.path, r.label, r.size, r.sha) for r in manifest.images]


def test_an_unchanged_folder_is_not_read_again(folder: Path, reads: list[str]) -> None:
    first = scan_folder(folder)
    assert len(reads) == 8
    messages: list[tuple[int, int, str]] = []
    second = scan_folder(folder, progress=lambda d, t, m: messages.append((d, t, m)))
    assert len(reads) == 8  # nothing read the second time
    assert _records(second) == _records(first)
    assert second.key() == first.key()
    assert messages[-1] == (8, 8, "8 of 8 files unchanged since the last scan")


def test_a_changed_file_is_hashed_again_even_with_its_old_size_and_mtime(
        folder: Path, reads: list[str]) -> None:
    scan_folder(folder)
    target = folder / "a" / "001.png"
    data = bytearray(target.read_bytes())
    data[-20] ^= 0xFF  # same size; a changed byte in the last chunk
    target.write_bytes(bytes(data))
    os.utime(target, (HOUR_AGO, HOUR_AGO))  # as `touch -d` or `cp -p` would: only ctime moves
    time.sleep(0.01)
    reads.clear()
    # ctime is now recent: the index must not trust its own record of it either
    manifest = scan_folder(folder, verify=False)
    assert reads == ["001.png"]
    record = next(r for r in manifest.images if r.path == "a/001.png")
    assert record.sha == hash_bytes(bytes(data))


def test_new_and_removed_files(folder: Path, reads: list[str]) -> None:
    scan_folder(folder)
    (folder / "b" / "000.png").unlink()
    write_image(folder / "b" / "new.png", seed=99)
    reads.clear()
    manifest = scan_folder(folder)
    assert reads == ["new.png"]
    assert [r.path for r in manifest.images if r.path.startswith("b/")] == \
        ["b/001.png", "b/002.png", "b/003.png", "b/new.png"]
    old = ScanIndex(folder.absolute())
    assert "b/000.png" not in old._old and "b/new.png" in old._old  # gone, and added


def test_files_changed_just_before_the_index_is_written_are_not_kept(
        tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(scan_index, "RACY_SECONDS", RACY_SECONDS)
    now, hour_ago = time.time_ns(), int(HOUR_AGO * 1e9)
    index = ScanIndex("/some/root", tmp_path)
    index.record("old.png", (10, hour_ago, hour_ago, 1), (10, "aa"), None)
    index.record("touched.png", (10, hour_ago, now, 2), (10, "bb"), None)  # ctime just now
    index.record("new.png", (10, now, now, 3), (10, "cc"), None)
    index.save(complete=True)
    again = ScanIndex("/some/root", tmp_path)
    assert again.lookup("old.png", (10, hour_ago, hour_ago, 1), None) == (10, "aa")
    assert again.lookup("touched.png", (10, hour_ago, now, 2), None) is None
    assert again.lookup("new.png", (10, now, now, 3), None) is None
    assert again.lookup("old.png", (10, hour_ago, hour_ago, 9), None) is None  # replaced file
    assert ScanIndex("/another/root", tmp_path).lookup(
        "old.png", (10, hour_ago, hour_ago, 1), None) is None


def test_a_verdict_is_reused_only_for_the_same_check(folder: Path, reads: list[str]) -> None:
    small = scan_folder(folder, max_pixels=100)  # 24 x 16 images: all too large
    assert not small.images and len(small.skipped) == 8
    reads.clear()
    again = scan_folder(folder, max_pixels=100)
    assert reads == [] and len(again.skipped) == 8
    usable = scan_folder(folder, max_pixels=10_000)  # another limit: verified again
    assert len(reads) == 8 and len(usable.images) == 8
    reads.clear()
    unverified = scan_folder(folder, verify=False)  # a hash from a verified scan will do
    assert reads == [] and _records(unverified) == _records(usable)


def test_reuse_false_reads_everything(folder: Path, reads: list[str]) -> None:
    scan_folder(folder)
    scan_folder(folder, reuse=False)
    assert len(reads) == 16


def test_an_unreadable_index_means_a_full_scan(folder: Path, reads: list[str]) -> None:
    first = scan_folder(folder)
    index = ScanIndex(folder.absolute())
    index.path.write_text("{not json", encoding="utf-8")
    reads.clear()
    assert _records(scan_folder(folder)) == _records(first)
    assert len(reads) == 8


def test_a_list_scan_keeps_the_rest_of_the_folder(folder: Path, reads: list[str],
                                                  tmp_path: Path) -> None:
    scan_folder(folder)
    listed = tmp_path / "some.txt"
    listed.write_text(f"{folder / 'a' / '000.png'}\n{folder / 'b' / '000.png'}\n",
                      encoding="utf-8")
    reads.clear()
    assert len(scan_list(listed).images) == 2
    assert reads == []  # the list's root is the folder: the folder's index serves it
    scan_folder(folder)
    assert reads == []  # and the list scan did not drop the other six files


def test_the_rehash_variable_reads_everything(folder: Path, reads: list[str],
                                              monkeypatch) -> None:
    scan_folder(folder)
    monkeypatch.setenv("CONTRASTIVE_EXPLORER_REHASH", "1")
    scan_folder(folder)
    assert len(reads) == 16
    monkeypatch.delenv("CONTRASTIVE_EXPLORER_REHASH")
    scan_folder(folder)
    assert len(reads) == 16  # the rehashed scan wrote the index again
