"""The cache formats: a JPEG cache and no cache give the raw cache's batches (within JPEG
error, or exactly), a half-built JPEG cache resumes, the automatic format follows the free
space, a format set by hand that does not fit is refused, and a run trains with each."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config.train_config import TrainConfig
from engine.data import cache as cache_mod
from engine.data.cache import build_cache, cache_paths, jpeg_bytes_per_image, plan_cache
from engine.data.cache_format import choose_cache, open_cache
from engine.data.decode import decode_image
from engine.data.file_rows import uncached
from engine.data.jpeg_cache import JpegImages, decode_jpeg_cuda, index_path
from engine.data.loader import BatchLoader
from engine.data.scan import DataError, scan_folder
from tests.helpers import folders as imagegen
from tests.helpers.data import (
    BIG,
    isolated_home,  # noqa: F401 (autouse fixture)
)
from tests.helpers.faults import keep_torch_threads  # noqa: F401 (autouse fixture)
from tests.helpers.training import events_of, run

CPU = torch.device("cpu")
# torchvision 0.29 deprecates its codecs (the engine silences this; pytest resets filters)
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Two classes of smooth random images with fine noise (they compress like photos)."""
    return imagegen.make_class_folder(tmp_path_factory.mktemp("formats") / "d",
                                      {"a": 12, "b": 12}, width=40, height=30)


def _mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_jpeg_and_no_cache_give_the_raw_cache_images(photos, tmp_path):
    manifest = scan_folder(photos)
    raw = build_cache(manifest, 24, tmp_path / "cache", max_image_pixels=BIG)
    jpeg = build_cache(manifest, 24, tmp_path / "cache", max_image_pixels=BIG, fmt="jpeg")
    none = uncached(manifest, 24, max_image_pixels=BIG)
    assert jpeg.format == "jpeg" and none.format == "none" and raw.format == "raw"
    assert jpeg.images.shape == raw.images.shape == none.images.shape == (24, 24, 24, 3)
    assert jpeg.manifest == raw.manifest and (jpeg.labels == raw.labels).all()
    for i in range(len(raw)):  # every image within JPEG error of the raw cache's
        assert _mean_abs_diff(jpeg.images[i], raw.images[i]) < 4
    rows = np.array([0, 5, 6, 23])
    np.testing.assert_array_equal(none.images[rows], raw.images[rows])  # the same decode
    # the index: each image its own JPEG, the data file exactly their concatenation
    sizes = np.diff(np.concatenate([[0], jpeg.images.ends]))
    assert (sizes > 0).all() and jpeg.path.stat().st_size == sizes.sum()
    assert index_path(jpeg.path).stat().st_size == 8 * len(raw)
    # (at 24 px a JPEG's own tables, about 600 bytes, are much of its size)
    assert jpeg.path.stat().st_size < raw.path.stat().st_size
    # the two CPU decoders and any number of threads agree
    pil = JpegImages(jpeg.images.data, jpeg.images.ends, 24, decoder="pil")
    assert _mean_abs_diff(pil[rows], jpeg.images[rows]) < 1
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        np.testing.assert_array_equal(jpeg.images.decode_rows(rows, pool, 3), jpeg.images[rows])


def test_every_format_gives_the_same_batches_in_the_same_order(photos, tmp_path):
    manifest = scan_folder(photos)
    caches = {fmt: build_cache(manifest, 20, tmp_path / "cache", max_image_pixels=BIG, fmt=fmt)
              for fmt in ("raw", "jpeg")}
    caches["none"] = uncached(manifest, 20, max_image_pixels=BIG)
    batches = {}
    for fmt, cache in caches.items():
        loader = BatchLoader(cache, 8, seed=3, device=CPU, decode_workers=2)
        batches[fmt] = [loader.batch(e, b) for e in range(2) for b in range(3)]
        # a loader started at any step (a resumed run) gets that step's batch
        again = BatchLoader(cache, 8, seed=3, device=CPU, decode_workers=1)
        torch.testing.assert_close(again.batch(1, 2), batches[fmt][-1], rtol=0, atol=0)
        loader.close()
        again.close()
    for raw, jpeg, none in zip(batches["raw"], batches["jpeg"], batches["none"]):
        assert raw.shape == (8, 3, 20, 20) and raw.dtype == torch.uint8
        assert jpeg.shape == raw.shape and jpeg.dtype == torch.uint8
        torch.testing.assert_close(none, raw, rtol=0, atol=0)
        assert _mean_abs_diff(jpeg.numpy(), raw.numpy()) < 4


def test_a_half_built_jpeg_cache_resumes(photos, tmp_path, monkeypatch):
    manifest = scan_folder(photos)
    clean = build_cache(manifest, 16, tmp_path / "clean", max_image_pixels=BIG, fmt="jpeg",
                        num_workers=1)
    real = cache_mod.decode_with_pixels
    calls: list[int] = []

    def crash_on_tenth(*args):
        calls.append(1)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(cache_mod, "SAVE_EVERY_S", 0.0)
    monkeypatch.setattr(cache_mod, "decode_with_pixels", crash_on_tenth)
    with pytest.raises(KeyboardInterrupt):
        build_cache(manifest, 16, tmp_path / "cache", max_image_pixels=BIG, fmt="jpeg",
                    num_workers=1)
    data_path, meta_path = cache_paths(manifest, 16, tmp_path / "cache", "jpeg")
    assert not data_path.exists() and not meta_path.exists()
    plan = plan_cache(manifest, 16, tmp_path / "cache", max_image_pixels=BIG, fmt="jpeg",
                      num_workers=1)
    assert plan.resume_from == 9 and plan.written == int(clean.images.ends[8])
    # the raw cache of the same images is another cache: nothing to resume there
    assert plan_cache(manifest, 16, tmp_path / "cache", max_image_pixels=BIG,
                      num_workers=1).resume_from == 0

    decoded: list[int] = []
    monkeypatch.setattr(cache_mod, "decode_with_pixels", lambda *a: decoded.append(1) or real(*a))
    told = []
    cache = build_cache(manifest, 16, tmp_path / "cache", max_image_pixels=BIG, fmt="jpeg",
                        num_workers=1, announce=told.append)
    assert len(decoded) == 24 - 9 and "resuming after 9 decoded images" in told[0].describe()
    assert data_path.read_bytes() == clean.path.read_bytes()
    assert index_path(data_path).read_bytes() == index_path(clean.path).read_bytes()
    assert sorted(p.name for p in data_path.parent.iterdir()) == sorted(
        [data_path.name, meta_path.name, index_path(data_path).name])
    # complete: reused, its size exact
    again = plan_cache(manifest, 16, tmp_path / "cache", max_image_pixels=BIG, fmt="jpeg")
    assert again.reuse and again.bytes == data_path.stat().st_size and again.sample == 0
    np.testing.assert_array_equal(cache.images[np.arange(24)], clean.images[np.arange(24)])


def test_the_automatic_format_follows_the_free_space(photos, tmp_path, monkeypatch):
    manifest = scan_folder(photos)
    n, side, smallest = len(manifest.images), 24, 20
    per_image, sampled = jpeg_bytes_per_image(manifest, side, BIG)
    assert sampled == n  # fewer images than the sample: all of them
    # the estimate against the real thing
    real = build_cache(manifest, side, tmp_path / "real", max_image_pixels=BIG, fmt="jpeg")
    assert per_image * n == pytest.approx(real.path.stat().st_size, rel=0.01)

    def choose(free: int, fmt: str = "auto"):
        monkeypatch.setattr(cache_mod, "_free_bytes", lambda path: free)
        return choose_cache(manifest, fmt, side, tmp_path / "cache", max_image_pixels=BIG,
                            smallest=smallest)

    plenty = choose(10**12)
    assert plenty.format == "raw" and plenty.size == side and "fits" in plenty.reason
    # room for a raw cache at 22 px, not 24: the side shrinks, the format stays raw
    shrunk = choose(int(n * 22 * 22 * 3 / 0.9) + 1)
    assert (shrunk.format, shrunk.size) == ("raw", 22)
    # no raw cache fits, even at the image size; the estimated JPEG cache does
    jpeg_only = int(per_image * n / 0.9) + 1000
    assert jpeg_only < n * smallest * smallest * 3
    jpeg = choose(jpeg_only)
    assert (jpeg.format, jpeg.size) == ("jpeg", side) and jpeg.sample == n
    assert "does not fit" in jpeg.reason and f"estimated from {n} images" in jpeg.reason
    assert "JPEG cache" in jpeg.describe() and jpeg.fits
    none = choose(1000)
    assert none.format == "none" and none.to_write == 0 and "decodes the original" in none.reason
    assert "no cache" in none.describe()
    # set by hand: refused with what to do instead, where they do not fit
    with pytest.raises(DataError, match=r"JPEG cache needs about .* --cache-format none"):
        choose(1000, "jpeg")
    with pytest.raises(DataError, match=r"needs .* --cache-format jpeg"):
        choose(jpeg_only, "raw")
    assert choose(1000, "none").format == "none"
    opened = open_cache(none, manifest, tmp_path / "cache", max_image_pixels=BIG)
    assert opened.format == "none" and len(opened) == n


def test_old_settings_without_a_cache_format_load_as_auto(tmp_path):
    values = TrainConfig(data="x").to_dict()
    assert values.pop("cache_format") == "auto"
    (tmp_path / "config.json").write_text(json.dumps(values))
    from engine.config.train_config import load_config_file

    cfg = TrainConfig.from_dict(load_config_file(tmp_path / "config.json"))
    assert cfg.cache_format == "auto"
    with pytest.raises(Exception, match="cache_format"):
        TrainConfig.from_dict({**values, "cache_format": "zip"})


@pytest.mark.parametrize("fmt", ["raw", "jpeg", "none"])
def test_a_short_run_trains_with_each_format(photos, tmp_path, fmt):
    result = run({"data": str(photos), "cache_format": fmt, "max_steps": 2, "epochs": 1,
                  "num_threads": 1}, tmp_path)
    assert result.status == "finished" and result.step == 2
    events = events_of(result.run_dir)
    plans = [e for e in events if e["type"] == "cache_plan"]
    assert plans[0]["format"] == fmt and plans[0]["reason"] == f"--cache-format {fmt}"
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["cache_format"] == fmt
    steps = [e for e in events if e["type"] == "step"]
    assert len(steps) == 2 and all(np.isfinite(e["loss"]) for e in steps)
    # the kNN monitor and the live map read their sample from the same images
    assert [e["type"] for e in events].count("eval") == 1
    assert [e["type"] for e in events].count("live_map") == 1
    # embedding the run reads the images as training did: no cache of another format is made
    from engine.evaluate.embed import embed_run

    made = sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file())
    emb = embed_run(result.run_dir, cache_dir=tmp_path / "cache", device="cpu")
    assert emb.features.shape[0] == len(scan_folder(photos).images)
    assert sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()) == made


def test_a_run_takes_a_jpeg_cache_when_a_raw_one_does_not_fit(photos, tmp_path, monkeypatch):
    manifest = scan_folder(photos)
    per_image, _ = jpeg_bytes_per_image(manifest, 40, BIG)
    free = int(per_image * len(manifest.images) / 0.9) + 1000
    assert free < len(manifest.images) * 40 * 40 * 3  # no room for a raw cache
    monkeypatch.setattr(cache_mod, "_free_bytes", lambda path: free)
    result = run({"data": str(photos), "cache_size": 40, "max_steps": 2, "epochs": 1},
                 tmp_path)
    assert result.status == "finished"
    events = events_of(result.run_dir)
    plan = next(e for e in events if e["type"] == "cache_plan")
    assert plan["format"] == "jpeg" and "does not fit" in plan["reason"]
    assert plan["reason"] in plan["message"]
    warnings = [e["message"] for e in events if e["type"] == "warning"]
    assert any(w.startswith("cache_format jpeg: a raw cache") for w in warnings), warnings
    start = next(e for e in events if e["type"] == "run_start")
    assert start["config"]["cache_format"] == "jpeg"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_jpeg_cache_decodes_on_cuda(photos, tmp_path):
    manifest = scan_folder(photos)
    jpeg = build_cache(manifest, 24, tmp_path / "cache", max_image_pixels=BIG, fmt="jpeg")
    rows = np.arange(10)
    gpu = decode_jpeg_cuda(jpeg.images, rows, torch.device("cuda"))
    assert gpu.shape == (10, 3, 24, 24) and gpu.device.type == "cuda"
    cpu = torch.from_numpy(jpeg.images[rows]).permute(0, 3, 1, 2)
    assert _mean_abs_diff(gpu.cpu().numpy(), cpu.numpy()) < 2
    loader = BatchLoader(jpeg, 8, seed=0, device=torch.device("cuda"))
    assert loader.gpu_decode
    batch = loader.batch(0, 0)
    reference = decode_image(photos / manifest.images[int(loader.indices(0, 0)[0])].path, 24,
                             max_pixels=BIG)
    assert _mean_abs_diff(batch[0].permute(1, 2, 0).cpu().numpy(), reference) < 4
    loader.close()


def test_the_plan_shows_each_format_and_the_one_it_would_choose(photos, tmp_path, monkeypatch):
    from engine.training.plan import plan_run, plan_text
    from tests.helpers.settings import TINY

    manifest = scan_folder(photos)
    n = len(manifest.images)
    per_image, _ = jpeg_bytes_per_image(manifest, 40, BIG)
    free = int(per_image * n / 0.9) + 1000  # a JPEG cache fits, a raw one does not
    monkeypatch.setattr(cache_mod, "_free_bytes", lambda path: free)
    cfg = TrainConfig.from_dict({**TINY, "data": str(photos), "cache_size": 40})
    r = plan_run(cfg, cache_dir=tmp_path / "cache", seconds=1)
    c = r["cache"]
    assert c["format"] == "jpeg" and c["fits"] and "does not fit" in c["reason"]
    assert c["formats"]["raw"] == {"bytes": n * 40 * 40 * 3, "fits": False}
    assert c["formats"]["jpeg"]["bytes"] == pytest.approx(per_image * n, abs=1)
    assert c["formats"]["jpeg"]["estimated_from"] == n and c["formats"]["none"]["bytes"] == 0
    text = plan_text(r)
    assert "cache formats at 40 px: raw" in text and "(does not fit)" in text
    assert "chosen: jpeg" in text
    # a format set by hand that does not fit: the plan says so instead of failing
    hand = plan_run(TrainConfig.from_dict({**TINY, "data": str(photos), "cache_size": 40,
                                           "cache_format": "raw"}),
                    cache_dir=tmp_path / "cache", seconds=1)
    assert not hand["cache"]["fits"] and "--cache-format jpeg" in hand["cache"]["refused"]
    assert "refused: " in plan_text(hand)


@pytest.mark.parametrize("fmt", ["jpeg", "none"])
def test_a_run_stopped_and_resumed_matches_an_uninterrupted_one(photos, tmp_path, fmt):
    from engine.run.checkpoint import load_checkpoint
    from engine.run.events import EventWriter
    from engine.training.loop import train

    values = {"data": str(photos), "cache_format": fmt, "epochs": 2, "seed": 3}
    whole = run(values, tmp_path / "a")
    calls: list[int] = []
    part = run(values, tmp_path / "b", should_stop=lambda: calls.append(1) or len(calls) > 4)
    assert part.status == "stopped" and part.step == 4  # within the second epoch (3 a epoch)
    resumed = train(TrainConfig(), resume=part.run_dir, cache_dir=tmp_path / "b" / "cache",
                    events=EventWriter(None))
    assert resumed.status == "finished" and resumed.step == whole.step == 6
    a = load_checkpoint(whole.run_dir / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")["model"]
    for key in a:  # bit for bit: the same batches in the same order, decoded the same way
        assert torch.equal(a[key], b[key]), key


def test_cache_rows_are_named_as_numpy_indexes_an_array():
    from engine.data.jpeg_cache import rows_of

    reference = np.arange(10)
    for key in (3, -1, np.int64(7), slice(2, 8, 2), slice(None), slice(-3, None),
                np.array([0, 9, -2]), [1, 1, 4], []):
        rows, single = rows_of(key, 10)
        np.testing.assert_array_equal(rows, np.atleast_1d(reference[key]))
        assert single == (np.ndim(reference[key]) == 0)
    for bad in (10, -11, [0, 10]):
        with pytest.raises(IndexError):
            rows_of(bad, 10)
