"""The benchmarks' results tables: each run appends its rows to benchmarks/results/<name>.csv.

Every row carries the date, the machine (CPU model and cores, GPU name), the torch version and
the command line, so that figures from different machines and days can stand in one table.
"""

from __future__ import annotations

import csv
import datetime
import os
import platform
import sys
from collections.abc import Iterable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """'<CPU model>, <cores> cores' plus the GPU's name when one is present."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name()}"
    return text


def record(name: str, rows: Iterable[dict], directory: Path = RESULTS) -> Path:
    """Append ``rows`` (dicts with the same keys) to ``<directory>/<name>.csv``.

    A file whose header differs (the benchmark's columns changed) is kept beside the new one
    as ``<name>.<n>.csv`` rather than mixed with it.
    """
    import torch

    rows = list(rows)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.csv"
    meta = {"date": datetime.date.today().isoformat(), "machine": machine(),
            "torch": torch.__version__,
            "command": " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}",
                                 *sys.argv[1:]])}
    fields = list(meta) + [k for k in (rows[0] if rows else {}) if k not in meta]
    if path.exists():
        with path.open(newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        if header != fields:
            n = 1
            while (directory / f"{name}.{n}.csv").exists():
                n += 1
            path.rename(directory / f"{name}.{n}.csv")
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({**meta, **{k: _cell(v) for k, v in row.items()}})
    print(f"results appended to {path}")
    return path


def _cell(value: object) -> object:
    return f"{value:.4g}" if isinstance(value, float) else value
