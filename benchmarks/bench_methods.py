"""Every method for the same wall-clock budget: what each learns (kNN and linear-probe
accuracy of the frozen h), how fast it trains (pairs/s) and how much memory it takes.

For each dataset (``--data``: a labelled folder, ``demo`` for the built-in digits, or
``photos`` for benchmarks/make_photo_patches.py's patches of real photographs, made in the
work folder) and each method of ``engine.methods.METHODS`` (or ``--methods a,b``):

1. **Timing pass** (not counted): a child process trains ``--timing-steps`` steps in a
   scratch run and measures the time from the train() call to the first step (scan,
   cache, model), the pairs/s of the steps after the first two, and what is left
   (checkpoint writes).
2. **The run**, in a fresh child process: ``max_steps`` is set from that timing so that
   the whole train() call (set-up, steps, the checkpoint at each epoch's end, the final
   one) fits in ``--seconds``, so the learning-rate schedule (warm-up, cosine decay) runs
   to its end as in a real run; the budget is also enforced: ``should_stop`` ends the run
   at ``--seconds`` after the train() call if the estimate was short (the row then says
   "stopped"). The decoded image cache is built before, once, by this process, so no
   method pays for decoding. The per-epoch kNN monitor is off (``knn_every 0``): the
   budget goes to training, and every method is evaluated the same way afterwards.
3. **Evaluation** (here, after every run): weighted kNN (k=20, T=0.07) and the linear
   probe (L-BFGS, all labels) of engine.evaluate on the frozen encoder's h, on the same
   stratified 80/20 split (seed 0), at the last checkpoint; the same for the untrained
   encoder ("random init", built with the run's seed: the same network for every method).

Plus one **init row**: SimCLR trained for the same budget starting from ``--init`` (a
weights file or ``imagenet``), or by default from the SimCLR run of step 2, exported with
the engine's export code (torchvision format) and read back through ``--init``. That row
has had two budgets of training in all (the first SimCLR run's and its own), which the
table says; it shows what starting from trained weights buys against starting from
random ones.

pairs/s: the median of the run's step events (each the image pairs trained per second
since the previous one, checkpoint time excluded), leaving out steps 1 and 2 (unless the
run had no more). Peak RSS:
``ru_maxrss`` of the run's child process from ``os.wait4`` (that process alone, its
timing pass included, which is the same size of training; this process's decoding and
evaluation are not in it).

Usage:
    python benchmarks/bench_methods.py --seconds 120 --data demo --data photos \
        --out benchmarks/results/methods.json
    python benchmarks/bench_methods.py --seconds 30 --methods simclr,moco --data FOLDER
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: The settings of every run unless --set changes them: the CPU defaults at 32 px.
BASE_SETTINGS = {"backbone": "resnet18", "image_size": 32, "batch_size": 64,
                 "epochs": 100_000, "knn_every": 0, "log_every": 5, "seed": 0}


# ------------------------------------------------------------------------ the child


def _step_rates(run_dir: Path) -> list[float]:
    """pairs_per_s of the run's step events after steps 1 and 2 (all of them when the run
    had no more)."""
    from engine.run.events import read_events

    rates = [(e["step"], e["pairs_per_s"]) for e in read_events(Path(run_dir) / "events.jsonl")
             if e.get("type") == "step" and isinstance(e.get("pairs_per_s"), (int, float))]
    return [r for step, r in rates if step > 2] or [r for _, r in rates]


def _first_step_time(run_dir: Path) -> float | None:
    from engine.run.events import read_events

    return next((e["time"] for e in read_events(Path(run_dir) / "events.jsonl")
                 if e.get("type") == "step"), None)


def worker(spec_file: Path) -> None:
    """One method's timing pass and run (in a child process); writes its result JSON."""
    from engine.config.train_config import TrainConfig
    from engine.run.events import EventWriter
    from engine.training.loop import train

    spec = json.loads(Path(spec_file).read_text(encoding="utf-8"))
    work, seconds = Path(spec["work"]), float(spec["seconds"])
    values = spec["values"]

    # 1. the timing pass: set-up time, step rate, and the rest (checkpoints, the end)
    timing_steps = int(spec["timing_steps"])
    cfg = TrainConfig.from_dict({**values, "max_steps": timing_steps, "log_every": 1})
    called = time.time()
    timing = train(cfg, runs_root=work / "timing", cache_dir=Path(spec["cache_dir"]),
                   events=EventWriter(None))
    ended = time.time()
    if timing.status != "finished":
        raise SystemExit(f"timing pass {timing.status}: {timing.reason}")
    assert timing.run_dir is not None
    rates = _step_rates(timing.run_dir) or [1.0]
    rate = statistics.median(rates)
    batch = int(values["batch_size"])
    step_s = batch / rate
    first = _first_step_time(timing.run_dir) or called
    setup_s = max(0.0, first - called - step_s)  # the first step event comes after a step
    steps_per_epoch = int(spec["steps_per_epoch"])
    checkpoints = -(-timing_steps // steps_per_epoch)  # one at each epoch's end (or the last)
    other_s = max(0.0, (ended - called) - setup_s - timing_steps * step_s) / checkpoints

    # 2. the run: as many steps as fit in the budget with the set-up and a checkpoint per
    # epoch; epochs set to match, so that the warm-up (a tenth of the run) and the cosine
    # decay span the run as they would in a real one. The budget is enforced besides.
    steps = max(1, int((seconds - setup_s) / step_s))
    for _ in range(4):  # the checkpoints depend on the epochs, which depend on the steps
        epochs = -(-steps // steps_per_epoch)
        steps = max(1, int((seconds - setup_s - other_s * epochs) / step_s))
    epochs = -(-steps // steps_per_epoch)
    cfg = TrainConfig.from_dict({**values, "epochs": epochs, "max_steps": steps})
    started = time.perf_counter()
    result = train(cfg, runs_root=work / "runs", cache_dir=Path(spec["cache_dir"]),
                   events=EventWriter(None),
                   should_stop=lambda: time.perf_counter() - started > seconds)
    wall = time.perf_counter() - started
    assert result.run_dir is not None
    rates = _step_rates(result.run_dir)
    Path(spec["out"]).write_text(json.dumps({
        "run_dir": str(result.run_dir), "status": result.status, "reason": result.reason,
        "steps": result.step, "planned_steps": steps, "epochs": result.epoch,
        "seconds": wall, "pairs_per_s": statistics.median(rates) if rates else None,
        "timing": {"setup_s": setup_s, "step_s": step_s, "checkpoint_s": other_s,
                   "steps": timing_steps}}), encoding="utf-8")


# ----------------------------------------------------------------------- the parent


def run_child(name: str, values: dict[str, Any], args: argparse.Namespace, work: Path,
              cache_dir: Path, steps_per_epoch: int) -> dict[str, Any]:
    """Train in a child process; its result with the child's peak RSS (os.wait4)."""
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"work": str(folder), "seconds": args.seconds, "values": values,
            "timing_steps": args.timing_steps, "cache_dir": str(cache_dir),
            "steps_per_epoch": steps_per_epoch, "out": str(folder / "result.json")}
    (folder / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    with open(folder / "child.log", "wb") as log:
        child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker",
                                  str(folder / "spec.json")], stdout=log, stderr=log, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        tail = (folder / "child.log").read_text(errors="replace").strip().splitlines()[-5:]
        raise SystemExit(f"{name} failed (exit {child.returncode}):\n" + "\n".join(tail))
    result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    return result


def evaluate(run_dir: Path, checkpoint: str, cache_dir: Path, device: str) -> dict[str, float]:
    from engine.evaluate import explore

    knn = explore.knn(run_dir, checkpoint, device=device, cache_dir=cache_dir)
    probe = explore.probe(run_dir, checkpoint, device=device, cache_dir=cache_dir)
    return {"knn_top1": knn["top1"], "probe_top1": probe["top1"],
            "majority": knn.get("majority")}


def dataset_folder(name: str, work: Path) -> Path:
    if name == "demo":
        from engine.data.demo import demo_dataset

        return demo_dataset()
    if name == "photos":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from make_photo_patches import make_patches

        make_patches(work / "photos")
        return work / "photos"
    return Path(name)


def prepare(data: Path, values: dict[str, Any], cache_dir: Path) -> tuple[int, int]:
    """Decode the folder's cache once (so no method pays for it); (images, steps/epoch)."""
    from engine.config.train_config import TrainConfig
    from engine.data.cache import build_cache
    from engine.data.scan import scan_folder

    cfg = TrainConfig.from_dict(values)
    assert cfg.cache_size is not None
    cache = build_cache(scan_folder(data, max_pixels=cfg.max_image_pixels), cfg.cache_size,
                        cache_dir, max_image_pixels=cfg.max_image_pixels)
    images = len(cache.labels)
    return images, max(1, images // int(values["batch_size"]))


def bench_dataset(data_name: str, args: argparse.Namespace, work: Path,
                  overrides: dict[str, Any]) -> dict[str, Any]:
    from engine.evaluate.explore import export_encoder_of_run
    from engine.methods import METHODS

    data = dataset_folder(data_name, work)
    values: dict[str, Any] = {**BASE_SETTINGS, **overrides, "data": str(data)}
    values.setdefault("cache_size", max(int(values["image_size"]),
                                        round(int(values["image_size"]) * 8 / 7)))
    cache_dir = work / "cache"
    images, steps_per_epoch = prepare(data, values, cache_dir)
    methods = args.methods.split(",") if args.methods else list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; there are "
                         f"{', '.join(METHODS)}")
    place = work / Path(data).name
    rows: list[dict[str, Any]] = []
    for method in methods:
        print(f"[{data_name}] {method}: {args.seconds:g} s ...", file=sys.stderr, flush=True)
        result = run_child(method, {**values, "method": method}, args, place, cache_dir,
                           steps_per_epoch)
        result.update(method=method, init="random",
                      **evaluate(Path(result["run_dir"]), "last", cache_dir, args.device))
        rows.append(result)
    if rows:
        baseline = {"method": "(untrained)", "init": "random", "steps": 0,
                    **evaluate(Path(rows[0]["run_dir"]), "random", cache_dir, args.device)}
        rows.insert(0, baseline)
    simclr = next((r for r in rows if r["method"] == "simclr" and r.get("run_dir")), None)
    init = args.init
    note = ""
    if not init and simclr is not None and not args.no_init_row:
        exported = export_encoder_of_run(Path(simclr["run_dir"]), "torchvision",
                                         place / "simclr-encoder.pt")
        init = exported["path"]
        note = "the simclr run's export: two budgets of training in all"
    if init and not args.no_init_row:
        print(f"[{data_name}] simclr from {init}: {args.seconds:g} s ...", file=sys.stderr,
              flush=True)
        result = run_child("simclr-init", {**values, "method": "simclr", "init": init}, args,
                           place, cache_dir, steps_per_epoch)
        result.update(method="simclr", init=Path(init).name if init != "imagenet" else init,
                      init_note=note or f"--init {init}",
                      **evaluate(Path(result["run_dir"]), "last", cache_dir, args.device))
        rows.append(result)
    return {"data": str(data), "name": data_name, "images": images,
            "settings": {k: v for k, v in values.items() if k != "data"}, "rows": rows}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _num(row: dict[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    return "" if value is None else format(value, fmt)


def markdown(report: dict[str, Any]) -> str:
    lines = []
    for ds in report["datasets"]:
        s = ds["settings"]
        lines += [f"### {ds['name']}: {ds['images']} images ({ds['data']})", "",
                  f"{s['backbone']} at {s['image_size']} px, batch {s['batch_size']}, "
                  f"{report['seconds']:g} s per method on {report['cpu']} "
                  f"({report['threads']} threads); kNN and probe on h, 80/20 split.", "",
                  "| method | init | steps | status | seconds | pairs/s | peak RSS (MB) | "
                  "kNN top-1 | probe top-1 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in ds["rows"]:
            init = r["init"] + (f" ({r['init_note']})" if r.get("init_note") else "")
            cells = [r["method"], init, str(r.get("steps", "")), r.get("status", ""),
                     _num(r, "seconds", ".0f"), _num(r, "pairs_per_s", ".1f"),
                     _num(r, "peak_rss_mb", ".0f"), f"{100 * r['knn_top1']:.1f}%",
                     f"{100 * r['probe_top1']:.1f}%"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=120.0,
                   help="wall-clock budget of each method's train() call")
    p.add_argument("--data", action="append", default=None,
                   help="a labelled folder, demo or photos (repeat for several; "
                   "default demo)")
    p.add_argument("--methods", default="", help="comma-separated (default: every method)")
    p.add_argument("--init", default="", help="weights for the init row (default: the "
                   "simclr run's export)")
    p.add_argument("--no-init-row", action="store_true", help="leave the init row out")
    p.add_argument("--timing-steps", type=int, default=12)
    p.add_argument("--device", default="auto", help="of the evaluation (training: --set "
                   "device=...)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a training setting of every run, e.g. --set image_size=16")
    p.add_argument("--work", type=Path, help="folder for runs and cache (default: a new "
                   "temporary folder, kept)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return
    import torch

    work = (args.work or Path(tempfile.mkdtemp(prefix="bench-methods-"))).resolve()
    overrides: dict[str, Any] = {}
    for item in args.set:
        name, _, value = item.partition("=")
        overrides[name] = value
    report: dict[str, Any] = {
        "seconds": args.seconds, "cpu": cpu_name(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "work": str(work), "datasets": []}
    for data_name in args.data or ["demo"]:
        report["datasets"].append(bench_dataset(data_name, args, work, overrides))
    print(markdown(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1), encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
