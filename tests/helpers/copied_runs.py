"""A run that trained on another folder, made without training: a copy of a run folder
(same weights) whose settings and manifest name another image folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from engine.data.scan import scan_data
from engine.run.layout import RunDir


def run_on_folder(run_dir: Path, folder: Path, dest: Path) -> Path:
    """Copy ``run_dir`` to ``dest`` (without its embeddings, maps and curation results) and
    point its config.json and manifest.json at ``folder``."""
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("embeddings", "maps",
                                                                 "curation"))
    config = json.loads(RunDir(dest).config.read_text(encoding="utf-8"))
    config["data"] = str(folder)
    RunDir(dest).config.write_text(json.dumps(config), encoding="utf-8")
    scan_data(folder).save(RunDir(dest).manifest)
    return Path(dest)
