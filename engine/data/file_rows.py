"""No cache (``--cache-format none``): each batch decodes its images from the original files.

For one-off runs on folders too large for any cache on the disk: nothing is written, and every
epoch decodes every image again (at the cache side, exactly as a cache build would, so the
batches are those of a raw cache of the same folder). Each file is re-read and its hash
compared with the scan's; a file changed or removed since the scan stops the run with that
reason (the images of a run must not change under it).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from engine.data.cache import ImageCache, _read_and_decode
from engine.data.jpeg_cache import DecodedRows, decode_in_parts
from engine.data.scan import DataError, Manifest

__all__ = ["FileImages", "uncached"]


class FileImages(DecodedRows):
    """The images of a manifest, decoded from their files when indexed: ``images[rows]`` is
    (n, S, S, 3) uint8 as a raw cache's memory map gives it."""

    dtype = np.dtype(np.uint8)

    def __init__(self, manifest: Manifest, size: int, max_pixels: int) -> None:
        self.manifest, self.size, self.max_pixels = manifest, size, max_pixels
        self.root = Path(manifest.root)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.manifest.images), self.size, self.size, 3)

    def __len__(self) -> int:
        return len(self.manifest.images)

    def _decode(self, rows: np.ndarray, out: np.ndarray) -> None:
        for i, row in enumerate(rows):
            record = self.manifest.images[int(row)]
            image, reason, _ = _read_and_decode(self.root / record.path, record.sha,
                                                self.size, self.max_pixels)
            if image is None:
                raise DataError(f"{self.root / record.path}: {reason}. The folder changed "
                                "while training read it without a cache; start again to "
                                "scan it again")
            out[i] = image

    def decode_rows(self, rows: np.ndarray, pool: ThreadPoolExecutor | None = None,
                    workers: int = 1) -> np.ndarray:
        """(n, S, S, 3) uint8 of the images ``rows``, split among ``workers`` threads of
        ``pool`` when one is given (Pillow decodes outside the GIL)."""
        return decode_in_parts(self._decode, rows, self.size, pool, workers)


def uncached(manifest: Manifest, size: int, *, max_image_pixels: int) -> ImageCache:
    """An :class:`ImageCache` of ``manifest`` at ``size`` px that decodes from the files.
    Its images are the scan's (a scan that verifies finds the files that do not decode)."""
    return ImageCache(images=FileImages(manifest, size, max_image_pixels),  # type: ignore[arg-type]
                      labels=manifest.labels(), manifest=manifest, size=size,
                      path=Path(manifest.root), format="none")
