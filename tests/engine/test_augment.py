"""Batched per-sample augmentations, checked against torchvision applied sample by sample."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import RandomResizedCrop

from engine.config.train_config import AugmentConfig, augment_preset
from engine.data import augment as A

# Every random operation off; crops are the whole (square) image.
OFF = AugmentConfig(crop_scale_min=1.0, crop_scale_max=1.0, crop_ratio_min=1.0,
                    crop_ratio_max=1.0, flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0,
                    solarize_p=0.0)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def smooth_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """uint8 (n, 3, size, size) smooth colour fields: resampling differences stay small."""
    low = torch.rand(n, 3, 5, 5, generator=gen(seed))
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic",
                                        align_corners=False)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def rand01(n: int = 6, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=gen(seed))


# --- per-sample operations vs torchvision ----------------------------------------------------

@pytest.mark.parametrize("ours,theirs", [
    (A.adjust_brightness, TF.adjust_brightness), (A.adjust_contrast, TF.adjust_contrast),
    (A.adjust_saturation, TF.adjust_saturation)])
def test_colour_ops_match_torchvision_per_sample(ours, theirs):
    x = rand01(n=8)
    factors = torch.cat([torch.tensor([0.0, 1.0, 1.8]),
                         torch.empty(5).uniform_(0.0, 2.0, generator=gen(1))])
    out = ours(x, factors)
    assert out.shape == x.shape
    for i, f in enumerate(factors.tolist()):
        torch.testing.assert_close(out[i], theirs(x[i], f), atol=1e-5, rtol=0)


def test_hue_matches_torchvision_per_sample():
    x = rand01(n=8)
    x[0] = 0.5  # gray: hue undefined, must stay gray
    x[1, :, :4] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)  # saturated primaries
    x[1, :, 4:8] = torch.tensor([0.0, 1.0, 1.0]).view(3, 1, 1)
    shifts = torch.cat([torch.tensor([0.3, -0.5, 0.5, 0.0]),
                        torch.empty(4).uniform_(-0.5, 0.5, generator=gen(2))])
    out = A.adjust_hue(x, shifts)
    for i, s in enumerate(shifts.tolist()):
        torch.testing.assert_close(out[i], TF.adjust_hue(x[i], s), atol=1e-5, rtol=0)


def test_grayscale_and_solarize_match_torchvision():
    x = rand01(n=3, size=20)
    torch.testing.assert_close(A.grayscale(x), TF.rgb_to_grayscale(x), atol=1e-6, rtol=0)
    for t in (0.0, 0.3, 0.5, 1.0):
        torch.testing.assert_close(A.solarize(x, t), TF.solarize(x, t), atol=0, rtol=0)


@pytest.mark.parametrize("kernel", [3, 5, 9])
def test_gaussian_blur_matches_torchvision_per_sample(kernel):
    x = rand01(n=5, size=20)
    sigmas = torch.cat([torch.tensor([0.1, 2.0]),
                        torch.empty(3).uniform_(0.1, 2.0, generator=gen(kernel))])
    out = A.gaussian_blur(x, sigmas, kernel)
    for i, s in enumerate(sigmas.tolist()):
        ref = TF.gaussian_blur(x[i], [kernel, kernel], [s, s])
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)
    kernels = A.gaussian_kernels(sigmas, kernel)
    torch.testing.assert_close(kernels.sum(1), torch.ones(5))


def test_gaussian_blur_refuses_a_kernel_wider_than_the_image():
    with pytest.raises(ValueError, match="too large"):
        A.gaussian_blur(rand01(n=1, size=4), torch.tensor([1.0]), 9)


# --- random resized crop ---------------------------------------------------------------------

def test_crop_resize_identity_is_exact():
    images = smooth_images(3, 40)
    out = A.crop_resize(images.float(), torch.tensor([[0.0, 0.0, 40.0, 40.0]] * 3),
                        torch.arange(3), 40)
    assert torch.equal(out, images.float())
    views = A.make_views(images, OFF, 40, gen(), normalize=False)
    assert torch.equal(views, images.float() / 255)


@pytest.mark.parametrize("box", [(6, 4, 38, 36), (10, 2, 30, 40), (3, 5, 45, 20), (0, 0, 48, 48)])
@pytest.mark.parametrize("size", [16, 24, 40, 64])
def test_crop_resize_matches_torchvision_resized_crop(box, size):
    image = smooth_images(1, 48, seed=3).float()
    x0, y0, x1, y1 = box
    ours = A.crop_resize(image, torch.tensor([box], dtype=torch.float32), torch.tensor([0]),
                         size)[0] / 255
    ref = TF.resized_crop(image[0], y0, x0, y1 - y0, x1 - x0, [size, size],
                          antialias=True) / 255
    # roi_align's box filter vs torchvision's triangle filter, and roi_align reading the
    # pixels just outside the box at its border where torchvision repeats the edge.
    diff = (ours - ref).abs()
    assert diff.mean() < 0.006 and diff.max() < 0.06


def test_crop_resize_antialiases_when_shrinking():
    checker = (torch.arange(48).view(1, -1) + torch.arange(48).view(-1, 1)) % 2  # 1-px checks
    image = (checker * 255.0).expand(1, 3, 48, 48)
    out = A.crop_resize(image, torch.tensor([[0.0, 0.0, 48.0, 48.0]]), torch.tensor([0]), 16)
    ref = TF.resize(image[0], [16, 16], antialias=True)
    # Without antialiasing (point sampling) the checks would alias to a pattern of 0 / 255.
    assert (out - 127.5).abs().max() < 20 and (ref - 127.5).abs().max() < 20


def test_crop_sampler_boxes_follow_the_configured_ranges():
    cfg = augment_preset("simclr")
    height, width = 40, 60
    boxes = A.sample_crop_boxes(20000, height, width, cfg, gen(1))
    assert boxes.dtype == torch.float32 and boxes.shape == (20000, 4)
    assert torch.equal(boxes, boxes.round())  # whole pixels, as torchvision's crops
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (w > 0).all() and (h > 0).all()
    assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    area = w * h / (height * width)
    ratio = w / h
    # Rounding to whole pixels moves small crops a little outside the nominal ranges.
    assert area.min() > 0.08 * 0.85 and area.max() <= 1.0
    big = area > 0.3
    assert ratio[big].min() > 0.75 * 0.95 and ratio[big].max() < 4 / 3 * 1.05
    # Positions are uniform: crop centres average to the image centre.
    assert abs((boxes[:, 0] + w / 2).mean().item() - width / 2) < 0.5
    assert abs((boxes[:, 1] + h / 2).mean().item() - height / 2) < 0.5
    # The same distribution as torchvision's own sampler: quantiles of area and ratio.
    torch.manual_seed(1)
    ref = torch.tensor([RandomResizedCrop.get_params(torch.empty(3, height, width),
                                                     [0.08, 1.0], [3 / 4, 4 / 3])
                        for _ in range(20000)], dtype=torch.float32)  # (top, left, h, w)
    q = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95])
    torch.testing.assert_close(area.quantile(q), (ref[:, 2] * ref[:, 3] / 2400).quantile(q),
                               atol=0.02, rtol=0)
    torch.testing.assert_close(ratio.quantile(q), (ref[:, 3] / ref[:, 2]).quantile(q),
                               atol=0.03, rtol=0)


def test_crop_sampler_narrow_ranges():
    cfg = dataclasses.replace(OFF, crop_scale_min=0.25, crop_scale_max=0.25, crop_ratio_min=1.0,
                              crop_ratio_max=1.0)
    boxes = A.sample_crop_boxes(500, 64, 64, cfg, gen(0))
    assert torch.equal(boxes[:, 2:] - boxes[:, :2], torch.full((500, 2), 32.0))
    assert len({tuple(b) for b in boxes[:, :2].tolist()}) > 100  # random positions


@pytest.mark.parametrize("ratio,expected", [
    (1.0, [20.0, 0.0, 40.0, 20.0]),  # wide image, ratio above the allowed: 20 x 20 square
    (0.5, [25.0, 0.0, 35.0, 20.0]),  # 10 x 20 would fit, but not at the full area
])
def test_crop_sampler_falls_back_to_the_centred_clamped_crop(ratio, expected):
    # A full-area crop of ratio 1 (or 0.5) never fits a 60 x 20 image: torchvision's fallback.
    cfg = dataclasses.replace(OFF, crop_scale_min=1.0, crop_ratio_min=ratio, crop_ratio_max=ratio)
    boxes = A.sample_crop_boxes(5, 20, 60, cfg, gen(0))
    assert boxes.tolist() == [expected] * 5
    tall = A.sample_crop_boxes(2, 60, 20, dataclasses.replace(cfg, crop_ratio_min=2.0,
                                                              crop_ratio_max=2.0), gen(0))
    assert tall.tolist() == [[0.0, 25.0, 20.0, 35.0]] * 2  # 20 x 10 centred in 20 x 60


def test_crop_sampler_uses_the_whole_image_when_its_ratio_is_allowed():
    # Full area, ratios 0.5-2 on a square: only ratios rounding to 20 x 20 fit; otherwise
    # the fallback keeps the whole image, whose ratio (1) is allowed.
    cfg = dataclasses.replace(OFF, crop_scale_min=1.0, crop_ratio_min=0.5, crop_ratio_max=2.0)
    boxes = A.sample_crop_boxes(50, 20, 20, cfg, gen(0))
    assert (boxes == torch.tensor([0.0, 0.0, 20.0, 20.0])).all()


# --- the pipeline ----------------------------------------------------------------------------

def reference_views(images: torch.Tensor, cfg: AugmentConfig, size: int,
                    p: A.ViewParams) -> torch.Tensor:
    """torchvision's functional ops, one view at a time, with the given parameters."""
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    amounts = (cfg.jitter_brightness, cfg.jitter_contrast, cfg.jitter_saturation,
               cfg.jitter_hue)
    out = []
    for i in range(p.boxes.shape[0]):
        x0, y0, x1, y1 = (int(v) for v in p.boxes[i].tolist())
        x = images[i % images.shape[0]].float() / 255
        x = TF.resized_crop(x, y0, x0, y1 - y0, x1 - x0, [size, size], antialias=True)
        if p.flip[i]:
            x = TF.horizontal_flip(x)
        if p.jitter[i]:
            for op_index in p.order[i].tolist():
                if amounts[op_index] * cfg.jitter_strength > 0:
                    x = ops[op_index](x, p.factors[i, op_index].item())
        if p.gray[i]:
            x = TF.rgb_to_grayscale(x, num_output_channels=3)
        if p.blur[i]:
            k = A.blur_kernel_size(cfg, size)
            x = TF.gaussian_blur(x, [k, k], [p.sigmas[i].item()] * 2)
        if p.solarize[i]:
            x = TF.solarize(x, cfg.solarize_threshold)
        out.append(TF.normalize(x, list(cfg.normalize_mean), list(cfg.normalize_std)))
    return torch.stack(out)


def test_pipeline_matches_torchvision_view_by_view():
    # Whole-image crops at the image's own size are exact, so every later step can be
    # compared tightly; all the operations fire often, with strong factors.
    cfg = dataclasses.replace(augment_preset("simclr"), crop_scale_min=1.0, crop_ratio_min=1.0,
                              crop_ratio_max=1.0, jitter_strength=1.5, jitter_hue=0.3,
                              grayscale_p=0.3, blur_p=0.5, solarize_p=0.3)
    images = smooth_images(24, 24)
    p = A.sample_view_params(48, 24, 24, cfg, 24, gen(3))
    v1, v2 = A.make_pairs(images, cfg, 24, gen(3))  # draws the same parameters
    ref = reference_views(images, cfg, 24, p)
    torch.testing.assert_close(torch.cat([v1, v2]), ref, atol=1e-5, rtol=0)
    # The comparison is sensitive to the per-view jitter order.
    same_order = dataclasses.replace(p, order=torch.arange(4).expand(48, 4))
    assert not torch.allclose(ref, reference_views(images, cfg, 24, same_order), atol=1e-2)


def test_pipeline_with_crops_is_close_to_torchvision():
    cfg = dataclasses.replace(augment_preset("moco"), blur_p=0.5)
    images = smooth_images(8, 48)
    p = A.sample_view_params(8, 48, 48, cfg, 32, gen(4))
    views = A.make_views(images, cfg, 32, gen(4))
    diff = (views - reference_views(images, cfg, 32, p)).abs()
    assert diff.mean() < 0.01  # only the resampling differs (see the crop tests)


def test_jitter_order_is_a_random_permutation_per_view():
    p = A.sample_view_params(6000, 8, 8, augment_preset("simclr"), 8, gen(0))
    assert torch.equal(p.order.sort(dim=1).values, torch.arange(4).expand(6000, 4))
    counts = torch.unique(p.order, dim=0, return_counts=True)[1]
    assert counts.numel() == 24 and counts.min() > 6000 / 24 * 0.7  # all 24, about uniform
    for op in range(4):  # each op in each position about a quarter of the time
        share = (p.order == op).float().mean(dim=0)
        assert ((share - 0.25).abs() < 0.03).all()


def test_jitter_factors_follow_torchvision_ranges():
    cfg = augment_preset("moco")  # s = 0.5: 0.4 / 0.4 / 0.4 / 0.1
    p = A.sample_view_params(5000, 8, 8, cfg, 8, gen(0))
    lo, hi = p.factors.min(dim=0).values, p.factors.max(dim=0).values
    assert (lo[:3] >= 0.6).all() and (hi[:3] <= 1.4).all()
    assert (lo[:3] < 0.61).all() and (hi[:3] > 1.39).all()
    assert lo[3] >= -0.1 and hi[3] <= 0.1 and lo[3] < -0.09 and hi[3] > 0.09
    strong = A.sample_view_params(2000, 8, 8, dataclasses.replace(cfg, jitter_strength=2.0),
                                  8, gen(0))
    assert strong.factors[:, :3].min() >= 0.0  # max(0, 1 - 1.6)
    assert abs(p.jitter.float().mean().item() - 0.8) < 0.03
    assert abs(p.gray.float().mean().item() - 0.2) < 0.03
    assert p.sigmas.min() >= 0.1 and p.sigmas.max() <= 2.0


def test_shapes_dtypes_ranges_and_normalisation():
    images = smooth_images(5, 40)
    cfg = dataclasses.replace(augment_preset("simclr"), blur_p=0.5, solarize_p=0.3)
    v1, v2 = A.make_pairs(images, cfg, 32, gen(0), normalize=False)
    for v in (v1, v2):
        assert v.shape == (5, 3, 32, 32) and v.dtype == torch.float32
        assert v.device == images.device and v.is_contiguous()
        assert v.min() >= 0 and v.max() <= 1
    n1, n2 = A.make_pairs(images, cfg, 32, gen(0))
    mean = torch.tensor(cfg.normalize_mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.normalize_std).view(1, 3, 1, 1)
    torch.testing.assert_close(n1, (v1 - mean) / std, atol=1e-6, rtol=0)
    torch.testing.assert_close(n2, (v2 - mean) / std, atol=1e-6, rtol=0)
    torch.testing.assert_close(A.denormalize(n1, cfg), v1, atol=1e-6, rtol=0)
    pixels = A.to_uint8_hwc(v1)
    assert pixels.shape == (5, 32, 32, 3) and pixels.dtype.name == "uint8"
    assert (pixels == (v1 * 255).round().permute(0, 2, 3, 1).to(torch.uint8).numpy()).all()
    one = A.make_views(images, cfg, 24, gen(0))
    assert one.shape == (5, 3, 24, 24) and one.dtype == torch.float32
    empty = A.make_pairs(images[:0], cfg, 24, gen(0))
    assert empty[0].shape == empty[1].shape == (0, 3, 24, 24)


def test_non_square_images_and_upscaling():
    images = torch.randint(0, 256, (3, 3, 20, 30), dtype=torch.uint8, generator=gen(0))
    views = A.make_views(images, augment_preset("simclr"), 48, gen(0), normalize=False)
    assert views.shape == (3, 3, 48, 48) and views.min() >= 0 and views.max() <= 1


def test_channels_last_input_gives_the_same_views():
    images = smooth_images(4, 36)
    nhwc = images.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # like the cache
    assert not nhwc.is_contiguous()
    cfg = augment_preset("simclr")
    assert torch.equal(A.make_views(images, cfg, 32, gen(5)), A.make_views(nhwc, cfg, 32, gen(5)))


def test_every_sample_and_view_is_independent():
    images = smooth_images(1, 40).repeat(16, 1, 1, 1)  # 16 copies of one image
    v1, v2 = A.make_pairs(images, augment_preset("simclr"), 32, gen(0))
    views = torch.cat([v1, v2]).flatten(1)
    distinct = torch.cdist(views, views) + torch.eye(32) * 1e9
    assert distinct.min() > 1e-3  # no two of the 32 views are the same
    assert not torch.allclose(v1, v2)


def test_pairs_are_one_pass_over_the_repeated_batch():
    images = smooth_images(6, 40)
    cfg = augment_preset("simclr")
    v1, v2 = A.make_pairs(images, cfg, 32, gen(9))
    both = A.make_views(images.repeat(2, 1, 1, 1), cfg, 32, gen(9))
    torch.testing.assert_close(torch.cat([v1, v2]), both, atol=1e-6, rtol=0)


def test_reproducible_by_seed():
    images = smooth_images(6, 40)
    cfg = dataclasses.replace(augment_preset("moco"), blur_p=1.0, solarize_p=0.2)
    a = A.make_pairs(images, cfg, 32, gen(7))
    b = A.make_pairs(images, cfg, 32, gen(7))
    c = A.make_pairs(images, cfg, 32, gen(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_generator_advances_by_a_fixed_amount_and_global_rng_is_untouched():
    images = smooth_images(4, 32)
    everything = dataclasses.replace(augment_preset("simclr"), blur_p=1.0, solarize_p=1.0,
                                     grayscale_p=1.0, flip_p=1.0, jitter_p=1.0)
    g1, g2 = gen(0), gen(0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    A.make_pairs(images, OFF, 32, g1)
    A.make_pairs(images, everything, 32, g2)
    assert torch.equal(g1.get_state(), g2.get_state())
    assert torch.equal(torch.rand(3), expected)  # only the given generator was used


def test_chunked_views_equal_one_chunk(monkeypatch):
    images = smooth_images(7, 40)
    cfg = dataclasses.replace(augment_preset("simclr"), blur_p=0.5, solarize_p=0.2)
    whole = A.make_pairs(images, cfg, 32, gen(2))
    monkeypatch.setattr(A, "_CPU_CHUNK_VALUES", 3 * 32 * 32 * 2 * 3)  # 3 images a chunk
    chunked = A.make_pairs(images, cfg, 32, gen(2))
    torch.testing.assert_close(chunked[0], whole[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(chunked[1], whole[1], atol=1e-6, rtol=0)


def test_everything_off_gives_the_resized_image():
    images = smooth_images(3, 64)
    out = A.make_views(images, OFF, 32, gen(0), normalize=False)
    ref = TF.resize(images.float(), [32, 32], antialias=True) / 255
    assert (out - ref).abs().mean() < 0.005


def test_probability_one_ops():
    images = smooth_images(3, 32)
    gray = A.make_views(images, dataclasses.replace(OFF, grayscale_p=1.0), 32, gen(0),
                        normalize=False)
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    torch.testing.assert_close(gray[:, :1], TF.rgb_to_grayscale(images.float() / 255),
                               atol=1e-6, rtol=0)
    flipped = A.make_views(images, dataclasses.replace(OFF, flip_p=1.0), 32, gen(0),
                           normalize=False)
    assert torch.equal(flipped, images.float().flip(-1) / 255)
    solar = A.make_views(images, dataclasses.replace(OFF, solarize_p=1.0), 32, gen(0),
                         normalize=False)
    torch.testing.assert_close(solar, TF.solarize(images.float() / 255, 0.5), atol=1e-6, rtol=0)


def test_some_views_get_an_op_and_others_not():
    images = smooth_images(1, 16).repeat(40, 1, 1, 1)
    flipped = A.make_views(images, dataclasses.replace(OFF, flip_p=0.5), 16, gen(0),
                           normalize=False)
    base = images[:1].float() / 255
    is_flipped = (flipped == base.flip(-1)).flatten(1).all(1)
    is_plain = (flipped == base).flatten(1).all(1)
    assert (is_flipped ^ is_plain).all() and 5 < int(is_flipped.sum()) < 35


def test_auto_blur_and_kernel_size():
    cfg = augment_preset("simclr")
    assert A.resolved_blur_p(cfg, 64) == 0.0 and A.resolved_blur_p(cfg, 96) == 0.5
    assert A.resolved_blur_p(dataclasses.replace(cfg, blur_p=0.3), 32) == 0.3
    assert A.blur_kernel_size(cfg, 224) == 23 and A.blur_kernel_size(cfg, 32) == 3
    for size in range(16, 300, 7):
        k = A.blur_kernel_size(cfg, size)
        assert k % 2 == 1 and k >= 3 and abs(k - 0.1 * size) <= 1.5


def test_blur_strength_follows_sigma():
    x = rand01(n=2, size=32)
    weak = A.gaussian_blur(x, torch.tensor([0.1, 0.1]), 7)
    strong = A.gaussian_blur(x, torch.tensor([2.0, 2.0]), 7)
    assert (weak - x).abs().max() < 1e-3  # sigma 0.1: the kernel is a delta
    assert strong.std() < x.std() * 0.5


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="uint8"):
        A.make_views(torch.rand(2, 3, 8, 8), OFF, 8, gen())
    with pytest.raises(ValueError, match="uint8"):
        A.make_pairs(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), OFF, 8, gen())
    with pytest.raises(ValueError, match="size"):
        A.make_views(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), OFF, 0, gen())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_without_host_device_syncs():
    images = smooth_images(16, 64)
    cfg = dataclasses.replace(augment_preset("simclr"), blur_p=0.5, solarize_p=0.2)
    cpu = A.make_pairs(images, cfg, 56, gen(1))
    on_gpu = images.permute(0, 2, 3, 1).contiguous().cuda().permute(0, 3, 1, 2)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        cuda = A.make_pairs(on_gpu, cfg, 56, gen(1))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert cuda[0].device.type == "cuda"
    for a, b in zip(cpu, cuda):
        # The same parameters; arithmetic differs slightly (cuDNN may blur in TF32).
        diff = (b.cpu() - a).abs()
        assert diff.mean() < 1e-3 and diff.max() < 0.05
