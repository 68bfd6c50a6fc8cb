"""A labelled folder with planted near-duplicates and label mistakes, and the plant list, for
the curation tests (tests/engine/test_curate.py) and benchmarks/bench_curate.py.

Duplicates: some images get one to three altered copies in their own class folder (resized
to 3/4 and back as PNG, recompressed as JPEG at quality 60, mirrored left-right). Cross-class
copies: an image copied unchanged into another class folder ("the same image in two
classes"): a duplicate group AND a label mistake. Moved: an image moved into another class
folder: a label mistake only.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

VARIANTS = ("resized", "jpeg", "mirrored")


def tinted_folder(root: Path, classes=("blue", "green", "red"), per_class: int = 16,
                  size: int = 24, seed: int = 0) -> Path:
    """Smooth random images whose class is a colour tint: classes that even an untrained
    encoder tells apart, each image still distinct."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            small = rng.integers(0, 256, (size // 4, size // 4, 3)).astype(np.float64)
            small[..., c % 3] = 0.4 * small[..., c % 3] + 150  # the class's channel dominates
            small *= rng.uniform(0.6, 1.0, 3)
            im = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8)).resize(
                (size, size), Image.Resampling.BILINEAR)
            im.save(root / name / f"{name}-{i:03d}.png")
    return root


def _variant(im: Image.Image, kind: str, path: Path) -> Path:
    if kind == "resized":
        w, h = im.size
        out = path.with_name(path.stem + "-resized.png")
        im.resize((w * 3 // 4, h * 3 // 4), Image.Resampling.BICUBIC).resize(
            (w, h), Image.Resampling.BICUBIC).save(out)
    elif kind == "jpeg":
        out = path.with_name(path.stem + "-q60.jpg")
        im.convert("RGB").save(out, "JPEG", quality=60)
    else:
        out = path.with_name(path.stem + "-mirrored.png")
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(out)
    return out


def plant(root: Path, *, duplicated: int = 6, cross_class: int = 2, moved: int = 3,
          seed: int = 1) -> dict:
    """Plant copies and mistakes in the class folder ``root`` (changed in place).

    Returns {"groups": [[relative paths of an original and its copies], ...] (including the
    cross-class pairs), "mistakes": [(relative path, true class), ...], "cross_class":
    [[original, copy], ...]}.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = sorted(p for c in classes for p in (root / c).iterdir())
    picks = rng.permutation(len(files))[:duplicated + cross_class + moved]
    groups, mistakes, cross = [], [], []
    rel = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    for n, i in enumerate(picks[:duplicated]):
        path = files[i]
        with Image.open(path) as im:
            im.load()
            kinds = VARIANTS[:1 + n % 3]
            groups.append([rel(path)] + [rel(_variant(im, k, path)) for k in kinds])
    for i in picks[duplicated:duplicated + cross_class]:
        path = files[i]
        other = classes[(classes.index(path.parent.name) + 1) % len(classes)]
        copy = root / other / f"copy-of-{path.name}"
        shutil.copy2(path, copy)
        groups.append([rel(path), rel(copy)])
        cross.append([rel(path), rel(copy)])
        mistakes.append((rel(copy), path.parent.name))
    for i in picks[duplicated + cross_class:]:
        path = files[i]
        other = classes[(classes.index(path.parent.name) + 1) % len(classes)]
        target = root / other / f"moved-{path.name}"
        shutil.move(path, target)
        mistakes.append((rel(target), path.parent.name))
    return {"groups": [sorted(g) for g in groups], "mistakes": mistakes, "cross_class": cross}


def pair_scores(found_groups: list[list[str]], planted_groups: list[list[str]]
                ) -> tuple[float, float]:
    """(precision, recall) over image pairs: a pair is planted when both images are in one
    planted group, found when both are in one found group."""
    def pairs(groups):
        return {(a, b) for g in groups for a in g for b in g if a < b}

    found, planted = pairs(found_groups), pairs(planted_groups)
    precision = len(found & planted) / len(found) if found else 1.0
    recall = len(found & planted) / len(planted) if planted else 1.0
    return precision, recall
