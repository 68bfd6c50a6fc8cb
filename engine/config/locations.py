"""Where the engine keeps its files: the decoded-image cache, the demo data and the runs.

Each location can be moved with an environment variable; otherwise the XDG base-directory
rules apply (``$XDG_CACHE_HOME`` / ``$XDG_DATA_HOME``, falling back to ``~/.cache`` and
``~/.local/share``). Nothing is created here: callers make the folders they write to.
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "contrastive-explorer"


def _env_path(name: str) -> Path | None:
    """The path in environment variable ``name``, or None when it is unset or empty."""
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def _xdg_base(name: str, fallback: str) -> Path:
    """An XDG base directory: ``$name`` when set to an absolute path, else ``~/fallback``.

    The XDG specification says relative values are invalid and must be ignored.
    """
    value = _env_path(name)
    if value is not None and value.is_absolute():
        return value
    return Path.home() / fallback


def user_cache_dir() -> Path:
    """Files that can be rebuilt at any time (the decoded-image cache).

    ``$CONTRASTIVE_EXPLORER_CACHE``, else ``$XDG_CACHE_HOME/contrastive-explorer``, else
    ``~/.cache/contrastive-explorer``.
    """
    return (_env_path("CONTRASTIVE_EXPLORER_CACHE")
            or _xdg_base("XDG_CACHE_HOME", ".cache") / APP_NAME)


def user_data_dir() -> Path:
    """Files worth keeping (the demo dataset, and the runs unless moved elsewhere).

    ``$CONTRASTIVE_EXPLORER_DATA``, else ``$XDG_DATA_HOME/contrastive-explorer``, else
    ``~/.local/share/contrastive-explorer``.
    """
    return (_env_path("CONTRASTIVE_EXPLORER_DATA")
            or _xdg_base("XDG_DATA_HOME", ".local/share") / APP_NAME)


def default_runs_root() -> Path:
    """Where new training runs go: ``$CONTRASTIVE_EXPLORER_RUNS``, else ``user_data_dir()/runs``."""
    return _env_path("CONTRASTIVE_EXPLORER_RUNS") or user_data_dir() / "runs"
