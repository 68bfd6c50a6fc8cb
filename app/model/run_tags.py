"""A run's tags as the Explore page uses them: per tag, the indices of the tagged images in
a map's (or embeddings') image order. No Qt: these run in worker threads.

The map's images are named by their paths relative to the data folder; the tags file
(engine.evaluate.tags) keeps each image by that path and its content hash, resolved against
the run's manifest. The two orders can differ (the embeddings are of the folder as it was
when they were made), so images are matched by path, never by position.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.evaluate.tags import (
    add_tag,
    load_tags,
    refs_for_paths,
    remove_tag,
    resolve,
    run_manifest,
)


def tag_indices(run_dir: Path, paths: list[str]) -> dict[str, np.ndarray]:
    """{tag: sorted int64 indices into ``paths``} of the run's tags (images tagged but not
    among ``paths`` are left out; a tag with none of them maps to an empty array)."""
    tags = load_tags(run_dir)
    if not tags:
        return {}
    manifest = run_manifest(run_dir)
    position = {p: i for i, p in enumerate(paths)}
    found = {}
    for name, refs in sorted(tags.items()):
        rows = [position.get(manifest.images[m].path) for m in resolve(refs, manifest)]
        found[name] = np.unique(np.array([r for r in rows if r is not None], np.int64))
    return found


def tag_images(run_dir: Path, name: str, paths: list[str]) -> int:
    """Tag the images at ``paths`` (relative to the data folder) with ``name``; returns how
    many were not tagged so before."""
    return add_tag(run_dir, name, refs_for_paths(run_manifest(run_dir), paths))


def untag_images(run_dir: Path, name: str, paths: list[str] | None) -> int:
    """Take tag ``name`` off the images at ``paths`` (off every image when None); returns
    how many lost it."""
    refs = None if paths is None else refs_for_paths(run_manifest(run_dir), paths)
    return remove_tag(run_dir, name, refs)
