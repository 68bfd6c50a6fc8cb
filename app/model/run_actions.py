"""What a person can do to a run folder from the runs list: give it a name, delete it.

A run's name is kept in ``run_dir/app.json`` (the folder itself is never renamed: events,
embeddings and a run still going elsewhere refer to its path), and so is the process id of
an engine left training it when the window closed. No Qt here.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from engine.run.io import write_json_atomic
from engine.run.layout import RunDir

MAX_NAME = 120


class RunActionError(Exception):
    """A run cannot be renamed or deleted; str() says why and what to do."""


def _app_data(run_dir: Path) -> dict:
    try:
        data = json.loads(RunDir(run_dir).app_state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def display_name(run_dir: Path) -> str:
    """The name a person gave the run, or its folder name."""
    name = _app_data(run_dir).get("name")
    return name if isinstance(name, str) and name.strip() else Path(run_dir).name


def rename_run(run_dir: Path, name: str) -> str:
    """Give the run a display name (an empty name goes back to the folder name)."""
    run_dir = Path(run_dir)
    name = " ".join(name.split())
    if len(name) > MAX_NAME:
        raise RunActionError(f"a run name can have at most {MAX_NAME} characters; this one "
                             f"has {len(name)}")
    if not RunDir(run_dir).is_run():
        raise RunActionError(f"{run_dir} is no longer a run folder (it was moved or deleted); "
                             "refresh the runs list")
    data = _app_data(run_dir)
    data["name"] = name
    try:
        write_json_atomic(RunDir(run_dir).app_state, data)
    except OSError as exc:
        raise RunActionError(f"cannot write the name into {run_dir}: {exc.strerror or exc}; "
                             "check that the folder is writable") from None
    return display_name(run_dir)


def mark_running_in_background(run_dir: Path, pid: int) -> None:
    """Note that engine process ``pid`` goes on training the run without a window, so that
    the runs list can say so (a run without its end in events.jsonl looks interrupted)."""
    data = _app_data(run_dir)
    data["background_pid"] = int(pid)
    try:
        write_json_atomic(RunDir(run_dir).app_state, data)
    except OSError:
        pass  # the run goes on regardless; the list will call it interrupted meanwhile


def background_process(run_dir: Path) -> int | None:
    """The process id of the engine left training the run in the background, while that
    process is alive; else None."""
    pid = _app_data(run_dir).get("background_pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError, OverflowError):
        return None  # gone (or another user's process: a reused id)
    try:  # a reused process id belongs to another program; a zombie has no command line
        return pid if b"engine" in Path(f"/proc/{pid}/cmdline").read_bytes() else None
    except OSError:
        return pid  # no /proc (macOS): trust the id


def delete_run(run_dir: Path, runs_root: Path) -> None:
    """Delete a run folder for good. Only folders directly under ``runs_root`` that hold a
    run's config.json are deleted, so a wrong path can never remove anything else."""
    run_dir, runs_root = Path(run_dir).resolve(), Path(runs_root).resolve()
    if run_dir.parent != runs_root or not RunDir(run_dir).is_run():
        raise RunActionError(f"{run_dir} is not a run folder in {runs_root}; nothing deleted")
    try:
        shutil.rmtree(run_dir)
    except OSError as exc:
        raise RunActionError(f"could not delete all of {run_dir}: {exc.strerror or exc}; "
                             "what is left can be removed by hand") from None
