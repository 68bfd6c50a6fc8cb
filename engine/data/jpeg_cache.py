"""The compressed form of the decoded cache (``--cache-format jpeg``) and its images read back.

Each image is decoded and resized exactly as for the raw cache
(:func:`engine.data.decode.decode_with_pixels`), then re-encoded as a JPEG of quality
:data:`JPEG_QUALITY` without chroma subsampling (4:4:4: at 32-96 px the colour is much of what
is left of an image, and 4:2:0 halves it). :func:`engine.data.cache.build_cache` packs the
JPEGs, in manifest order, into one data file and writes an index of their end offsets
(uint64, one per image); :class:`JpegImages` reads them back.

A batch is decoded where it is used: on the CPU by ``torchvision.io.decode_jpeg``
(libjpeg-turbo; 1.5-2x Pillow per image on this project's machine, BENCHMARKS.md "When the
cache does not fit") on the loader's decoding threads, or on a CUDA device by one batched
``decode_jpeg(device="cuda")`` call (nvJPEG).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# torchvision 0.29 deprecates its image codecs in favour of TorchCodec, which is not a
# dependency; they still work, and the warning would repeat on every batch.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of "
                        "TorchVision", category=DeprecationWarning)

__all__ = ["CPU_DECODERS", "JPEG_QUALITY", "JpegImages", "decode_in_parts", "decode_jpeg_cuda",
           "encode_jpeg", "index_path", "rows_of"]

JPEG_QUALITY = 90
#: The CPU decoders a JPEG cache can be read with; the first is the default.
CPU_DECODERS = ("torchvision", "pil")


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """A (S, S, 3) uint8 RGB image as JPEG bytes (4:4:4, no metadata)."""
    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, "JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def index_path(data_path: Path) -> Path:
    """The index (end offsets) beside a JPEG cache's data file."""
    return data_path.with_suffix(".idx")


def _decode_pil(blobs: Sequence[np.ndarray], out: np.ndarray) -> None:
    for i, blob in enumerate(blobs):
        with Image.open(io.BytesIO(blob.tobytes())) as im:
            out[i] = np.asarray(im.convert("RGB"))


def _decode_torchvision(blobs: Sequence[np.ndarray], out: np.ndarray) -> None:
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.from_numpy(np.array(blob)) for blob in blobs]  # a copy: writable
    for i, image in enumerate(decode_jpeg(tensors, mode=ImageReadMode.RGB)):
        out[i] = image.permute(1, 2, 0).numpy()


_DECODE = {"torchvision": _decode_torchvision, "pil": _decode_pil}


def rows_of(key: Any, n: int) -> tuple[np.ndarray, bool]:
    """(the rows of ``n`` that an index, a slice or an array of indices names, whether it
    was a single index), as numpy indexes an array of ``n`` rows (negatives count from the
    end; out of range raises IndexError)."""
    if isinstance(key, slice):
        return np.arange(*key.indices(n), dtype=np.int64), False
    single = isinstance(key, (int, np.integer))
    rows = np.atleast_1d(np.asarray(key, dtype=np.int64)).copy()
    if rows.ndim != 1:
        raise IndexError("only an index, a slice or a 1-d array of indices is supported")
    if ((rows < -n) | (rows >= n)).any():
        raise IndexError(f"index out of range for {n} images")
    rows[rows < 0] += n
    return rows, single


def decode_in_parts(decode: Callable[[np.ndarray, np.ndarray], None], rows: np.ndarray,
                    size: int, pool: ThreadPoolExecutor | None, workers: int) -> np.ndarray:
    """(n, S, S, 3) uint8 filled by ``decode(rows part, out part)``: the rows split in
    ``workers`` contiguous parts on ``pool`` (in this thread without one)."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows), size, size, 3), dtype=np.uint8)
    if pool is None or workers < 2 or len(rows) < 2:
        decode(rows, out)
        return out
    bounds = np.linspace(0, len(rows), min(workers, len(rows)) + 1).astype(int)
    jobs = [pool.submit(decode, rows[a:b], out[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    for job in jobs:
        job.result()
    return out


class DecodedRows:
    """Indexing for images decoded when asked for: ``images[i]``, ``images[rows]`` and
    ``images[a:b]`` as a raw cache's memory map gives them, through the subclass's
    ``decode_rows(rows)`` (n, S, S, 3) uint8."""

    def __len__(self) -> int:
        raise NotImplementedError

    def decode_rows(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, single = rows_of(key, len(self))
        out = self.decode_rows(rows)
        return out[0] if single else out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.decode_rows(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype)


class JpegImages(DecodedRows):
    """The images of a JPEG cache, decoded when indexed.

    ``images[i]`` is (S, S, 3) and ``images[rows]`` / ``images[a:b]`` (n, S, S, 3) uint8, as
    the raw cache's memory map gives them, so whatever reads a cache reads this one too.
    :meth:`decode_rows` decodes a batch on a pool of threads, :func:`decode_jpeg_cuda` on a
    GPU. ``data`` is the packed file (memory-mapped), ``ends`` each image's end offset.
    """

    dtype = np.dtype(np.uint8)

    def __init__(self, data: np.ndarray, ends: np.ndarray, size: int,
                 decoder: str = CPU_DECODERS[0]) -> None:
        if decoder not in _DECODE:
            raise ValueError(f"decoder must be one of {', '.join(CPU_DECODERS)}; got {decoder!r}")
        self.data, self.ends, self.size, self.decoder = data, ends, size, decoder
        self.starts = np.concatenate([[0], ends[:-1]]).astype(np.int64) if len(ends) else ends

    @classmethod
    def open(cls, path: Path, count: int, size: int) -> JpegImages:
        """The JPEG cache in ``path`` (its index beside it) of ``count`` images."""
        ends = (np.fromfile(index_path(path), dtype="<u8", count=count).astype(np.int64)
                if count else np.zeros(0, dtype=np.int64))
        data = (np.memmap(path, dtype=np.uint8, mode="r") if count and ends[-1] > 0
                else np.zeros(0, dtype=np.uint8))
        return cls(data, ends, size)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.ends), self.size, self.size, 3)

    def __len__(self) -> int:
        return len(self.ends)

    def encoded(self, row: int) -> np.ndarray:
        """The JPEG bytes of image ``row`` (a view into the memory map)."""
        return self.data[self.starts[row]:self.ends[row]]

    def decode_rows(self, rows: np.ndarray, pool: ThreadPoolExecutor | None = None,
                    workers: int = 1) -> np.ndarray:
        """(n, S, S, 3) uint8 of the images ``rows``, decoded on the CPU, split among
        ``workers`` threads of ``pool`` when one is given."""
        decode = _DECODE[self.decoder]
        return decode_in_parts(lambda part, out: decode([self.encoded(r) for r in part], out),
                               rows, self.size, pool, workers)


def decode_jpeg_cuda(images: JpegImages, rows: np.ndarray, device: Any) -> Any:
    """(n, 3, S, S) uint8 on the CUDA ``device`` (channels-last in memory, as the raw cache's
    batches are): the images ``rows`` decoded there in one batched nvJPEG call."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.from_numpy(np.array(images.encoded(r))) for r in rows]
    decoded = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
    return torch.stack(decoded).contiguous(memory_format=torch.channels_last)
