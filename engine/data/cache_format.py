"""Which cache a run reads its images from (``--cache-format``), and opening it.

- raw: the uint8 cache (engine.data.cache), the fastest to read: a batch is a gather.
- jpeg: the same images as JPEGs (engine.data.jpeg_cache), typically 8-15x smaller at
  96-224 px; each batch is decoded while the model trains on the one before.
- none: no cache (engine.data.file_rows); each batch decodes the original files.
- auto: raw when it fits the free space of the cache folder (at the automatic side, or at
  the largest smaller side down to the image size), else jpeg when its size, estimated from a
  sample of the folder's images encoded here, fits, else none. The plan says which and why.

A format set by hand that does not fit is refused with what to do instead.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engine.data.cache import (
    CACHE_FORMATS,
    CachePlan,
    ImageCache,
    Progress,
    build_cache,
    plan_cache,
    size_text,
)
from engine.data.file_rows import uncached
from engine.data.scan import DataError, Manifest

__all__ = ["CHOICES", "choose_cache", "open_cache"]

#: The values of the cache_format setting.
CHOICES = ("auto", *CACHE_FORMATS)


def choose_cache(manifest: Manifest, fmt: str, size: int, cache_dir: Path, *,
                 max_image_pixels: int, num_workers: int | None = None,
                 smallest: int | None = None) -> CachePlan:
    """The plan of the cache to use for ``manifest``: format ``fmt`` (one of
    :data:`CHOICES`) at ``size`` px, or, where the side may shrink to fit (``smallest``, the
    image size, given when ``size`` is automatic), a raw cache of a smaller side. The plan's
    ``reason`` says why; a raw or jpeg cache asked for by hand that does not fit raises
    :class:`DataError` with what to do instead."""
    if fmt not in CHOICES:
        raise ValueError(f"cache format must be one of {', '.join(CHOICES)}; got {fmt!r}")

    def plan(kind: str, side: int = size, reason: str = "") -> CachePlan:
        return plan_cache(manifest, side, cache_dir, max_image_pixels=max_image_pixels,
                          num_workers=num_workers, fmt=kind, reason=reason)

    if fmt == "none":
        return plan("none", reason="--cache-format none")
    if fmt == "jpeg":
        jpeg = plan("jpeg", reason="--cache-format jpeg")
        if not jpeg.fits:
            raise DataError(jpeg.refusal())
        return jpeg
    raw = plan("raw", reason="--cache-format raw" if fmt == "raw" else "")
    if raw.fits:
        if fmt == "auto":
            raw.reason = "raw: reused" if raw.reuse else (
                f"raw: {size_text(raw.bytes)} fits in the {size_text(raw.free)} free")
        return raw
    side = raw.fitting_size(smallest) if smallest is not None else None
    if side is not None:
        shrunk = plan("raw", side)
        shrunk.reason = (f"raw at {side} px: {size_text(raw.bytes)} at {size} px does not fit in "
                         f"the {size_text(raw.free)} free")
        return shrunk
    if fmt == "raw":
        raise DataError(raw.refusal())
    lowest = f" (nor at {smallest} px)" if smallest is not None and smallest < size else ""
    too_big = (f"a raw cache of {raw.images:,} images at {size} px ({size_text(raw.bytes)}) does "
               f"not fit in the {size_text(raw.free)} free in {raw.folder}{lowest}")
    jpeg = plan("jpeg")
    estimate = (f"about {size_text(jpeg.bytes)}, estimated from {jpeg.sample} images"
                if jpeg.sample else size_text(jpeg.bytes))
    if jpeg.fits:
        jpeg.reason = f"jpeg: {too_big}; a JPEG cache ({estimate}) does"
        return jpeg
    return plan("none", reason=f"none: {too_big}, nor does a JPEG cache ({estimate}); each "
                               "batch decodes the original files (free space or choose "
                               "another --cache-dir for a cache)")


def open_cache(plan: CachePlan, manifest: Manifest, cache_dir: Path, *, max_image_pixels: int,
               num_workers: int | None = None, progress: Progress | None = None,
               announce: Callable[[CachePlan], None] | None = None,
               decode_device: str = "") -> ImageCache:
    """The images of ``plan`` (:func:`choose_cache`): its cache, built now where it is not
    complete yet (``decode_device``: see :func:`~engine.data.cache.build_cache`), or the
    files themselves for format none."""
    if plan.format == "none":
        if announce:
            announce(plan)
        return uncached(manifest, plan.size, max_image_pixels=max_image_pixels)
    return build_cache(manifest, plan.size, cache_dir, max_image_pixels=max_image_pixels,
                       num_workers=num_workers, progress=progress, announce=announce,
                       fmt=plan.format, plan=plan, decode_device=decode_device)
