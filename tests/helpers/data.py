"""Helpers of the data tests (scan, decode, cache, demo): a pixel limit, root detection,
a home folder of the test's own, and decoding an in-memory image."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data.cache import decode_image
from tests.helpers import folders as imagegen

BIG = 10**8  # a pixel limit no test image reaches
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing in these tests may touch the real home folder (autouse where imported)."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    for var in ("CONTRASTIVE_EXPLORER_CACHE", "CONTRASTIVE_EXPLORER_DATA",
                "CONTRASTIVE_EXPLORER_RUNS", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)


def rgb_of(im: Image.Image, fmt: str = "PNG", size: int = 8, **kw) -> np.ndarray:
    return decode_image(imagegen.encode(im, fmt, **kw), size, max_pixels=BIG)
