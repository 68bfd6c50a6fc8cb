"""A labelled folder of patches cut from real photographs that installed packages bundle,
for benchmarks that need real image statistics offline (benchmarks/bench_methods.py).

The photographs: scikit-learn's ``load_sample_images()`` (china.jpg: a Chinese temple
roof, trees and sky; flower.jpg: a dahlia-like flower and leaves; 640 x 427 each) and,
when scikit-image is importable, the colour photographs of ``skimage.data`` that its
wheel bundles (astronaut, chelsea the cat, coffee, rocket, ...; any that cannot be loaded
offline are skipped). Nothing is downloaded.

The classes: each photograph is cut into a ``--grid`` x ``--grid`` grid of regions (2 x 2
by default) and each region is a class, named ``<photo>-r<row>c<column>`` (china-r0c1:
the top-right quarter of china.jpg). With ``--grid 1`` a class is a whole photograph.
Each class gets ``--per-class`` random square crops taken inside its region, at a random
side between ``--min-scale`` and ``--max-scale`` of the region's shorter side and at a
random position, resized to ``--size`` px and saved as JPEG (quality 90).

What the task measures: telling apart the parts of real photographs from small crops of
them, by their colour, texture and the objects in them (sky, roof tiles, foliage,
petals...), at varying scale. Crops of one region overlap, so a kNN classifier or linear
probe on good features finds it easy; it is a test of whether an encoder's features carry
the local statistics of natural images, not of object recognition. With two sklearn
photographs and a 2 x 2 grid it has 8 classes (chance 12.5%).

Usage:
    python benchmarks/make_photo_patches.py OUT_FOLDER [--grid 2] [--per-class 150]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

_MARK = "Patches of real photographs, made by benchmarks/make_photo_patches.py"
#: The skimage.data colour photographs tried (each skipped if it cannot be loaded).
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                  "immunohistochemistry")


def photographs() -> dict[str, np.ndarray]:
    """name -> (H, W, 3) uint8 RGB photograph, from the packages installed here."""
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    photos = {Path(name).stem: np.asarray(im) for name, im in
              zip(bunch.filenames, bunch.images)}
    try:
        import skimage.data as skdata
    except ImportError:  # not installed: the sklearn photographs alone
        return photos
    for name in SKIMAGE_PHOTOS:
        try:
            image = np.asarray(getattr(skdata, name)())
        except Exception:  # a photo that needs a download (or is gone)
            continue
        if image.ndim == 3 and image.shape[2] >= 3:
            photos[name] = image[..., :3].astype(np.uint8)
    return photos


def make_patches(out: Path, *, grid: int = 2, per_class: int = 150, size: int = 64,
                 min_scale: float = 0.3, max_scale: float = 0.8, seed: int = 0
                 ) -> dict[str, int]:
    """Write the folder (replacing ``out`` if it holds an earlier one); class -> count."""
    if not 0 < min_scale <= max_scale <= 1:
        raise SystemExit("need 0 < --min-scale <= --max-scale <= 1")
    out = Path(out)
    readme = out / "README.txt"
    if readme.is_file() and readme.read_text(encoding="utf-8").startswith(_MARK):
        shutil.rmtree(out)  # an earlier folder of this script
    elif out.is_dir() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty and not a folder of this script: choose "
                         "another (the folder is replaced when it is run again)")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    for name, photo in sorted(photographs().items()):
        height, width = photo.shape[:2]
        for row in range(grid):
            for col in range(grid):
                top, bottom = row * height // grid, (row + 1) * height // grid
                left, right = col * width // grid, (col + 1) * width // grid
                region = photo[top:bottom, left:right]
                short = min(region.shape[:2])
                label = f"{name}-r{row}c{col}"
                folder = out / label
                folder.mkdir()
                for i in range(per_class):
                    side = max(8, int(round(short * rng.uniform(min_scale, max_scale))))
                    y = int(rng.integers(0, region.shape[0] - side + 1))
                    x = int(rng.integers(0, region.shape[1] - side + 1))
                    crop = Image.fromarray(region[y:y + side, x:x + side])
                    crop = crop.resize((size, size), Image.Resampling.BICUBIC)
                    crop.save(folder / f"{i:04d}.jpg", "JPEG", quality=90)
                counts[label] = per_class
    readme.write_text(
        f"{_MARK}: "
        f"{len(counts)} classes (each a region of a {grid} x {grid} grid over a photograph), "
        f"{per_class} random crops each at {min_scale:g}-{max_scale:g} of the region's "
        f"shorter side, {size} px, seed {seed}.\nClasses: {', '.join(counts)}\n",
        encoding="utf-8")
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="the folder to write (class sub-folders)")
    p.add_argument("--grid", type=int, default=2, help="regions per side of each photo")
    p.add_argument("--per-class", type=int, default=150)
    p.add_argument("--size", type=int, default=64, help="side of the saved patches, px")
    p.add_argument("--min-scale", type=float, default=0.3)
    p.add_argument("--max-scale", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    counts = make_patches(args.out, grid=args.grid, per_class=args.per_class,
                          size=args.size, min_scale=args.min_scale,
                          max_scale=args.max_scale, seed=args.seed)
    print(f"{args.out}: {sum(counts.values())} patches in {len(counts)} classes "
          f"({', '.join(counts)})")


if __name__ == "__main__":
    main()
