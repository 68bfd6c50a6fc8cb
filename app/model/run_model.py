"""What the app knows about training runs, as plain Python (no Qt): the curves of one run
built from its events, and the list of runs in a runs folder.

Widgets subscribe to these and render; they do not compute.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.model.run_actions import background_process
from engine.run import schema
from engine.run.events import read_events
from engine.run.layout import RunDir

CURVES = ("loss", "lr", "positive_pair_similarity", "embedding_std", "pairs_per_s")

#: A run without its run_end whose events.jsonl changed less than this long ago is taken to
#: be trained by a process of its own (a terminal, torchrun on a shared disk): "running
#: elsewhere". Older, the process is taken to have died: "interrupted". The engine writes a
#: step event every few seconds on any sensible setting (log_every steps), so ten minutes
#: leaves room for slow steps, a long evaluation and some clock skew of a network share.
LIVE_EVENTS_S = 600
RUNNING_ELSEWHERE = "running elsewhere"

#: The fields the app reads from each event type, what they must be (as problems name them:
#: "an integer", "a number", "text", ...) and whether the event is unusable without them,
#: from the engine's schema (engine.run.schema). Numbers may be null (the engine writes NaN
#: and infinity as null) unless required. Other fields are ignored (newer engines may add
#: some), as are other types.
EVENT_FIELDS: dict[str, dict[str, tuple[str, bool]]] = {
    name: {f.name: (schema.PHRASES[f.kind], f.required) for f in described.fields}
    for name, described in schema.EVENTS.items()}


def event_problems(event: dict[str, Any]) -> list[str]:
    """What is wrong with an event of a known type, for people ("step event: loss is
    missing", "step event: lr is text, not a number"); [] for a good event or an unknown
    type (a newer engine's, which readers ignore)."""
    return schema.field_problems(event)


def _number(event: dict[str, Any], name: str) -> float:
    value = event.get(name)
    return float(value) if schema.fits(value, "number") else math.nan


def _integer(event: dict[str, Any], name: str) -> int | None:
    value = event.get(name)
    return value if schema.fits(value, "integer") else None


def _mapping(event: dict[str, Any], name: str) -> dict[str, Any]:
    value = event.get(name)
    return value if isinstance(value, dict) else {}


#: The engine's reasons speak to its command line; the window has buttons instead.
_CLI_TO_WINDOW = (
    (re.compile(r"--resume RUN_DIR goes on"), "Resume goes on"),
    (re.compile(r"--resume to go on"), "press Resume to go on"),
    (re.compile(r"then --resume the run"), "then press Resume"),
    (re.compile(r"--resume"), "Resume"),
    # Any other flag is a setting of the form: "lower --batch-size" -> "lower batch size".
    (re.compile(r"--([a-z]+(?:-[a-z]+)*)"), lambda m: m[1].replace("-", " ")),
)


def window_words(reason: str) -> str:
    """An engine reason in the window's words: "checkpoint saved, --resume to go on" ->
    "checkpoint saved, press Resume to go on" (the engine keeps its words for the CLI)."""
    for pattern, words in _CLI_TO_WINDOW:
        reason = pattern.sub(words, reason)
    return reason


def resume_note(position: int | None, checkpoint_step: int | None) -> str:
    """Where Resume goes on from when that is not the step the run reached: "resumes from
    step 30 (the last checkpoint)" (a run that died after steps past its checkpoint); ""
    when the checkpoint holds the step reached, or either is unknown. The runs list and the
    Train page both say it in these words."""
    if position is None or checkpoint_step is None or checkpoint_step >= position:
        return ""
    return f"resumes from step {checkpoint_step} (the last checkpoint)"


@dataclass
class RunHistory:
    """The curves and state of one run, built event by event (live or replayed)."""

    steps: list[int] = field(default_factory=list)
    curves: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in CURVES})
    smoothed_loss: list[float] = field(default_factory=list)
    #: The pairs per second, smoothed as the loss is (the raw rate jumps from step to step).
    smoothed_rate: list[float] = field(default_factory=list)
    epoch_losses: list[tuple[int, float]] = field(default_factory=list)
    #: (step, weighted kNN top-1 accuracy) from the engine's "eval" events, in step order.
    knn: list[tuple[int, float]] = field(default_factory=list)
    total_steps: int | None = None
    steps_per_epoch: int | None = None
    status: str = "running"
    reason: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    unknown_events: int = 0
    #: Events with missing or wrong-typed fields (see :func:`event_problems`): what is
    #: usable of them is kept, the rest ignored.
    bad_events: int = 0
    #: (epoch, step) of the last checkpoint the engine reported writing, or None.
    checkpoint: tuple[int | None, int | None] | None = None
    smoothing: float = 0.9  # exponential moving average weight of the smoothed curves

    def add(self, event: dict[str, Any]) -> list[str]:
        """Fold one event in and return what is wrong with it ([] for a good event).

        Unknown types (from a newer engine) are counted and ignored. Fields that are missing
        or of the wrong type are ignored; an event without its required fields (a step
        without a loss) is counted in ``bad_events`` and kept only as far as it is usable.
        """
        kind = event.get("type")
        problems = event_problems(event)
        if problems:
            self.bad_events += 1
        if kind == "run_start":
            self.total_steps = _integer(event, "total_steps")
            self.steps_per_epoch = _integer(event, "steps_per_epoch")
            self.config = _mapping(event, "config")
            self.dataset = _mapping(event, "dataset")
            self.device = _mapping(event, "device")
            self.status, self.reason = "running", ""
        elif kind == "step":
            step = _integer(event, "step")
            if step is None:
                return problems
            if self.steps and step <= self.steps[-1]:
                self._truncate(step)  # a resumed run repeats no steps, but be safe
            self.steps.append(step)
            for key in CURVES:
                self.curves[key].append(_number(event, key))
            self._smooth(self.smoothed_loss, self.curves["loss"][-1])
            self._smooth(self.smoothed_rate, self.curves["pairs_per_s"][-1])
        elif kind == "epoch_end":
            epoch = _integer(event, "epoch")
            if epoch is not None:
                self.epoch_losses.append((epoch, _number(event, "loss")))
        elif kind == "eval":
            step, top1 = _integer(event, "step"), _number(event, "knn_top1")
            if step is not None and not math.isnan(top1):
                self.knn = [(s, v) for s, v in self.knn if s < step] + [(step, top1)]
        elif kind == "warning":
            self.warnings.append(str(event.get("message", "")))
        elif kind == "checkpoint":
            if not problems:
                self.checkpoint = (_integer(event, "epoch"), _integer(event, "step"))
        elif kind == "run_end":
            status = event.get("status")
            self.status = status if isinstance(status, str) and status else "failed"
            self.reason = str(event.get("reason", ""))
        elif kind not in EVENT_FIELDS:
            self.unknown_events += 1
        return problems

    def _smooth(self, smoothed: list[float], value: float) -> None:
        """Append the exponential moving average of ``smoothed``'s curve with ``value``."""
        previous = smoothed[-1] if smoothed else value
        if math.isnan(previous):
            previous = value
        # A step without a usable value leaves a gap in the raw curve, not in the smoothed
        smoothed.append(previous if math.isnan(value) else
                        self.smoothing * previous + (1 - self.smoothing) * value)

    def _truncate(self, step: int) -> None:
        keep = next((i for i, s in enumerate(self.steps) if s >= step), len(self.steps))
        del self.steps[keep:]
        del self.smoothed_loss[keep:]
        del self.smoothed_rate[keep:]
        for values in self.curves.values():
            del values[keep:]

    @property
    def has_labels(self) -> bool | None:
        """Whether the run's folder has classes (None before its run_start)."""
        if not self.dataset:
            return None
        classes = self.dataset.get("classes")
        return isinstance(classes, list) and len(classes) >= 2

    @property
    def best_knn(self) -> float | None:
        """The best kNN accuracy measured so far, or None."""
        return max((v for _, v in self.knn), default=None)

    @property
    def position(self) -> int | None:
        """The step the run has reached: its last logged step, or its last checkpoint's
        when that is later (a run stopped between two logged steps saves where it is, and
        resumes from there). None before any step."""
        saved = self.checkpoint[1] if self.checkpoint else None
        steps = [s for s in (self.steps[-1] if self.steps else None, saved) if s is not None]
        return max(steps) if steps else None

    def where(self) -> str:
        """The step reached for people, "step 37 of 100", and once the run has ended, where
        Resume goes on from when that is earlier: "step 37 of 100; resumes from step 30
        (the last checkpoint)". "" before any step."""
        position = self.position
        if position is None:
            return ""
        text = f"step {position}" + (f" of {self.total_steps}" if self.total_steps else "")
        if self.status != "running":
            note = resume_note(position, self.checkpoint[1] if self.checkpoint else None)
            text += f"; {note}" if note else ""
        return text

    @property
    def progress(self) -> float | None:
        """Fraction of the planned steps done, or None before the run has started."""
        position = self.position
        if not self.total_steps or position is None:
            return None
        return min(1.0, position / self.total_steps)

    def eta_seconds(self, window: int = 5) -> float | None:
        """Seconds left at the recent training speed."""
        if not self.total_steps or not self.steps:
            return None
        rates = [r for r in self.curves["pairs_per_s"][-window:] if r > 0 and math.isfinite(r)]
        batch = self.config.get("batch_size")
        if not rates or not schema.fits(batch, "number") or batch <= 0:
            return None
        steps_per_s = (sum(rates) / len(rates)) / batch
        return max(0, self.total_steps - self.steps[-1]) / steps_per_s

    @classmethod
    def replay(cls, events_path: Path) -> RunHistory:
        history = cls()
        for event in read_events(events_path):  # half-written lines are skipped
            history.add(event)
        if history.status == "running":
            history.status = "interrupted"  # no run_end: the engine died or is still going
        return history


@dataclass
class TailRead:
    """What one :meth:`EventTail.read` found."""

    #: Whole lines appended since the last read (without their newline), oldest first.
    lines: list[str]
    #: The file was replaced or truncated: ``lines`` start again from its beginning, and
    #: what was built from the earlier lines is to be thrown away.
    restarted: bool = False
    #: The read stopped at its size limit: more is already there; read again soon.
    more: bool = False


class EventTail:
    """The lines appended to an events.jsonl that another process writes, for following a
    run live. Each :meth:`read` reads only the bytes added since the last one; a last line
    without its newline yet is kept until the newline arrives (a writer may be half-way
    through it). A file replaced (a new inode) or cut shorter, or whose bytes before the
    read position changed, is read again from the start. No Qt here.
    """

    _CHECK_BYTES = 64  # bytes before the read position compared at each read

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0  # bytes read so far
        self.partial = b""  # the start of a line whose newline has not arrived yet
        #: When the file last changed (Unix seconds), as of the last read; None before.
        self.mtime: float | None = None
        self._identity: tuple[int, int] | None = None
        self._before = b""  # the last bytes read, to notice a rewritten file

    def read(self, max_bytes: int | None = None) -> TailRead:
        """Read what was appended (at most ``max_bytes``). Raises OSError when the file
        cannot be read (gone, no permission)."""
        restarted = False
        with open(self.path, "rb") as f:
            stat = os.fstat(f.fileno())
            self.mtime = stat.st_mtime
            identity = (stat.st_dev, stat.st_ino)
            if self._identity is not None and (
                    identity != self._identity or stat.st_size < self.offset
                    or not self._unchanged(f)):
                self.offset, self.partial, self._before = 0, b"", b""
                restarted = True
            self._identity = identity
            f.seek(self.offset)
            data = f.read(-1 if max_bytes is None else max_bytes)
        self.offset += len(data)
        if data:
            self._before = (self._before + data)[-self._CHECK_BYTES:]
        *complete, self.partial = (self.partial + data).split(b"\n")
        lines = [line.decode("utf-8", errors="replace") for line in complete]
        more = max_bytes is not None and len(data) == max_bytes
        return TailRead(lines, restarted, more)

    def _unchanged(self, f) -> bool:
        if not self._before:
            return True
        f.seek(self.offset - len(self._before))
        return f.read(len(self._before)) == self._before


@dataclass
class RunSummary:
    """One line of the runs list."""

    path: Path
    name: str
    method: str
    dataset: str
    status: str
    steps: int
    last_loss: float | None
    best_knn: float | None = None
    problem: str = ""
    #: The last checkpoint written (checkpoints/last.pt), for people: "checkpoint saved"
    #: when it holds the step the run reached (``steps``), "resumes from step 6 (the last
    #: checkpoint)" when the run went further (a crash after it: resuming goes back there;
    #: :func:`resume_note`); "" when there is none.
    checkpoint: str = ""
    #: When events.jsonl last changed (Unix seconds), None without one.
    events_mtime: float | None = None
    #: The steps the run plans (from its run_start), None when unknown.
    total_steps: int | None = None


@dataclass(frozen=True)
class _Replayed:
    """What the runs list needs of a replayed events.jsonl (kept per file version, so an
    unchanged run is not read again at each refresh)."""

    status: str
    steps: int
    last_loss: float | None
    best_knn: float | None
    checkpoint_step: int | None
    total_steps: int | None = None


#: events.jsonl path -> ((device, inode, size, mtime in ns), what its replay gave).
_replayed: dict[Path, tuple[tuple[int, int, int, int], _Replayed]] = {}
_REPLAYED_MAX = 1000


def _replay_for_list(events: Path, stat: os.stat_result) -> _Replayed:
    key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    cached = _replayed.get(events)
    if cached is not None and cached[0] == key:
        return cached[1]
    history = RunHistory.replay(events)
    replayed = _Replayed(history.status, history.position or 0,
                         history.curves["loss"][-1] if history.steps else None,
                         history.best_knn, history.checkpoint[1] if history.checkpoint else None,
                         history.total_steps)
    if len(_replayed) >= _REPLAYED_MAX:
        _replayed.clear()
    _replayed[events] = (key, replayed)
    return replayed


def read_run_config(path: Path) -> dict[str, Any] | None:
    """The settings in a run folder's config.json, None when it cannot be read."""
    try:
        config = json.loads(RunDir(path).config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def summarise_run(path: Path) -> RunSummary:
    """A run folder's summary; a damaged folder gives a summary that says what is wrong."""
    name, run = path.name, RunDir(path)
    try:
        config = json.loads(run.config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return RunSummary(path, name, "?", "?", "unreadable", 0, None, None,
                          f"config.json cannot be read ({type(exc).__name__})")
    if not isinstance(config, dict):
        return RunSummary(path, name, "?", "?", "unreadable", 0, None, None,
                          "config.json does not hold a configuration")
    events = run.events
    try:
        stat = events.stat() if events.is_file() else None
        replayed = (_replay_for_list(events, stat) if stat is not None
                    else _Replayed("new", 0, None, None, None))
    except OSError as exc:  # e.g. deleted while it was read
        return RunSummary(path, name, "?", "?", "unreadable", 0, None, None,
                          f"events.jsonl cannot be read ({type(exc).__name__})")
    checkpoint = ""
    if run.last_checkpoint.is_file():
        step = replayed.checkpoint_step
        checkpoint = resume_note(replayed.steps, step) or "checkpoint saved"
    status = replayed.status
    if status == "interrupted" and background_process(path) is not None:
        status = "running in the background"  # left going when a window closed
    elif status == "interrupted" and stat is not None and (
            time.time() - stat.st_mtime < LIVE_EVENTS_S):
        status = RUNNING_ELSEWHERE  # another process writes it (a window may know better)
    return RunSummary(path, name, str(config.get("method", "?")),
                      Path(str(config.get("data", "?"))).name, status, replayed.steps,
                      replayed.last_loss, replayed.best_knn, checkpoint=checkpoint,
                      events_mtime=stat.st_mtime if stat is not None else None,
                      total_steps=replayed.total_steps)


def list_runs(runs_root: Path) -> list[RunSummary]:
    """Every run folder under ``runs_root`` (folders with a config.json), newest first."""
    root = Path(runs_root)
    if not root.is_dir():
        return []
    try:
        folders = [p for p in root.iterdir() if p.is_dir() and RunDir(p).config.exists()]
    except OSError:  # the runs folder went away while it was listed
        return []
    runs = [summarise_run(p) for p in folders]
    # A folder deleted while the list was made is left out, not shown as damaged.
    return sorted((r for r in runs if r.path.is_dir()), key=lambda r: r.name, reverse=True)
