"""Batched augmentations against torchvision, applied sample by sample, as the reference."""

import dataclasses
import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from engine import augment as A
from engine.config import AugmentConfig, augment_preset

OFF = AugmentConfig(crop_scale_min=1.0, crop_scale_max=1.0, crop_ratio_min=1.0,
                    crop_ratio_max=1.0, flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0,
                    solarize_p=0.0)


def smooth_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """uint8 (n, 3, size, size) of smooth colour fields: interpolation errors stay small."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic",
                                        align_corners=False)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def rand01(n=4, size=12, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("ours,theirs", [
    (A.adjust_brightness, TF.adjust_brightness), (A.adjust_contrast, TF.adjust_contrast),
    (A.adjust_saturation, TF.adjust_saturation)])
def test_colour_ops_match_torchvision_per_sample(ours, theirs):
    x = rand01()
    factors = torch.tensor([0.0, 0.4, 1.0, 1.8])
    out = ours(x.clone(), factors)
    for i, f in enumerate(factors.tolist()):
        torch.testing.assert_close(out[i], theirs(x[i], f), atol=1e-5, rtol=0)


def test_hue_matches_torchvision_per_sample():
    x = rand01(n=6)
    x[0] = 0.5  # gray: hue undefined, must stay gray
    shifts = torch.tensor([0.3, -0.5, -0.2, 0.0, 0.1, 0.5])
    out = A.adjust_hue(x, shifts)
    for i, s in enumerate(shifts.tolist()):
        torch.testing.assert_close(out[i], TF.adjust_hue(x[i], s), atol=1e-4, rtol=0)


def test_grayscale_blur_solarize_match_torchvision():
    x = rand01(n=3, size=20)
    torch.testing.assert_close(A.grayscale(x)[1], TF.rgb_to_grayscale(x[1]), atol=1e-6, rtol=0)
    sigmas = torch.tensor([0.1, 0.9, 2.0])
    out = A.gaussian_blur(x, sigmas, 5)
    for i, s in enumerate(sigmas.tolist()):
        torch.testing.assert_close(out[i], TF.gaussian_blur(x[i], [5, 5], [s, s]),
                                   atol=1e-5, rtol=0)
    torch.testing.assert_close(A.solarize(x, 0.5), TF.solarize(x, 0.5))


def test_crop_resize_matches_torchvision_resized_crop():
    images = smooth_images(2, 48)
    g = torch.Generator().manual_seed(0)
    # Identity: whole image, same size -> the image itself, exactly.
    same = A.make_views(images, OFF, 48, g, normalize=False)
    torch.testing.assert_close(same, images.float() / 255, atol=1e-6, rtol=0)
    # A fixed box, shrunk and enlarged, against torchvision's antialiased bilinear resize.
    box = torch.tensor([[6.0, 4.0, 38.0, 36.0]])  # x0, y0, x1, y1: a 32 x 32 crop
    x = images.float()
    for size in (16, 24, 40):
        rois = torch.cat([torch.zeros(1, 1), box], 1)
        ours = A.roi_align(x[:1], rois, (size, size), 1.0, -1, True)[0] / 255
        ref = TF.resized_crop(x[0], 4, 6, 32, 32, [size, size], antialias=True) / 255
        assert (ours - ref).abs().mean() < 0.01, size


def test_crop_sampler_follows_the_configured_ranges():
    cfg = augment_preset("simclr")
    g = torch.Generator().manual_seed(1)
    boxes = A.sample_crop_boxes(20000, 40, 60, cfg, g)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= 60).all() and (boxes[:, 3] <= 40).all()
    area = w * h / (40 * 60)
    assert area.min() > 0.07 and area.max() <= 1.0
    ratio = w / h
    # Rounding to whole pixels widens the ratio range slightly on small crops.
    big = area > 0.3
    assert ratio[big].min() > 0.7 and ratio[big].max() < 1.4
    assert abs((boxes[:, 0] + w / 2).mean().item() - 30) < 1  # centred on average
    # The same distribution as torchvision's own sampler (quantiles of area and ratio).
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(1)
    ref = torch.tensor([RandomResizedCrop.get_params(torch.empty(3, 40, 60), [0.08, 1.0],
                                                     [3 / 4, 4 / 3]) for _ in range(20000)],
                       dtype=torch.float32)  # (top, left, h, w)
    ref_area = ref[:, 2] * ref[:, 3] / (40 * 60)
    ref_ratio = ref[:, 3] / ref[:, 2]
    q = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
    torch.testing.assert_close(area.quantile(q), ref_area.quantile(q), atol=0.02, rtol=0)
    torch.testing.assert_close(ratio.quantile(q), ref_ratio.quantile(q), atol=0.03, rtol=0)


def test_crop_sampler_falls_back_to_the_centred_allowed_ratio():
    cfg = dataclasses.replace(OFF, crop_scale_min=1.0, crop_ratio_min=1.0, crop_ratio_max=1.0)
    boxes = A.sample_crop_boxes(5, 20, 60, cfg, torch.Generator().manual_seed(0))
    # A full-area square cannot fit a 60 x 20 image: fall back to the centred 20 x 20 square.
    assert boxes.tolist() == [[20.0, 0.0, 40.0, 20.0]] * 5


def test_shapes_ranges_and_normalisation():
    images = smooth_images(5, 40)
    cfg = dataclasses.replace(augment_preset("simclr"), blur_p=0.5, solarize_p=0.3)
    v1, v2 = A.make_pairs(images, cfg, 32, torch.Generator().manual_seed(0), normalize=False)
    assert v1.shape == v2.shape == (5, 3, 32, 32) and v1.dtype == torch.float32
    assert v1.min() >= 0 and v1.max() <= 1
    n1, _ = A.make_pairs(images, cfg, 32, torch.Generator().manual_seed(0))
    mean = torch.tensor(cfg.normalize_mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.normalize_std).view(1, 3, 1, 1)
    torch.testing.assert_close(n1, (v1 - mean) / std, atol=1e-5, rtol=0)
    torch.testing.assert_close(A.denormalize(n1, cfg), v1, atol=1e-5, rtol=0)
    pixels = A.to_uint8_hwc(v1)
    assert pixels.shape == (5, 32, 32, 3) and pixels.dtype.name == "uint8"


def test_channels_last_input_gives_the_same_views():
    images = smooth_images(4, 36)
    nhwc = images.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # like the cache
    cfg = augment_preset("simclr")
    a = A.make_views(images, cfg, 32, torch.Generator().manual_seed(5))
    b = A.make_views(nhwc, cfg, 32, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)


def test_every_sample_and_view_is_independent():
    images = smooth_images(1, 40).repeat(16, 1, 1, 1)  # 16 copies of one image
    v1, v2 = A.make_pairs(images, augment_preset("simclr"), 32,
                          torch.Generator().manual_seed(0))
    views = torch.cat([v1, v2]).flatten(1)
    distinct = torch.cdist(views, views) + torch.eye(32) * 1e9
    assert distinct.min() > 1e-3  # no two of the 32 views are the same
    assert not torch.allclose(v1, v2)


def test_reproducible_by_seed():
    images = smooth_images(6, 40)
    cfg = dataclasses.replace(augment_preset("moco"), blur_p=1.0)
    a = A.make_pairs(images, cfg, 32, torch.Generator().manual_seed(7))
    b = A.make_pairs(images, cfg, 32, torch.Generator().manual_seed(7))
    c = A.make_pairs(images, cfg, 32, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_everything_off_gives_the_resized_image():
    images = smooth_images(3, 64)
    out = A.make_views(images, OFF, 32, torch.Generator().manual_seed(0), normalize=False)
    ref = torch.stack([TF.resize(images[i].float(), [32, 32], antialias=True) / 255
                       for i in range(3)])
    assert (out - ref).abs().mean() < 0.01


def test_probability_one_ops():
    images = smooth_images(3, 32)
    gen = torch.Generator
    gray = A.make_views(images, dataclasses.replace(OFF, grayscale_p=1.0), 32,
                        gen().manual_seed(0), normalize=False)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    flipped = A.make_views(images, dataclasses.replace(OFF, flip_p=1.0), 32,
                           gen().manual_seed(0), normalize=False)
    torch.testing.assert_close(flipped, images.float().flip(-1) / 255, atol=1e-6, rtol=0)
    solar = A.make_views(images, dataclasses.replace(OFF, solarize_p=1.0), 32,
                         gen().manual_seed(0), normalize=False)
    torch.testing.assert_close(solar, TF.solarize(images.float() / 255, 0.5), atol=1e-6, rtol=0)


def test_jitter_order_varies_per_sample():
    # Brightness x2 then contrast differs from contrast then brightness x2 (clamping), so
    # with only those two active, copies of one image split into two distinct outcomes.
    cfg = dataclasses.replace(OFF, jitter_p=1.0, jitter_strength=1.0, jitter_brightness=1e-6,
                              jitter_contrast=1e-6, jitter_saturation=0.0, jitter_hue=0.0)
    images = smooth_images(1, 16).repeat(64, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    out = A.make_views(images, cfg, 16, g, normalize=False)
    assert (out - images.float() / 255).abs().max() < 1e-4  # tiny factors: nearly identity
    # The order itself: with 4 ops, all 24 permutations appear across many samples.
    orders = torch.rand(5000, 4, generator=torch.Generator().manual_seed(0)).argsort(1)
    assert len({tuple(o) for o in orders.tolist()}) == 24


def test_jitter_factors_follow_torchvision_ranges():
    cfg = dataclasses.replace(OFF, jitter_p=1.0, jitter_brightness=0.8, jitter_contrast=0.0,
                              jitter_saturation=0.0, jitter_hue=0.0, jitter_strength=0.5)
    images = torch.full((400, 3, 8, 8), 100, dtype=torch.uint8)
    out = A.make_views(images, cfg, 8, torch.Generator().manual_seed(0), normalize=False)
    factor = out[:, 0, 0, 0] / (100 / 255)
    assert factor.min() >= 0.6 - 1e-5 and factor.max() <= 1.4 + 1e-5
    assert factor.min() < 0.65 and factor.max() > 1.35  # the whole range is used


def test_auto_blur_and_kernel_size():
    cfg = augment_preset("simclr")
    assert A.resolved_blur_p(cfg, 64) == 0.0 and A.resolved_blur_p(cfg, 96) == 0.5
    assert A.blur_kernel_size(cfg, 224) == 23 and A.blur_kernel_size(cfg, 32) == 3
    assert A.blur_kernel_size(cfg, 224) % 2 == 1


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="uint8"):
        A.make_views(torch.rand(2, 3, 8, 8), OFF, 8, torch.Generator())


def test_blur_changes_the_image_in_proportion_to_sigma():
    x = rand01(n=2, size=32)
    weak = A.gaussian_blur(x, torch.tensor([0.1, 0.1]), 7)
    strong = A.gaussian_blur(x, torch.tensor([2.0, 2.0]), 7)
    assert (weak - x).abs().max() < 1e-3  # sigma 0.1: the kernel is a delta
    assert strong.std() < x.std() * 0.5
    assert math.isclose(A.gaussian_kernels(torch.tensor([1.0]), 5).sum().item(), 1.0,
                        rel_tol=1e-6)
