"""The run folder: the one place that knows its layout.

Every training run is a folder (DESIGN.md, "Run directory"); the engine writes it and the app
reads it, both through :class:`RunDir`, so no other module spells a file name in it::

    <runs root>/<yyyymmdd-hhmmss>-<method>-<dataset>/
      config.json          resolved settings, written before the first step
      manifest.json        images used, labels, skipped files and why
      events.jsonl         every event (engine.run.events), for replay
      app.json             the app's own notes on the run (display name, background pid)
      tags.json            named tags on images (engine.evaluate.tags), by path and hash
      data-list.txt|.csv   a copy of the image list trained on, when --data was a list
      checkpoints/         last.pt (rewritten), epoch-NNNN.pt (kept)
      embeddings/<name>/   index.json, features.npy (h), projections.npy (z)
      maps/                computed 2-d maps and their parameters
      live_map/            index.json, epoch-NNNN.npy: the 2-d map made while training
      probes/              kNN and linear-probe results as JSON
      exports/             exported encoders, each with a metadata JSON beside it
      curation/            duplicates, outliers, likely label mistakes and neighbourhood
                           comparisons with another embedding, as JSON
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

LAST = "last"  # the checkpoint name of the newest state of a run
RANDOM_INIT = "random"  # the checkpoint name of the untrained encoder (no file)
CHECKPOINT_SUFFIX = ".pt"
_NUMBERED = re.compile(r"epoch-(\d+)\.pt")


def epoch_checkpoint_name(epoch: int) -> str:
    """The name of the checkpoint kept after ``epoch`` epochs: "epoch-0010"."""
    return f"epoch-{epoch:04d}"


@dataclass(frozen=True)
class EmbeddingFiles:
    """One saved embedding of a run's images: ``embeddings/<name>/``."""

    path: Path

    @property
    def index(self) -> Path:
        """JSON: the checkpoint's hash, the images (path, label) and the array shapes."""
        return self.path / "index.json"

    @property
    def features(self) -> Path:
        """float32 (N, feature dim): the encoder's output h."""
        return self.path / "features.npy"

    @property
    def projections(self) -> Path:
        """float32 (N, projection dim): the projection head's output z."""
        return self.path / "projections.npy"


@dataclass(frozen=True)
class LiveMapFiles:
    """The map a run draws while it trains (engine.evaluate.live_map): ``live_map/``."""

    path: Path

    @property
    def index(self) -> Path:
        """JSON: the sample's images (indices, paths, labels, classes) and its frames."""
        return self.path / "index.json"

    def frame(self, epoch: int) -> Path:
        """float32 (n, 2): the map after ``epoch`` epochs, "epoch-0010.npy"."""
        return self.path / f"{epoch_checkpoint_name(epoch)}.npy"


@dataclass(frozen=True)
class RunDir:
    """The paths of one run folder. Creating one touches nothing on disk."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    # --- files ---------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def manifest(self) -> Path:
        return self.path / "manifest.json"

    @property
    def events(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def app_state(self) -> Path:
        return self.path / "app.json"

    @property
    def tags(self) -> Path:
        """JSON: named tags on images, each image by its path and content hash."""
        return self.path / "tags.json"

    def data_list(self, suffix: str) -> Path:
        """The copy of the image list (``suffix`` ".txt" or ".csv") a run trained on."""
        return self.path / f"data-list{suffix.lower()}"

    def data_lists(self) -> list[Path]:
        """The copies of image lists in the folder (at most one for a run)."""
        return sorted(self.path.glob("data-list.*"))

    def is_run(self) -> bool:
        """Whether the folder holds a run (its config.json is written before any step)."""
        return self.config.is_file()

    # --- checkpoints ---------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint(LAST)

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.checkpoint(epoch_checkpoint_name(epoch))

    def checkpoint(self, name: str) -> Path:
        """The file of checkpoint ``name`` ("last", "epoch-0010")."""
        return self.checkpoints / f"{name}{CHECKPOINT_SUFFIX}"

    def checkpoint_files(self) -> list[Path]:
        """Every checkpoint file in the folder (any name)."""
        return sorted(self.checkpoints.glob(f"*{CHECKPOINT_SUFFIX}"))

    def has_checkpoint(self) -> bool:
        return bool(self.checkpoint_files())

    def numbered_checkpoints(self) -> list[tuple[int, Path]]:
        """The kept epoch-NNNN.pt files as (epoch, path), oldest first."""
        return sorted((int(m[1]), p) for p in self.checkpoints.glob("epoch-*.pt")
                      if (m := _NUMBERED.fullmatch(p.name)))

    def checkpoint_names(self) -> list[str]:
        """The names of the saved checkpoints, oldest first, "last" at the end."""
        names = [p.stem for _, p in self.numbered_checkpoints()]
        return names + ([LAST] if self.last_checkpoint.is_file() else [])

    def checkpoint_steps(self) -> dict[str, int]:
        """The optimiser step saved in each checkpoint file that exists, by name, as the
        checkpoint events of events.jsonl say (the last event per file wins): reading the
        events is cheap, loading a checkpoint is not. Files without an event are left out."""
        from engine.run.events import read_events

        names = set(self.checkpoint_names())
        steps: dict[str, int] = {}
        if not names or not self.events.is_file():
            return steps
        try:
            for event in read_events(self.events):
                path, step = event.get("path"), event.get("step")
                if event.get("type") != "checkpoint" or not isinstance(path, str):
                    continue
                name = Path(path).name.removesuffix(CHECKPOINT_SUFFIX)
                if name in names and isinstance(step, int) and not isinstance(step, bool):
                    steps[name] = step
        except OSError:
            return {}
        return steps

    def checkpoint_choices(self) -> list[tuple[str, str]]:
        """The checkpoints to offer a person, newest first, as (name, label): "last" and
        the newest epoch-NNNN.pt are one entry, "epoch 2 (last)" (named "last"), when they
        hold the same step; otherwise each is its own entry ("last (step 57)")."""
        numbered = self.numbered_checkpoints()
        has_last = self.last_checkpoint.is_file()
        steps = self.checkpoint_steps() if has_last and numbered else {}
        choices = [(p.stem, f"epoch {epoch}") for epoch, p in numbered]
        if has_last:
            newest = numbered[-1][1].stem if numbered else None
            if newest is not None and steps.get(LAST) is not None \
                    and steps.get(LAST) == steps.get(newest):
                choices[-1] = (LAST, f"epoch {numbered[-1][0]} (last)")
            else:
                step = steps.get(LAST)
                choices.append((LAST, "last" + (f" (step {step})" if step is not None else "")))
        return list(reversed(choices))

    # --- results -------------------------------------------------------------------------
    @property
    def embeddings(self) -> Path:
        return self.path / "embeddings"

    def embedding(self, name: str) -> EmbeddingFiles:
        """The saved embedding called ``name`` (a checkpoint name, maybe with a suffix)."""
        return EmbeddingFiles(self.embeddings / name)

    @property
    def maps(self) -> Path:
        return self.path / "maps"

    @property
    def live_map(self) -> LiveMapFiles:
        """The map made while training (index.json and one .npy per frame)."""
        return LiveMapFiles(self.path / "live_map")

    @property
    def probes(self) -> Path:
        return self.path / "probes"

    @property
    def exports(self) -> Path:
        return self.path / "exports"

    @property
    def curation(self) -> Path:
        return self.path / "curation"

    def curation_result(self, kind: str, checkpoint: str, space: str) -> Path:
        """A curation verb's saved result: curation/<kind>-<checkpoint>-<space>.json."""
        return self.curation / f"{kind}-{checkpoint}-{space}.json"
