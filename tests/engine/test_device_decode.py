"""The cache's device decoder (engine.data.device_decode) against the CPU decoder, Pillow's
own decode and resize (engine.data.decode.decode_image), run here with decode_jpeg on the CPU:
the same code runs on a CUDA device with nvJPEG."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from engine.data.decode import decode_image
from engine.data.device_decode import DecodeRace, decode_batch_on_device, raced
from engine.data.scan import hash_bytes
from tests.helpers.folders import encode, random_image

MAX_PIXELS = 10**8


def _photo(w: int, h: int, seed: int) -> Image.Image:
    """Smooth content, as photos are at the scale of a JPEG block."""
    return random_image(w, h, seed=seed).filter(ImageFilter.GaussianBlur(1.5))


def _write(tmp_path: Path, name: str, data: bytes) -> tuple[Path, str]:
    path = tmp_path / name
    path.write_bytes(data)
    return path, hash_bytes(data)


def _pixels(decoded, size: int) -> np.ndarray:
    return np.frombuffer(decoded[0], np.uint8).reshape(size, size, 3).astype(int)


def _not_called(path: Path, sha: str):
    raise AssertionError(f"{path.name} went to the CPU path")


@pytest.mark.parametrize("w,h", [(97, 61), (33, 150), (64, 64), (300, 200), (640, 480)])
@pytest.mark.parametrize("size", [32, 64])
def test_device_decode_matches_pillow_within_a_few_grey_levels(tmp_path, w, h, size):
    # 4:4:4 JPEGs: the decoders agree on the pixels, so what is left is the resize (the
    # same box and kernel as Pillow's; draft reduction by block averages)
    for mode in ("RGB", "L"):
        data = encode(_photo(w, h, seed=w * h).convert(mode), "JPEG", quality=90, subsampling=0)
        entry = _write(tmp_path, f"{w}x{h}{mode}.jpg", data)
        [got] = decode_batch_on_device([entry], size, MAX_PIXELS, torch.device("cpu"),
                                       _not_called)
        assert got[1] == "" and got[2] == w * h
        diff = np.abs(_pixels(got, size) - decode_image(data, size, max_pixels=MAX_PIXELS))
        assert diff.mean() < 0.6 and diff.max() <= 3, (mode, diff.mean(), diff.max())


def test_subsampled_chroma_at_draft_scale_stays_close(tmp_path):
    # 4:2:0 decoded at 1/2 scale by libjpeg treats chroma its own way: a little further
    data = encode(_photo(300, 200, seed=3), "JPEG", quality=90, subsampling=2)
    entry = _write(tmp_path, "sub.jpg", data)
    [got] = decode_batch_on_device([entry], 64, MAX_PIXELS, torch.device("cpu"), _not_called)
    diff = np.abs(_pixels(got, 64) - decode_image(data, 64, max_pixels=MAX_PIXELS))
    assert diff.mean() < 3.5


def test_exif_orientation_is_applied(tmp_path):
    im = _photo(80, 40, seed=5)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    data = encode(im, "JPEG", quality=95, subsampling=0, exif=exif.tobytes())
    entry = _write(tmp_path, "rotated.jpg", data)
    [got] = decode_batch_on_device([entry], 32, MAX_PIXELS, torch.device("cpu"), _not_called)
    reference = decode_image(data, 32, max_pixels=MAX_PIXELS)
    unrotated = decode_image(encode(im, "JPEG", quality=95, subsampling=0), 32,
                             max_pixels=MAX_PIXELS)
    assert np.abs(_pixels(got, 32) - reference).mean() < 0.6
    assert np.abs(_pixels(got, 32) - unrotated).mean() > 5  # the rotation changed it


def test_everything_else_goes_to_the_cpu_path_in_order(tmp_path):
    photo = _photo(60, 40, seed=1)
    good = _write(tmp_path, "good.jpg", encode(photo, "JPEG", quality=90))
    png = _write(tmp_path, "image.png", encode(photo, "PNG"))
    cmyk = _write(tmp_path, "cmyk.jpg", encode(photo.convert("CMYK"), "JPEG"))
    truncated = _write(tmp_path, "cut.jpg", encode(photo, "JPEG")[:200])
    big = _write(tmp_path, "big.jpg", encode(_photo(200, 200, seed=2), "JPEG"))
    changed = (_write(tmp_path, "changed.jpg", encode(photo, "JPEG"))[0], "0" * 32)
    entries = [good, png, cmyk, truncated, big, changed]
    sent: list[str] = []

    def cpu(path: Path, sha: str):
        sent.append(path.name)
        return None, f"cpu:{path.name}", None

    got = decode_batch_on_device(entries, 16, 100 * 100, torch.device("cpu"), cpu)
    assert sent == ["image.png", "cmyk.jpg", "cut.jpg", "big.jpg", "changed.jpg"]
    assert got[0][0] is not None and got[0][1] == ""
    assert [g[1] for g in got[1:]] == [f"cpu:{name}" for name in sent]


def test_a_file_the_device_refuses_is_decoded_by_the_cpu(tmp_path, monkeypatch):
    import torchvision.io

    entries = [_write(tmp_path, f"{i}.jpg", encode(_photo(40, 40, seed=i), "JPEG"))
               for i in range(3)]

    def refuse(*args, **kwargs):
        raise RuntimeError("nvjpeg: unsupported")

    monkeypatch.setattr(torchvision.io, "decode_jpeg", refuse)
    got = decode_batch_on_device(entries, 16, MAX_PIXELS, torch.device("cpu"),
                                 lambda path, sha: (b"x", "", 1))
    assert got == [(b"x", "", 1)] * 3


def _fake_sides(cpu_s: float, device_s: float, log: list[str]):
    def cpu(records):
        for r in records:
            time.sleep(cpu_s)
            log.append(f"c{r}")
            yield (bytes([r % 256]), "", r)

    def device(records):
        time.sleep(device_s * len(records))
        log.extend(f"d{r}" for r in records)
        return [(bytes([r % 256]), "", r) for r in records]

    return cpu, device


@pytest.mark.parametrize("cpu_s,device_s,winner", [(0.002, 0.0001, "device"),
                                                   (0.0001, 0.002, "cpu")])
def test_the_race_keeps_order_and_the_faster_side(cpu_s, device_s, winner):
    records = list(range(300))
    log: list[str] = []
    cpu, device = _fake_sides(cpu_s, device_s, log)
    told: list[DecodeRace] = []
    out = list(raced(records, 20, cpu, device, piece=10, on_decided=told.append))
    assert [item[2] for item in out] == records  # every image once, in order
    assert len(told) == 1 and told[0].winner == winner
    rest = log[-100:]
    assert all(entry.startswith("d" if winner == "device" else "c") for entry in rest)
    assert "images/s" in told[0].describe()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_decode_matches_the_cpu_decode_jpeg_path(tmp_path):
    entries = [_write(tmp_path, f"{i}.jpg",
                      encode(_photo(300 + i, 200, seed=i), "JPEG", quality=90, subsampling=0))
               for i in range(8)]
    on_cpu = decode_batch_on_device(entries, 64, MAX_PIXELS, torch.device("cpu"), _not_called)
    on_gpu = decode_batch_on_device(entries, 64, MAX_PIXELS, torch.device("cuda"), _not_called)
    for a, b in zip(on_cpu, on_gpu):
        assert np.abs(_pixels(a, 64) - _pixels(b, 64)).max() <= 2


def test_a_cache_build_races_the_device_and_keeps_the_images(tmp_path, monkeypatch):
    """The build's race end to end, with decode_jpeg on the CPU standing in for the GPU: the
    cache holds every image in order, close to a CPU-only build, and says how it decided."""
    from engine.data import device_decode
    from engine.data.cache import build_cache
    from engine.data.scan import scan_folder

    folder = tmp_path / "photos"
    for i in range(48):
        path = folder / f"c{i % 2}" / f"{i:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(_photo(90 + i, 70, seed=i), "JPEG", quality=90, subsampling=0))
    (folder / "c0" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    manifest = scan_folder(folder, verify=False)  # the broken file reaches the build
    monkeypatch.setattr(device_decode, "device_decode_available", lambda device: True)
    monkeypatch.setattr(device_decode, "race_sample", lambda total: 8)
    monkeypatch.setattr(device_decode, "DEVICE_BATCH", 8)
    messages: list[str] = []
    raced_cache = build_cache(manifest, 32, tmp_path / "raced", max_image_pixels=MAX_PIXELS,
                              num_workers=1, decode_device="cpu",
                              progress=lambda d, t, m: messages.append(m))
    plain = build_cache(manifest, 32, tmp_path / "plain", max_image_pixels=MAX_PIXELS,
                        num_workers=1)
    assert [r.path for r in raced_cache.manifest.images] == \
        [r.path for r in plain.manifest.images]
    assert [s.path for s in raced_cache.manifest.skipped] == ["c0/broken.jpg"]
    diff = np.abs(np.asarray(raced_cache.images, int) - np.asarray(plain.images, int))
    assert diff.mean() < 0.6 and diff.max() <= 3
    assert any("images/s" in m and "decodes the rest" in m for m in messages)
