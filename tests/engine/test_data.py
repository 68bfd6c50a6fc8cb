"""Scanning image folders, decoding every kind of image, the decoded cache and the demo."""

from __future__ import annotations

import io
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from engine.config.locations import default_runs_root, user_cache_dir, user_data_dir
from engine.data import cache as cache_mod
from engine.data import decode as decode_mod
from engine.data import demo as demo_mod
from engine.data import scan as scan_mod
from engine.data.cache import BadImage, ImageCache, build_cache, cache_paths, decode_image
from engine.data.demo import demo_dataset
from engine.data.scan import DataError, Manifest, SkippedFile, scan_folder
from tests.helpers import folders as imagegen

BIG = 10**8  # a pixel limit no test image reaches
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing in these tests may touch the real home folder."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    for var in ("CONTRASTIVE_EXPLORER_CACHE", "CONTRASTIVE_EXPLORER_DATA",
                "CONTRASTIVE_EXPLORER_RUNS", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)


def rgb_of(im: Image.Image, fmt: str = "PNG", size: int = 8, **kw) -> np.ndarray:
    return decode_image(imagegen.encode(im, fmt, **kw), size, max_pixels=BIG)


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


# --- decoding ------------------------------------------------------------------------------


def test_decode_output_shape_dtype_and_centre_square() -> None:
    # Three 16-px blocks, red | green | blue: the centre square of the landscape is green.
    a = np.zeros((16, 48, 3), np.uint8)
    a[:, :16, 0] = a[:, 16:32, 1] = a[:, 32:, 2] = 255
    out = rgb_of(Image.fromarray(a), size=16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert (out[:, 3:13] == [0, 255, 0]).all()
    # The portrait version: blocks stacked top to bottom.
    out = rgb_of(Image.fromarray(a.transpose(1, 0, 2).copy()), size=8)
    assert out.shape == (8, 8, 3) and (out[2:6] == [0, 255, 0]).all()


def test_decode_resizes_shorter_side_like_resize_then_crop() -> None:
    im = imagegen.random_image(40, 30, seed=3)
    ref = im.resize((16 * 40 // 30 + 1, 16), Image.Resampling.BICUBIC)  # ~21 x 16
    out = rgb_of(im, size=16)
    left = (ref.width - 16) // 2
    crop = np.asarray(ref)[:, left:left + 16].astype(int)
    assert np.abs(out.astype(int) - crop).mean() < 12  # same picture, up to sub-pixel shift


def test_decode_one_pixel_image_is_upscaled() -> None:
    out = rgb_of(Image.new("RGB", (1, 1), (10, 200, 30)), size=16)
    assert out.shape == (16, 16, 3) and (out == [10, 200, 30]).all()


def test_decode_modes_grayscale_and_1bit() -> None:
    gray = Image.new("L", (8, 8), 77)
    assert (rgb_of(gray) == 77).all()
    bits = Image.new("1", (16, 8), 0)
    bits.paste(1, (0, 0, 8, 8))  # left half white
    out = rgb_of(bits, size=8)  # centre square straddles the edge
    assert out[:, 0].min() == 255
    assert out[:, -1].max() == 0


def test_decode_alpha_is_composited_over_white() -> None:
    rgba = Image.new("RGBA", (8, 8), (200, 0, 0, 255))
    rgba.paste((0, 0, 255, 0), (0, 0, 8, 4))  # top half fully transparent
    out = rgb_of(rgba, size=8)
    assert (out[0] == 255).all() and (out[-1] == [200, 0, 0]).all()
    half = rgb_of(Image.new("RGBA", (8, 8), (0, 0, 0, 128)))
    assert np.allclose(half, 127, atol=2)  # 50 % black over white
    la = Image.new("LA", (8, 8), (0, 0))  # black, fully transparent
    assert (rgb_of(la) == 255).all()


def test_decode_palette_with_and_without_transparency() -> None:
    p = Image.new("P", (8, 8), 1)
    p.putpalette([0, 0, 0, 10, 20, 250] + [0] * 762)
    assert (rgb_of(p) == [10, 20, 250]).all()
    p.paste(0, (0, 0, 8, 4))
    opaque = rgb_of(p)
    assert (opaque[0] == 0).all()
    transparent = rgb_of(p, transparency=0)  # palette entry 0 is transparent (tRNS)
    assert (transparent[0] == 255).all() and (transparent[-1] == [10, 20, 250]).all()
    gif = decode_image(imagegen.encode(p, "GIF", transparency=0), 8, max_pixels=BIG)
    assert (gif[0] == 255).all()


def test_decode_cmyk_jpeg() -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red ink
    out = rgb_of(cmyk, "JPEG", quality=95)
    assert out[..., 0].min() > 220 and out[..., 1:].max() < 40


def test_decode_16bit_png_keeps_its_range() -> None:
    a = np.zeros((24, 24), np.uint16)
    a[:, 8:16] = 32768
    a[:, 16:] = 65535
    im = Image.fromarray(a)
    assert im.mode == "I;16"
    data = imagegen.encode(im, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = decode_image(data, 24, max_pixels=BIG)  # 24 px: no resampling
    assert out[:, 0].max() == 0 and (out[:, 12] == 128).all() and (out[:, 23] == 255).all()
    # A 12-bit-ish image (values up to 4095) is dark, not clipped to white.
    dim = Image.fromarray(np.full((8, 8), 4095, np.uint16))
    assert (rgb_of(dim) == 16).all()


def test_decode_32bit_int_and_float_grayscale() -> None:
    ints = Image.fromarray(np.array([[0, 65535] * 4] * 8, np.int32))
    assert ints.mode == "I"
    out = decode_image(imagegen.encode(ints, "TIFF"), 8, max_pixels=BIG)
    assert out.min() == 0 and out.max() == 255
    floats = Image.fromarray(np.full((8, 8), 0.5, np.float32))
    assert (decode_image(imagegen.encode(floats, "TIFF"), 8, max_pixels=BIG) == 128).all()
    floats = Image.fromarray(np.full((8, 8), 200.0, np.float32))  # 0..255 kept as it is
    assert (decode_image(imagegen.encode(floats, "TIFF"), 8, max_pixels=BIG) == 200).all()


def test_decode_refuses_formats_outside_the_scanned_extensions() -> None:
    # A PPM renamed .jpg: Pillow could read it, but only the listed formats are tried.
    ppm = imagegen.encode(Image.new("RGB", (8, 8)), "PPM")
    with pytest.raises(BadImage, match="not an image"):
        decode_image(ppm, 8, max_pixels=BIG)
    for fmt in ("BMP", "TIFF", "WEBP", "GIF"):
        assert rgb_of(imagegen.random_image(12, 10), fmt).shape == (8, 8, 3)


def test_decode_exif_rotated_jpeg_comes_out_upright(tmp_path: Path) -> None:
    # Stored landscape: red left half, blue right half. Orientation 6 means "rotate 90°
    # clockwise to display": upright it is a portrait with red on top and blue below.
    a = np.zeros((16, 32, 3), np.uint8)
    a[:, :16] = [255, 0, 0]
    a[:, 16:] = [0, 0, 255]
    exif = Image.Exif()
    exif[0x0112] = 6
    data = imagegen.encode(Image.fromarray(a), "JPEG", quality=95, exif=exif.tobytes())
    out = decode_image(data, 16, max_pixels=BIG).astype(int)
    assert out[2, 8, 0] > 200 and out[2, 8, 2] < 60  # top: red
    assert out[13, 8, 2] > 200 and out[13, 8, 0] < 60  # bottom: blue
    # Same as applying ImageOps.exif_transpose before decoding.
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    ref = decode_image(imagegen.encode(upright, "PNG"), 16, max_pixels=BIG).astype(int)
    assert np.abs(out - ref).max() <= 2


def test_decode_gif_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = imagegen.encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert (decode_image(data, 8, max_pixels=BIG) == [255, 0, 0]).all()


def test_decode_mpo_first_picture() -> None:
    # Phones and stereo cameras write multi-picture JPEGs, which Pillow opens as "MPO".
    pictures = [Image.new("RGB", (256, 192), c) for c in ((200, 30, 40), (0, 0, 255))]
    data = imagegen.encode(pictures[0], "MPO", save_all=True, append_images=pictures[1:])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    out = decode_image(data, 32, max_pixels=BIG).astype(int)
    assert np.abs(out - [200, 30, 40]).max() <= 3


def test_decode_large_jpeg_uses_draft_and_stays_correct() -> None:
    im = Image.new("RGB", (640, 480), (30, 120, 210))
    out = rgb_of(im, "JPEG", size=32, quality=95)
    assert np.abs(out.astype(int) - [30, 120, 210]).max() <= 3


@pytest.mark.parametrize("name", ["empty.png", "truncated.jpg", "truncated.png", "text.jpg",
                                  "bomb.png", "broken-link.png"])
def test_decode_bad_files_raise_bad_image_with_reason(tmp_path: Path, name: str) -> None:
    expected = imagegen.make_bad_files(tmp_path)
    with pytest.raises(BadImage) as err:
        decode_image(tmp_path / name, 16, max_pixels=BIG)
    assert str(err.value).startswith(expected[name])
    if name != "broken-link.png":  # the same from the bytes
        with pytest.raises(BadImage, match=expected[name]):
            decode_image((tmp_path / name).read_bytes(), 16, max_pixels=BIG)


def test_decode_refuses_images_above_the_pixel_limit_from_the_header() -> None:
    small = imagegen.encode(imagegen.random_image(48, 48), "PNG")
    with pytest.raises(BadImage, match=r"too large: 48 x 48 pixels is more than the limit of "
                                       r"1,000 \(decompression-bomb guard\)") as err:
        decode_image(small, 8, max_pixels=1000)
    assert err.value.pixels == 48 * 48
    assert decode_image(small, 8, max_pixels=48 * 48).shape == (8, 8, 3)
    # A genuine bomb: a valid 1-bit PNG of 8000 x 8000 pixels in a few kilobytes. It is
    # refused before any pixel is decoded (decoding it would take seconds).
    bomb = imagegen.big_blank_png(8000, 8000)
    assert len(bomb) < 20_000
    with pytest.raises(BadImage, match="too large: 8000 x 8000 pixels"):
        decode_image(bomb, 8, max_pixels=50_000_000)


def test_decode_pil_hard_limit_is_reported_as_too_large() -> None:
    with pytest.raises(BadImage, match="too large: 10,000,000,000 pixels") as err:
        decode_image(imagegen.png_claiming_size(100_000, 100_000), 8, max_pixels=BIG)
    assert err.value.pixels == 10**10


def test_decode_does_not_change_pillow_globals() -> None:
    from PIL import ImageFile

    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for data in (imagegen.png_claiming_size(100_000, 100_000), b"junk"):
            with pytest.raises(BadImage):
                decode_image(data, 8, max_pixels=1000)
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before


def test_decode_unreadable_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = imagegen.write_image(tmp_path / "a.png")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(decode_mod, "open", denied, raising=False)
    with pytest.raises(BadImage, match=r"cannot be read \(permission denied\)"):
        decode_image(path, 8, max_pixels=BIG)


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


def test_interrupted_build_leaves_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = imagegen.make_flat_folder(tmp_path / "d", 3)
    manifest = scan_folder(root)
    real = cache_mod.decode_with_pixels
    calls = []

    def crash_on_third(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(cache_mod, "decode_with_pixels", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        build_cache(manifest, 8, tmp_path / "cache", max_image_pixels=BIG, num_workers=1)
    assert list((tmp_path / "cache" / "images").iterdir()) == []  # no data, no sidecar
    monkeypatch.setattr(cache_mod, "decode_with_pixels", real)
    assert len(build_cache(manifest, 8, tmp_path / "cache", max_image_pixels=BIG)) == 3


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

    def disk_full(path, write):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_mod, "write_atomic", disk_full)
    with pytest.raises(DataError, match="the disk is full. .*--cache-dir"):
        build_cache(manifest, 8, tmp_path / "cache", max_image_pixels=BIG)


def test_cache_checks_free_space_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = scan_folder(imagegen.make_flat_folder(tmp_path / "d", 2))
    monkeypatch.setattr(cache_mod.shutil, "disk_usage",
                        lambda p: shutil._ntuple_diskusage(100, 99, 1))
    with pytest.raises(DataError, match=r"needs 0\.0 MB but only 0\.0 MB is free in .*images"):
        build_cache(manifest, 64, tmp_path / "cache", max_image_pixels=BIG)


def test_cache_same_result_with_one_or_many_workers(tmp_path: Path) -> None:
    root = imagegen.make_flat_folder(tmp_path / "d", 6)
    manifest = scan_folder(root)
    one = build_cache(manifest, 8, tmp_path / "c1", max_image_pixels=BIG, num_workers=1)
    many = build_cache(manifest, 8, tmp_path / "c2", max_image_pixels=BIG, num_workers=4)
    np.testing.assert_array_equal(np.asarray(one.images), np.asarray(many.images))


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
