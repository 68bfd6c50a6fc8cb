"""Choosing a subset of a run's images and writing it out: a copied or linked folder with
the same class sub-folders, or a list file that ``contrastive-engine train --data`` reads.

Selection (:func:`select`): each kind of filter that is given narrows the images (classes,
tags, a list of paths: an image must pass every kind given, and any one value within a
kind: ``--class cat --class dog --tag sharp`` is the sharp cats and dogs), then the images
with an excluded tag are dropped. With no filter, every image.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path
from typing import Any

from engine.data.scan import DataError, Manifest, read_image_list
from engine.evaluate.tags import load_tags, resolve
from engine.run import progress
from engine.run.io import write_atomic

WRITE_MODES = ("copy", "link", "list")


def select(manifest: Manifest, *, classes: list[str] | None = None,
           tags: list[str] | None = None, exclude_tags: list[str] | None = None,
           paths: list[str] | None = None, run_dir: Path | None = None) -> list[int]:
    """Indices into ``manifest.images`` of the chosen images, in manifest order. Tags are the
    run's (``run_dir``), found by path or content hash (engine.evaluate.tags)."""
    chosen = set(range(len(manifest.images)))
    if classes:
        unknown = sorted(set(classes) - set(manifest.classes))
        if unknown:
            raise DataError(f"no class {', '.join(map(repr, unknown))} in the data; classes: "
                            f"{', '.join(manifest.classes) or 'none (an unlabelled folder)'}")
        wanted = {manifest.classes.index(c) for c in classes}
        chosen &= {i for i, r in enumerate(manifest.images) if r.label in wanted}
    saved = load_tags(run_dir) if (tags or exclude_tags) and run_dir is not None else {}
    for what, names in (("tag", tags), ("excluded tag", exclude_tags)):
        for name in names or ():
            if name not in saved:
                raise DataError(f"no {what} {name!r} in the run; tags: "
                                f"{', '.join(sorted(saved)) or 'none yet'}")
    if tags:
        chosen &= {i for name in tags for i in resolve(saved[name], manifest)}
    if paths is not None:
        root = Path(manifest.root)
        index = {r.path: i for i, r in enumerate(manifest.images)}
        rels = {Path(os.path.relpath(Path(p) if Path(p).is_absolute() else root / p,
                                     root)).as_posix() for p in paths}
        chosen &= {index[rel] for rel in rels if rel in index}
    for name in exclude_tags or ():
        chosen -= set(resolve(saved[name], manifest))
    return sorted(chosen)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def check_destination(dest: Path, root: Path, mode: str) -> None:
    """Refuse a destination that would change the data or overwrite something."""
    if mode == "list":
        if dest.suffix.lower() not in (".txt", ".csv"):
            raise DataError(f"the list file must end in .txt (one absolute path a line) or "
                            f".csv (path,class); got {dest.name}")
        if dest.exists():
            raise DataError(f"{dest} exists already: choose another file name, or remove it")
        return
    if _inside(dest, root):
        raise DataError(f"{dest} is inside the data folder {root}: writing there would add "
                        "the images to the data itself; choose a folder elsewhere")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(f"{dest} is not an empty folder: choose a new or empty folder, so "
                        "that nothing is overwritten or mixed in")


def write_subset(manifest: Manifest, indices: list[int], dest: Path, mode: str
                 ) -> dict[str, Any]:
    """Write the images ``indices`` of ``manifest`` to ``dest``: "copy" (files copied under
    their class sub-folders), "link" (symbolic links to the originals, same layout) or
    "list" (a .txt of absolute paths, or a .csv of path,class)."""
    if mode not in WRITE_MODES:
        raise ValueError(f"mode must be one of {', '.join(WRITE_MODES)}; got {mode!r}")
    if not indices:
        raise DataError("no image matches the choice (classes, tags, paths): nothing written")
    dest = Path(dest).expanduser().absolute()
    root = Path(manifest.root)
    check_destination(dest, root, mode)
    records = [manifest.images[i] for i in indices]
    if mode == "list":
        text = io.StringIO()
        if dest.suffix.lower() == ".csv":
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(["path", "class"])
            for r in records:
                writer.writerow([str(root / r.path),
                                 manifest.classes[r.label] if r.label is not None else ""])
        else:
            text.writelines(f"{root / r.path}\n" for r in records)
        data = text.getvalue().encode("utf-8", errors="surrogateescape")
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(dest, lambda f: f.write(data))
    else:
        dest.mkdir(parents=True, exist_ok=True)
        for n, r in enumerate(records, 1):
            source, target = root / r.path, dest / r.path
            if not source.is_file():
                raise DataError(f"{source} is gone since the run scanned its data: pass "
                                "--data with the folder as it is now")
            target.parent.mkdir(parents=True, exist_ok=True)
            if mode == "copy":
                shutil.copy2(source, target)
            else:
                os.symlink(source.resolve(), target)
            progress.report("subset", n, len(records), "images")
    counts: dict[str, int] = {}
    for r in records:
        name = manifest.classes[r.label] if r.label is not None else ""
        counts[name] = counts.get(name, 0) + 1
    return {"mode": mode, "path": str(dest), "images": len(records), "root": str(root),
            "class_counts": counts}


def paths_from_file(path: Path) -> list[str]:
    """The image paths a .txt/.csv list names (as ``train --data`` reads them)."""
    return read_image_list(path)
