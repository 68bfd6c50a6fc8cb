"""A run's tags (engine.evaluate.tags: tags.json, named sets of its images) as absolute
image paths in a folder, for the Data page, which shows a folder rather than a run (no Qt).
"""

from __future__ import annotations

from pathlib import Path

from engine.evaluate.tags import load_tags, resolve, run_manifest
from engine.run.layout import RunDir


def same_folder(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same folder (each resolved: symbolic links, "..")."""
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except (OSError, RuntimeError):  # a loop of links, or a path that cannot be resolved
        return False


def tags_for_folder(run_dir: str | Path, folder: str | Path) -> dict[str, list[str]] | None:
    """The run's tags as {tag: absolute paths of its images under ``folder``}, when the
    run's data folder (its manifest's root) is ``folder``; None when it is another folder or
    the run has no manifest yet. A tagged image is found as :func:`engine.evaluate.tags.
    resolve` finds it (by path, else by content hash); the paths are spelled under
    ``folder`` as given (made absolute), so they match what a scan of ``folder`` lists.
    Raises engine.evaluate.embed.RunError when the manifest or tags.json cannot be read.
    """
    if not RunDir(run_dir).manifest.is_file():
        return None
    manifest = run_manifest(Path(run_dir))
    if not same_folder(manifest.root, folder):
        return None
    root = Path(folder).expanduser().absolute()
    return {name: [str(root / manifest.images[i].path) for i in resolve(refs, manifest)]
            for name, refs in sorted(load_tags(Path(run_dir)).items())}
