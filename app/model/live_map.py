"""The frames of a run's live map as plain Python: what the engine wrote in ``live_map/``
(engine.evaluate.live_map) and what the app shows of it (no Qt)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.run.layout import RunDir


class LiveMapError(ValueError):
    """A live map's index cannot be used; str() says why and what to do."""


@dataclass
class LiveMapFrames:
    """One run's live map: its sample of images and a 2-D layout per frame, oldest first."""

    run_dir: Path
    indices: np.ndarray  # int64 (n,): the images' rows in the run's manifest
    paths: list[str]
    labels: np.ndarray  # int64 (n,), -1 where an image has no class
    classes: list[str]
    #: the run's epochs in all (config.json), None when unknown
    total_epochs: int | None = None
    epochs: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    coords: list[np.ndarray] = field(default_factory=list)  # float32 (n, 2) each

    def __len__(self) -> int:
        return len(self.coords)

    @property
    def n(self) -> int:
        """Images on the map."""
        return len(self.indices)

    @property
    def has_labels(self) -> bool:
        return bool(self.classes) and bool((self.labels >= 0).any())

    def add(self, epoch: int, step: int, coords: np.ndarray) -> int:
        """Add the frame after ``epoch`` epochs (replacing one of the same epoch, as the
        engine does when a resumed run redoes it); returns its position."""
        coords = np.asarray(coords, np.float32)
        if coords.shape != (self.n, 2):
            raise LiveMapError(f"a live-map frame of epoch {epoch} has shape {coords.shape}, "
                               f"not ({self.n}, 2): the run's live_map folder is damaged; "
                               "it is rewritten when the run trains again")
        keep = [i for i, e in enumerate(self.epochs) if e != epoch]
        self.epochs = [self.epochs[i] for i in keep]
        self.steps = [self.steps[i] for i in keep]
        self.coords = [self.coords[i] for i in keep]
        at = int(np.searchsorted(np.asarray(self.steps, np.int64), step))
        self.epochs.insert(at, epoch)
        self.steps.insert(at, step)
        self.coords.insert(at, coords)
        return at

    def bounds(self) -> tuple[float, float, float, float]:
        """(x_min, x_max, y_min, y_max) over every frame ((-1, 1, -1, 1) without frames)."""
        if not self.coords:
            return -1.0, 1.0, -1.0, 1.0
        lows = np.min([c.min(axis=0) for c in self.coords], axis=0)
        highs = np.max([c.max(axis=0) for c in self.coords], axis=0)
        return float(lows[0]), float(highs[0]), float(lows[1]), float(highs[1])


def read_frame(path: Path, n: int) -> np.ndarray | None:
    """The float32 (n, 2) frame in ``path``, or None when it is missing or damaged."""
    try:
        coords = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if coords.shape != (n, 2) or not np.isfinite(coords).all():
        return None
    return coords.astype(np.float32, copy=False)


def frame_path(run_dir: Path, event_path: str) -> Path:
    """The file of a live_map event's frame in ``run_dir``: by its name, since the path in
    the event is where the trainer wrote it (another machine, for a run followed)."""
    return RunDir(run_dir).live_map.path / Path(event_path).name


def _total_epochs(run_dir: Path) -> int | None:
    try:
        epochs = json.loads(RunDir(run_dir).config.read_text(encoding="utf-8")).get("epochs")
    except (OSError, ValueError, AttributeError):
        return None
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None


def read_live_map(run_dir: Path) -> LiveMapFrames | None:
    """The live map on disk in ``run_dir``, or None when it has none (yet). Frames whose
    file is missing or damaged are left out. Raises :class:`LiveMapError` for an index
    that cannot be used."""
    run_dir = Path(run_dir)
    files = RunDir(run_dir).live_map
    try:
        text = files.index.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LiveMapError(f"cannot read {files.index}: {exc.strerror or exc}") from None
    try:
        index = json.loads(text)
        indices = np.asarray(index["indices"], np.int64)
        labels = np.asarray(index["labels"], np.int64)
        paths = [str(p) for p in index["paths"]]
        classes = [str(c) for c in index["classes"]]
        frames = [(int(f["epoch"]), int(f["step"]), str(f["file"])) for f in index["frames"]]
    except (ValueError, TypeError, KeyError) as exc:
        raise LiveMapError(f"{files.index} is not a live-map index ({type(exc).__name__}: "
                           f"{exc}); it is rewritten when the run trains again") from None
    if indices.ndim != 1 or labels.shape != indices.shape or len(paths) != len(indices):
        raise LiveMapError(f"{files.index} lists {len(indices)} images, {len(labels)} labels "
                           f"and {len(paths)} paths; it is rewritten when the run trains again")
    data = LiveMapFrames(run_dir, indices, paths, labels, classes, _total_epochs(run_dir))
    for epoch, step, name in frames:
        coords = read_frame(files.path / Path(name).name, data.n)
        if coords is not None:
            data.add(epoch, step, coords)
    return data


def why_no_live_map(run_dir: Path) -> str:
    """Why ``run_dir`` shows no live map (yet), for people, from its config.json."""
    try:
        config = json.loads(RunDir(run_dir).config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    if not isinstance(config, dict):
        config = {}
    if config.get("live_map") == "off":
        return "This run makes no live map (its live_map setting is off)."
    if config.get("knn_every") == 0:
        return ("This run makes no live map: it is made at each kNN evaluation, and the "
                "run's knn_every is 0.")
    if "live_map" not in config and RunDir(run_dir).config.is_file():
        return "This run has no live map: the engine that trained it made none."
    return ("No live map yet: its first frame comes with the first kNN evaluation (every "
            "knn_every epochs, labels or not).")
