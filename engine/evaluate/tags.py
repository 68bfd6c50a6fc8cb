"""Named tags on a run's images ("blurry", "duplicate", "check label"), kept in the run
folder's tags.json (:attr:`engine.run.layout.RunDir.tags`).

Each tagged image is stored by its path relative to the data folder AND its content hash
(the manifest's BLAKE2b ``sha``), so tags outlive a renamed or moved folder: an image is
found by its path first and, when no image has that path any more (a file renamed or moved
to another class folder), by its hash. The file is rewritten atomically on every change.

The engine API for the app: :func:`add_tag`, :func:`remove_tag`, :func:`tag_counts`,
:func:`images_with` (and :func:`refs_for_indices` / :func:`refs_for_paths` to name images).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from engine.data.scan import DataError, Manifest, _hash_file
from engine.evaluate.embed import RunError
from engine.run.io import write_json_atomic
from engine.run.layout import RunDir

TAGS_VERSION = 1
MAX_TAG_LENGTH = 100


@dataclass(frozen=True)
class ImageRef:
    """One image as a tag remembers it: path relative to the data folder, content hash."""

    path: str
    sha: str


def check_tag_name(name: str) -> str:
    """``name`` stripped, or a DataError saying why it cannot name a tag."""
    name = str(name).strip()
    if not name:
        raise DataError("a tag needs a name: --add NAME (letters, digits, spaces, ...)")
    if len(name) > MAX_TAG_LENGTH or any(ord(c) < 32 for c in name):
        raise DataError(f"tag names are at most {MAX_TAG_LENGTH} printable characters; got "
                        f"{name!r}")
    return name


def run_manifest(run_dir: Path) -> Manifest:
    """The images a run trained on (its manifest.json)."""
    path = RunDir(run_dir).manifest
    if not path.is_file():
        raise RunError(f"{run_dir} has no manifest.json: give a run folder that "
                       "`contrastive-engine train` created")
    try:
        return Manifest.load(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunError(f"the manifest {path} cannot be read ({exc})") from None


def load_tags(run_dir: Path) -> dict[str, list[ImageRef]]:
    """The run's tags: {name: images}, empty when none were saved."""
    path = RunDir(run_dir).tags
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(name): [ImageRef(str(r["path"]), str(r["sha"])) for r in refs]
                for name, refs in data["tags"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RunError(f"the tags file {path} cannot be read ({exc}); move it away to start "
                       "with no tags") from None


def save_tags(run_dir: Path, tags: dict[str, list[ImageRef]]) -> None:
    """Write the tags (atomically); tags with no images are dropped."""
    write_json_atomic(RunDir(run_dir).tags, {
        "version": TAGS_VERSION,
        "tags": {name: [{"path": r.path, "sha": r.sha} for r in refs]
                 for name, refs in sorted(tags.items()) if refs}})


def refs_for_indices(manifest: Manifest, indices: list[int]) -> list[ImageRef]:
    """The images at ``indices`` of the manifest (the run's image order, as in its
    embeddings)."""
    n = len(manifest.images)
    refs = []
    for i in indices:
        if not 0 <= int(i) < n:
            raise DataError(f"image index {i} is out of range: the run has {n:,} images "
                            f"(0-{n - 1})")
        r = manifest.images[int(i)]
        refs.append(ImageRef(r.path, r.sha))
    return refs


def refs_for_paths(manifest: Manifest, paths: list[str]) -> list[ImageRef]:
    """The images at ``paths``: absolute, or relative to the manifest's root. A path in
    the manifest takes its hash from there; another existing file is hashed now."""
    root = Path(manifest.root)
    by_path = {r.path: r for r in manifest.images}
    refs = []
    for p in paths:
        full = Path(p) if Path(p).is_absolute() else root / p
        rel = Path(os.path.relpath(full, root)).as_posix()
        if rel in by_path:
            refs.append(ImageRef(rel, by_path[rel].sha))
            continue
        if rel.startswith("../"):
            raise DataError(f"cannot tag {p}: it is outside the run's data folder {root}")
        hashed = _hash_file(str(full))
        if isinstance(hashed, str):
            raise DataError(f"cannot tag {p}: {hashed} (neither in the run's images nor a "
                            "readable file)")
        refs.append(ImageRef(rel, hashed[1]))
    return refs


def add_tag(run_dir: Path, name: str, refs: list[ImageRef]) -> int:
    """Tag the images ``refs`` with ``name``; returns how many were not tagged so already."""
    name = check_tag_name(name)
    tags = load_tags(run_dir)
    have = tags.setdefault(name, [])
    known = set(have)
    added = [r for r in dict.fromkeys(refs) if r not in known]
    have.extend(added)
    save_tags(run_dir, tags)
    return len(added)


def remove_tag(run_dir: Path, name: str, refs: list[ImageRef] | None = None) -> int:
    """Take ``name`` off the images ``refs`` (off every image when None); returns how many
    lost it. An image is matched by path or by hash, as :func:`images_with` finds it."""
    name = check_tag_name(name)
    tags = load_tags(run_dir)
    if name not in tags:
        raise DataError(f"no tag {name!r} in {run_dir}; tags: "
                        f"{', '.join(sorted(tags)) or 'none yet'}")
    before = len(tags[name])
    if refs is None:
        tags[name] = []
    else:
        paths = {r.path for r in refs}
        shas = {r.sha for r in refs}
        tags[name] = [r for r in tags[name] if r.path not in paths and r.sha not in shas]
    save_tags(run_dir, tags)
    return before - len(tags[name])


def tag_counts(run_dir: Path) -> dict[str, int]:
    """{tag: images tagged}, by name."""
    return {name: len(refs) for name, refs in sorted(load_tags(run_dir).items())}


def resolve(refs: list[ImageRef], manifest: Manifest) -> list[int]:
    """Indices into ``manifest.images`` of the tagged images ``refs``: by path when an image
    has that path, else every image with the same content hash (a renamed or moved file).
    Sorted; images no longer found are left out."""
    by_path = {r.path: i for i, r in enumerate(manifest.images)}
    by_sha: dict[str, list[int]] = {}
    for i, r in enumerate(manifest.images):
        by_sha.setdefault(r.sha, []).append(i)
    found: set[int] = set()
    for ref in refs:
        if ref.path in by_path:
            found.add(by_path[ref.path])
        else:
            found.update(by_sha.get(ref.sha, ()))
    return sorted(found)


def images_with(run_dir: Path, name: str, manifest: Manifest | None = None) -> list[int]:
    """Indices into ``manifest.images`` (the run's own manifest by default, or a rescan of a
    moved folder) of the images tagged ``name``."""
    tags = load_tags(run_dir)
    name = check_tag_name(name)
    if name not in tags:
        raise DataError(f"no tag {name!r} in {run_dir}; tags: "
                        f"{', '.join(sorted(tags)) or 'none yet'}")
    return resolve(tags[name], manifest if manifest is not None else run_manifest(run_dir))
