"""What the Explore page shows, read from a run folder: no Qt, safe in worker threads.

:class:`MapData` is a map as the engine made it (``map --json`` or a map saved under maps/);
:func:`saved_neighbours` answers a neighbour query from the saved embeddings, as
``engine.evaluate.explore.neighbours`` would, without loading the encoder.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.cli.explore import write_map_csv
from engine.evaluate.embed import (
    RANDOM_INIT,
    Embeddings,
    checkpoint_name,
    checkpoint_path,
    load_embeddings,
)
from engine.evaluate.maps import MapParams, features_fingerprint, load_cached_map, map_path
from engine.evaluate.neighbours import NeighbourIndex
from engine.run.io import file_sha256
from engine.run.layout import RunDir


@dataclass
class MapData:
    """A map of a run's images: ``coords`` (N, 2) float32 and, per point, the image's path
    (relative to ``root``) and label (-1 = none), plus what it was made from."""

    coords: np.ndarray
    paths: list[str]
    labels: np.ndarray
    classes: list[str]
    root: str
    checkpoint: str
    space: str
    method: str
    _indices: dict[str, int] | None = field(default=None, init=False, repr=False,
                                            compare=False)

    @classmethod
    def from_result(cls, result: dict[str, Any]) -> MapData:
        """From the result of ``engine.evaluate.explore.make_map`` (or the ``map --json`` verb)."""
        return cls(np.asarray(result["coords"], dtype=np.float32).reshape(-1, 2),
                   list(result["paths"]), np.asarray(result["labels"], dtype=np.int64),
                   list(result["classes"] or []), str(result["root"]),
                   str(result["checkpoint"]), str(result["space"]),
                   str(result["params"]["method"]))

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def has_labels(self) -> bool:
        return bool(self.classes) and bool((self.labels >= 0).any())

    def absolute_path(self, i: int) -> str:
        return str(Path(self.root) / self.paths[i])

    def index_of(self, path: str) -> int | None:
        """The index of the image at absolute ``path``, or None when it is not on the map
        (looked up by its path relative to the root in a dictionary made on the first call:
        about 10 ms at 100k images)."""
        try:
            relative = Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return None  # not under the root
        if self._indices is None:
            self._indices = {p: i for i, p in enumerate(self.paths)}
        return self._indices.get(relative)

    def class_name(self, i: int) -> str | None:
        label = int(self.labels[i])
        return self.classes[label] if label >= 0 and self.classes else None

    def describe(self) -> str:
        return (f"{self.method.upper()} map of {len(self):,} images ({self.checkpoint}, "
                f"{self.space})")

    def write_csv(self, path: Path) -> None:
        """Columns path, label, class, x, y: the same file as ``contrastive-engine map --csv``."""
        write_map_csv(Path(path), {"paths": self.paths, "labels": self.labels.tolist(),
                                    "classes": self.classes, "coords": self.coords})



_lock = threading.Lock()
# Held while a search index is built, so a query and the warm-up after the map is shown
# build it once between them rather than each.
_building = threading.Lock()
_sha_cache: dict[tuple[str, int, int], str] = {}
# The embeddings last opened (memory-mapped: their paths and labels are what they hold in
# memory) with the checkpoint hash they were made from, and the search indexes over their
# spaces, by (folder, index.json's modification time and size) and (that key, space): a map
# and a neighbour query of the same checkpoint share one open set. The last KEEP of each
# are kept, for the Compare page's two sides (a fast index's float16 rows take 0.4 GB at
# 100k x 2048).
KEEP = 2
_embeddings_cache: OrderedDict[tuple[str, int, int], tuple[str, Embeddings]] = OrderedDict()
_index_cache: OrderedDict[tuple[tuple[str, int, int], str], NeighbourIndex] = OrderedDict()


def _remember(cache: OrderedDict, key: Any, value: Any) -> None:
    """Keep ``value`` as the newest of ``cache``'s KEEP entries (call with _lock held)."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > KEEP:
        cache.popitem(last=False)


def _checkpoint_sha(run_dir: Path, checkpoint: str) -> str:
    path = checkpoint_path(run_dir, checkpoint)
    if path is None:
        return RANDOM_INIT
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _lock:
        if key in _sha_cache:
            return _sha_cache[key]
    sha = file_sha256(path)
    with _lock:
        _sha_cache[key] = sha
    return _sha_cache[key]


def _saved(run_dir: Path, checkpoint: str) -> tuple[tuple[str, int, int], Embeddings] | None:
    """The saved embeddings of ``checkpoint`` and the key they are kept under, or None when
    there are none of that checkpoint file (none yet, or the run went on since). index.json
    is read again only when it changed (reading 100k paths takes about 70 ms)."""
    files = RunDir(run_dir).embedding(checkpoint_name(run_dir, checkpoint))
    try:
        stat = files.index.stat()
    except OSError:
        return None
    sha = _checkpoint_sha(Path(run_dir), checkpoint)
    key = (str(files.path), stat.st_mtime_ns, stat.st_size)
    with _lock:
        cached = _embeddings_cache.get(key)
        if cached is not None:
            _embeddings_cache.move_to_end(key)
    if cached is None:
        try:
            index = json.loads(files.index.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(index, dict) or index.get("checkpoint_sha256") != sha:
            return None
        cached = sha, load_embeddings(files.path, index=index)
        with _lock:
            _remember(_embeddings_cache, key, cached)
    return (key, cached[1]) if cached[0] == sha else None


def saved_embeddings(run_dir: Path, checkpoint: str) -> Embeddings | None:
    """The saved embeddings of ``checkpoint``, or None when there are none or they were made
    from another checkpoint file."""
    found = _saved(run_dir, checkpoint)
    return found[1] if found is not None else None


def _neighbour_index(run_dir: Path, checkpoint: str, space: str
                     ) -> tuple[Embeddings, NeighbourIndex] | None:
    """The saved embeddings and a search index over their ``space``, kept for the next
    query while the files stay the same."""
    found = _saved(run_dir, checkpoint)
    if found is None:
        return None
    key, emb = found
    with _building:
        with _lock:
            if (key, space) in _index_cache:
                _index_cache.move_to_end((key, space))
                return emb, _index_cache[(key, space)]
        index = NeighbourIndex(emb.features if space == "h" else emb.projections)
        with _lock:
            _remember(_index_cache, (key, space), index)
    return emb, index


def warm_neighbour_index(run_dir: Path, checkpoint: str, space: str) -> None:
    """Build the search index of the saved embeddings ahead of the first query (from 20k
    images the float16 rows take a few seconds); nothing when there are none. Failures
    are left for the query to report."""
    try:
        _neighbour_index(run_dir, checkpoint, space)
    except Exception:
        pass


def saved_neighbours(run_dir: Path, checkpoint: str, space: str, index: int, k: int
                     ) -> dict[str, Any] | None:
    """The ``k`` nearest images to image ``index`` (itself left out), from the saved
    embeddings, in the form of ``engine.evaluate.explore.neighbours``; None when the checkpoint has
    no current embeddings yet."""
    found = _neighbour_index(run_dir, checkpoint, space)
    if found is None:
        return None
    emb, nn = found
    idx, scores = nn.query_index(index, k + 1)  # the image itself first: dropped below
    results = []
    for j, score in zip(idx[0, 1:].tolist(), scores[0, 1:].tolist()):
        label = int(emb.labels[j])
        results.append({"index": j, "path": emb.paths[j], "score": round(float(score), 6),
                        "label": label if label >= 0 else None,
                        "class": emb.classes[label] if label >= 0 and emb.classes else None})
    label = int(emb.labels[index])
    query = {"index": index, "path": emb.paths[index],
             "class": emb.classes[label] if label >= 0 and emb.classes else None}
    return {"query": query, "k": len(results),
            "space": space, "checkpoint": emb.checkpoint, "root": emb.root,
            "neighbours": results}


def saved_map(run_dir: Path, checkpoint: str, space: str, params: MapParams) -> MapData | None:
    """The map the engine saved for these embeddings and parameters, or None."""
    emb = saved_embeddings(run_dir, checkpoint)
    if emb is None:
        return None
    vectors = emb.features if space == "h" else emb.projections
    path = map_path(RunDir(run_dir).maps, params, f"{emb.checkpoint}-{space}")
    coords = load_cached_map(path, features_fingerprint(vectors), len(vectors))
    if coords is None:
        return None
    return MapData(coords, emb.paths, emb.labels, emb.classes, emb.root, emb.checkpoint,
                   space, params.method)
