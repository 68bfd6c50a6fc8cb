"""Words and numbers as the command line writes them for people: durations, clocks,
percentages, and the commands that explore a run."""

from __future__ import annotations

import shlex
from pathlib import Path


def duration(seconds: float) -> str:
    """'42 s', '3 min 12 s', '2 h 05 min'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min"


def clock(seconds: float) -> str:
    """'0:42', '12:05', '1:02:03': a time left, as progress bars show it."""
    seconds = max(0, int(round(seconds)))
    minutes, s = divmod(seconds, 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}:{m:02d}:{s:02d}" if hours else f"{m}:{s:02d}"


def percent(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def next_commands(run_dir: str, *, finished: bool) -> list[tuple[str, str]]:
    """What to run next on a run folder: (what it does, in a word or two; the command)."""
    run = shlex.quote(run_dir)
    runs_root = shlex.quote(str(Path(run_dir).parent))
    out = [] if finished else [("go on", f"contrastive-engine train --resume {run}")]
    return out + [
        ("map", f"contrastive-engine map --run {run}"),
        ("kNN", f"contrastive-engine knn --run {run} --baseline"),
        ("probe", f"contrastive-engine probe --run {run} --baseline"),
        ("export", f"contrastive-engine export --run {run} --format torchvision"),
        ("the app", f"contrastive-explorer --runs-root {runs_root}"),
    ]
