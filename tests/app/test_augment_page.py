"""The augmentation preview shows exactly what make_pairs makes, and follows its settings."""

import numpy as np
import pytest

pytest.importorskip("PySide6")

import torch
from PIL import Image

from app.pages.augment_page import AugmentPreview, cache_size_for, pick_images, spread
from engine.config.train_config import AugmentConfig
from engine.data.augment import make_pairs, to_uint8_hwc
from engine.data.cache import decode_image
from tests.helpers.folders import make_folder

N, SIZE, CELL = 4, 32, 48
WAIT_MS = 15000


@pytest.fixture
def page(qtbot, tmp_path):
    page = AugmentPreview(num_images=N, image_size=SIZE, cell_px=CELL)
    qtbot.addWidget(page)
    with qtbot.waitSignal(page.pairs_ready, timeout=WAIT_MS):
        page.set_folder(make_folder(tmp_path / "shapes", per_class=4))
    return page


def settle(qtbot, page, *edits):
    """Apply form edits, then wait for the pairs made with all of them."""
    with qtbot.waitSignal(page.pairs_ready, timeout=WAIT_MS):
        for name, value in edits:
            page.form.set_value(name, value)


def test_grid_shows_one_row_of_three_per_image(page):
    originals, view1, view2 = page.current_pairs()
    cache = cache_size_for(SIZE)
    assert originals.shape == (N, cache, cache, 3) and originals.dtype == np.uint8
    assert view1.shape == view2.shape == (N, SIZE, SIZE, 3)
    assert page.grid.grid_layout.rowCount() == N + 1  # a title row, then the images
    for r in range(1, N + 1):
        for c in range(3):
            pixmap = page.grid.grid_layout.itemAtPosition(r, c).widget().pixmap()
            assert not pixmap.isNull() and pixmap.width() == CELL
    paths = page.image_paths()
    assert {p.split("/")[-2] for p in paths} == {"circles", "squares"}  # spread over classes
    for path, original in zip(paths, originals):
        assert np.array_equal(original, decode_image(path, cache, max_pixels=10**9))


def test_pairs_are_what_make_pairs_makes(qtbot, page):
    """The product promise: the preview is the trainer's augmentation, seed for seed."""
    for edits in ([], [("jitter_strength", "0.5"), ("blur_p", "1"), ("solarize_p", "0.5")]):
        if edits:
            settle(qtbot, page, *edits)
        originals, view1, view2 = page.current_pairs()
        batch = torch.from_numpy(originals).permute(0, 3, 1, 2).contiguous()
        g = torch.Generator().manual_seed(page.seed)
        want1, want2 = make_pairs(batch, page.augment_config(), SIZE, g, normalize=False)
        assert np.array_equal(view1, to_uint8_hwc(want1))
        assert np.array_equal(view2, to_uint8_hwc(want2))


def test_same_seed_same_pairs_new_pairs_differ(qtbot, page):
    first = page.current_pairs()
    with qtbot.waitSignal(page.pairs_ready, timeout=WAIT_MS):
        page.set_seed(page.seed)
    again = page.current_pairs()
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    with qtbot.waitSignal(page.pairs_ready, timeout=WAIT_MS):
        page.new_button.click()
    new = page.current_pairs()
    assert np.array_equal(first[0], new[0])  # same images
    assert not np.array_equal(first[1], new[1]) and not np.array_equal(first[2], new[2])


def test_settings_change_the_pairs(qtbot, page):
    settle(qtbot, page, ("grayscale_p", "1"))
    _, view1, view2 = page.current_pairs()
    for v in (view1, view2):
        assert np.array_equal(v[..., 0], v[..., 1]) and np.array_equal(v[..., 1], v[..., 2])
    assert page.augment_config().grayscale_p == 1.0

    # Whole image, no colour change: a flipped view is the resized original, mirrored.
    whole = [("grayscale_p", "0"), ("jitter_p", "0"), ("blur_p", "0"), ("crop_scale_min", "1"),
             ("crop_ratio_min", "1"), ("crop_ratio_max", "1")]
    settle(qtbot, page, *whole, ("flip_p", "0"))
    originals, plain, _ = page.current_pairs()
    settle(qtbot, page, ("flip_p", "1"))
    _, flipped, _ = page.current_pairs()
    assert np.array_equal(flipped, plain[:, :, ::-1])
    for original, view in zip(originals, flipped):
        resized = np.asarray(Image.fromarray(original).resize((SIZE, SIZE), Image.BILINEAR))
        error = np.abs(resized[:, ::-1].astype(int) - view.astype(int)).mean()
        assert error < 6, error  # roi_align's area average vs PIL's antialiased bilinear


def test_image_size_and_preset(qtbot, page):
    with qtbot.waitSignal(page.pairs_ready, timeout=WAIT_MS):
        page.size_box.setValue(24)
    originals, view1, _ = page.current_pairs()
    assert view1.shape[1:3] == (24, 24) and originals.shape[1] == cache_size_for(24)
    with qtbot.waitSignal(page.pairs_ready, timeout=WAIT_MS):
        page.preset.setCurrentText("MoCo v2")
    cfg = page.augment_config()
    assert cfg.crop_scale_min == 0.2 and cfg.jitter_strength == 0.5


def test_byol_preset_fills_the_second_view_settings_and_previews_them(qtbot, page):
    assert page.form.is_shown("blur_p2") and page.form.is_shown("solarize_p2")
    with qtbot.waitSignal(page.pairs_ready, timeout=WAIT_MS):
        page.preset.setCurrentText("BYOL")
    cfg = page.augment_config()
    assert (cfg.blur_p, cfg.blur_p2, cfg.solarize_p, cfg.solarize_p2) == (1.0, 0.1, 0.0, 0.2)
    originals, view1, view2 = page.current_pairs()
    batch = torch.from_numpy(originals).permute(0, 3, 1, 2).contiguous()
    want1, want2 = make_pairs(batch, cfg, SIZE, torch.Generator().manual_seed(page.seed),
                              normalize=False)
    assert np.array_equal(view1, to_uint8_hwc(want1))
    assert np.array_equal(view2, to_uint8_hwc(want2))
    assert page.engine_settings()["blur_p2"] == 0.1  # a trainer gets them as flags
    with qtbot.waitSignal(page.pairs_ready, timeout=WAIT_MS):
        page.preset.setCurrentText("SimCLR")
    cfg = page.augment_config()
    assert cfg.blur_p2 is None and cfg.solarize_p2 is None  # back to "the same as view 1"
    assert "blur_p2" not in page.engine_settings()


def test_invalid_setting_keeps_the_last_pairs_and_says_why(qtbot, page):
    before = page.current_pairs()
    with qtbot.assertNotEmitted(page.pairs_ready, wait=400):
        page.form.set_value("crop_scale_max", "0.05")  # below crop_scale_min (0.08)
    assert page.current_pairs() is before
    assert "crop scale max" in page.status.text()
    assert "must not exceed crop_scale_max" in page.status.text()
    settle(qtbot, page, ("crop_scale_max", "0.5"))
    assert page.augment_config().crop_scale_max == 0.5


def test_save_png_matches_the_grid(page, tmp_path):
    path = tmp_path / "pairs.png"
    page.save_png(path)
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == (3 * CELL + 2 * 4, N * CELL + (N - 1) * 4)
        assert im.size == (page.grid_image().width(), page.grid_image().height())


def test_spread_takes_classes_in_turn():
    a = [f"a{i}" for i in range(10)]
    b = [f"b{i}" for i in range(2)]
    picked = spread([a, b], 5)
    assert sorted(p for p in picked if p[0] == "b") == ["b0", "b1"]
    assert [p for p in picked if p[0] == "a"] == ["a0", "a4", "a9"]
    assert spread([a, b], 100) == sorted(a) + b
    assert spread([], 3) == []


def test_a_scan_of_100k_images_is_previewed_at_once():
    """The window hands the preview every scan in the GUI thread: 100,000 records are
    grouped by class without a path object each (4.7 s on a busy two-core machine)."""
    import time
    from pathlib import Path

    from engine.data.scan import ImageRecord, Manifest

    rng = np.random.default_rng(0)
    images = [ImageRecord(f"c{i % 3}/sub/{rng.integers(10**9):09d}.jpg", i % 3, 1, "0")
              for i in range(100_000)]
    manifest = Manifest("/data/photos", ["c0", "c1", "c2"], images)
    start = time.perf_counter()
    picked = pick_images(manifest, 8)
    seconds = time.perf_counter() - start
    by_class: dict = {}
    for r in images:  # the plain way: every absolute path made, then spread
        by_class.setdefault(r.label, []).append(str(Path(manifest.root) / r.path))
    assert picked == spread(list(by_class.values()), 8)
    assert seconds < 1.0, seconds


def test_default_config_is_simclrs(qtbot):
    page = AugmentPreview()
    qtbot.addWidget(page)
    assert page.augment_config() == AugmentConfig()
    assert page.image_size() == 64 and page.status.text()


def test_only_the_newest_request_is_shown(qtbot, page):
    """Whenever the grid changes, it shows the pairs of the seed set last, never older ones."""
    def expected_view1():
        originals = page.current_pairs()[0]
        batch = torch.from_numpy(originals).permute(0, 3, 1, 2).contiguous()
        g = torch.Generator().manual_seed(page.seed)
        return to_uint8_hwc(make_pairs(batch, page.augment_config(), SIZE, g,
                                       normalize=False)[0])

    shown = []
    page.pairs_ready.connect(
        lambda: shown.append(np.array_equal(page.current_pairs()[1], expected_view1())))
    for seed in (11, 12, 13, 14):
        page.set_seed(seed)
        qtbot.wait(110)  # just past the debounce: requests overlap and the older go stale
    qtbot.waitUntil(lambda: bool(shown), timeout=WAIT_MS)
    qtbot.wait(300)
    assert all(shown) and page.seed == 14
    assert np.array_equal(page.current_pairs()[1], expected_view1())


def test_a_scanned_folder_shows_the_scans_count_and_no_file_it_skipped(qtbot, tmp_path):
    """Given the Data page's scan, the preview shows that scan's count and skipped-file
    total, and previews none of the files it skipped (a truncated PNG included)."""
    from engine.data.scan import scan_folder
    from tests.helpers.folders import make_bad_files

    root = make_folder(tmp_path / "shapes", per_class=4)
    bad = make_bad_files(root / "squares")
    manifest = scan_folder(root)
    page = AugmentPreview(num_images=20, image_size=SIZE, cell_px=CELL)
    qtbot.addWidget(page)
    with qtbot.waitSignal(page.pairs_ready, timeout=WAIT_MS):
        page.set_manifest(manifest)
    text = page.status.text()
    assert text.startswith(f"8 of 8 images in the folder ({len(bad)} files skipped: see the "
                           "Data page);"), text
    assert "skipped 1" not in text and not set(page._shown_paths) & {
        str(root / "squares" / name) for name in bad}
