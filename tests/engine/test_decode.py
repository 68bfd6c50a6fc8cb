"""Decoding one image: every colour mode, orientation and size, and bad files with reasons."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from engine.data import decode as decode_mod
from engine.data.cache import BadImage, decode_image
from tests.helpers import folders as imagegen
from tests.helpers.data import (
    BIG,
    isolated_home,  # noqa: F401 (autouse fixture)
    rgb_of,
)

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


