"""The GPU check's own pieces (benchmarks/gpu_check.sh runs them): the environment, the CUDA
tests, and the summary of every piece's figures.

- ``env FILE``: the machine as JSON: GPUs (torch's view and nvidia-smi's: name, memory,
  driver), CUDA and cuDNN versions, torch, torchvision and lightly versions, CPU model, cores
  and memory;
- ``tests FILE -- PYTEST_ARGS...``: runs pytest with those arguments, writes its output and a
  last line ``summary: ...`` (pytest's closing counts) to FILE. Exit 0 when pytest ran, even
  with failing tests (the summary shows them); pytest's status when it could not run;
- ``summary OUT_DIR``: reads the figures files the check wrote there and writes
  OUT_DIR/summary.md: the tables to paste into BENCHMARKS.md, and the targets of issue 16.

Run:  .venv/bin/python benchmarks/gpu_check.py env|tests|summary ...
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

#: Issue 16's targets for ResNet-50 SimCLR at 224 px on an H100-class GPU.
TARGET_PAIRS_PER_S = 3000
TARGET_VS_LIGHTLY = 2.0
TARGET_AUGMENT_RATIO = 5.0


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def nvidia_smi() -> list[dict] | str:
    """nvidia-smi's view of each GPU, or why there is none."""
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi not found"
    fields = ["name", "memory.total", "driver_version", "clocks.max.sm", "power.limit",
              "pci.bus_id"]
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"nvidia-smi failed: {error}"
    if done.returncode != 0:
        return f"nvidia-smi failed: {(done.stderr or done.stdout).strip()[:300]}"
    return [dict(zip(fields, (v.strip() for v in line.split(",")), strict=False))
            for line in done.stdout.splitlines() if line.strip()]


def environment() -> dict:
    import torch
    import torchvision

    try:
        import lightly
        lightly_version = lightly.__version__
    except ImportError:
        lightly_version = "not installed"
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"name": p.name, "memory_gb": round(p.total_memory / 2**30, 1),
                         "capability": f"{p.major}.{p.minor}",
                         "multiprocessors": p.multi_processor_count})
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gpus": gpus, "nvidia_smi": nvidia_smi(),
        "cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda,
        "cudnn": cudnn, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "lightly": lightly_version, "python": platform.python_version(),
        "cpu": cpu_model(), "cpu_cores": os.cpu_count(), "memory_gb": memory_gb(),
        "torch_threads": torch.get_num_threads(),
    }


def run_tests(out: Path, pytest_args: list[str]) -> int:
    done = subprocess.run([sys.executable, "-m", "pytest", *pytest_args],
                          capture_output=True, text=True)
    text = done.stdout + done.stderr
    closing = [line.strip("= ") for line in text.splitlines()
               if re.search(r"\d+ (passed|failed|skipped|deselected|error)", line)]
    summary = closing[-1] if closing else f"no summary (pytest exit {done.returncode})"
    out.write_text(f"$ pytest {' '.join(pytest_args)}\n{text}\nsummary: {summary}\n")
    print(f"summary: {summary}")
    return 0 if done.returncode in (0, 1) else done.returncode


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_json(path: Path) -> dict | list | None:
    return json.loads(path.read_text()) if path.is_file() else None


def pieces(out: Path) -> list[dict]:
    path = out / "pieces.tsv"
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:] if line]


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def grid_table(rows: list[dict], title: str, status: str) -> list[str]:
    lines = [f"### {title}", ""]
    measured = [r for r in rows if r.get("kind") == "row"]
    errors = [r for r in rows if r.get("kind") == "error"]
    if measured:
        lines += ["| backbone | px | batch | precision | compiled | pairs/s | GFLOP/pair | "
                  "of peak | peak memory | wall s |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in measured:
            memory = "-" if r.get("peak_memory_gb") is None else f"{r['peak_memory_gb']:.1f} GB"
            lines.append(f"| {r['backbone']} | {r['size']} | {r['batch']} | {r['precision']} | "
                         f"{r.get('compile_backend') or 'no'} | {r['pairs_per_s']:,.1f} | "
                         f"{r['gflops_per_pair']:.2f} | {r['fraction_of_peak']:.1%} | {memory} "
                         f"| {r.get('wall_s', 0):.0f} |")
        lines.append("")
    for r in errors:
        lines.append(f"- {r['backbone']} {r['size']} px batch {r['batch']}: failed: "
                     f"{r['error']}")
    if status != "ok":
        lines.append(f"- the piece ended: {status} (configurations not listed were not "
                     "measured)")
    peak = next((r for r in rows if r.get("kind") == "peak"), None)
    if peak:
        lines.append("- measured matrix-product peak: " + ", ".join(
            f"{k.removesuffix('_gflops')} {v:,.0f} GFLOP/s" for k, v in peak.items()
            if k.endswith("_gflops")) + f" ({peak['matrix_side']}-square products)")
    return lines + [""]


def training_rate(grid: list[dict], backbone: str, size: int) -> float | None:
    rates = [r["pairs_per_s"] for r in grid if r.get("kind") == "row"
             and r["backbone"] == backbone and r["size"] == size]
    return max(rates) if rates else None


def slowest_training(grid: list[dict], size: int) -> tuple[str, float] | None:
    """(backbone, pairs/s) of the grid's slowest training at ``size`` px (ResNet-50 where it
    was measured): the rate the augmentations must outrun."""
    for backbone in ("resnet50", "resnet18"):
        rate = training_rate(grid, backbone, size)
        if rate:
            return backbone, rate
    return None


def summarize(out: Path) -> str:
    env = read_json(out / "env.json") or {}
    status = {p["piece"]: p["status"] for p in pieces(out)}
    gpus = env.get("gpus") or []
    smi = env.get("nvidia_smi")
    driver = smi[0].get("driver_version") if isinstance(smi, list) and smi else None
    device = (f"{gpus[0]['name']} ({gpus[0]['memory_gb']} GB)" if gpus else "no GPU (CPU)")
    lines = ["# GPU check", "",
             f"{env.get('date', '?')}: {device}" + (f", driver {driver}" if driver else "")
             + f", CUDA {env.get('torch_cuda')}, cuDNN {env.get('cudnn')}, torch "
             f"{env.get('torch')}, torchvision {env.get('torchvision')}, lightly "
             f"{env.get('lightly')}; CPU {env.get('cpu')}, {env.get('cpu_cores')} cores, "
             f"{env.get('memory_gb')} GB.", "",
             "| piece | status | seconds | limit s |", "|---|---|---|---|"]
    lines += [f"| {p['piece']} | {p['status']} | {p['seconds']} | {p['limit_s']} |"
              for p in pieces(out)]
    lines.append("")

    tests = out / "cuda_tests.txt"
    if tests.is_file():
        last = [line for line in tests.read_text().splitlines() if line.startswith("summary:")]
        lines += ["## CUDA tests", "", f"`{last[-1] if last else 'no summary'}`", ""]

    grid = read_jsonl(out / "throughput.jsonl")
    lines += ["## Training throughput (SimCLR)", ""]
    lines += grid_table(grid, "Without compile", status.get("grid", "not run"))
    lines += grid_table(read_jsonl(out / "throughput_compile.jsonl"), "With torch.compile",
                        status.get("compile", "not run"))

    largest = read_jsonl(out / "largest_batch.jsonl")
    final = next((r for r in largest if r.get("kind") == "largest_batch"), None)
    lines += ["## Largest training batch", ""]
    if final:
        capped = "; the search's limit: larger batches were not tried" \
            if final["capped_at_limit"] else ""
        lines.append(f"{final['backbone']}: {final['batch']} at {final['size']} px (searched "
                     f"in multiples of {final['step']}, {final['trials']} trials{capped}).")
    else:
        fitted = [t["batch"] for t in largest if t.get("fits")]
        lines.append(f"search not finished ({status.get('largest', 'not run')}); at least "
                     f"{max(fitted)} fits." if fitted else
                     f"not measured ({status.get('largest', 'not run')}).")
    lines.append("")

    augment = read_json(out / "augment.json") or []
    lines += ["## Augmentation (make_pairs on the device) against training", ""]
    if augment:
        lines += ["| cache px | view px | batch | pairs/s | training pairs/s | ratio |",
                  "|---|---|---|---|---|---|"]
        for r in augment:
            train = slowest_training(grid, r["size"])
            ratio = f"{r['pairs_per_s'] / train[1]:.1f}x" if train else "-"
            told = f"{train[1]:,.1f} ({train[0]})" if train else "-"
            lines.append(f"| {r['cache_px']} | {r['size']} | {r['batch']} | "
                         f"{r['pairs_per_s']:,.0f} | {told} | {ratio} |")
    else:
        lines.append(f"not measured ({status.get('augment', 'not run')}).")
    lines.append("")

    decode = read_json(out / "decode.json")
    lines += ["## JPEG decoding", ""]
    if decode:
        lines += [f"{decode['images']} JPEGs of {decode['min_px']}-{decode['max_px']} px, "
                  f"resized to {decode['size']} px; {decode['cores']} CPU cores.", "",
                  "| variant | images/s |", "|---|---|"]
        lines += [f"| {v['name']} | {v['images_per_s']:,.0f} |" for v in decode["variants"]]
        lines += ["", f"Process pool: {decode['pool_speedup']:.2f}x one process, "
                  f"{decode['pool_speedup_per_core']:.2f}x per core. GPU decode_jpeg: "
                  f"{decode['gpu']}."]
    else:
        lines.append(f"not measured ({status.get('decode', 'not run')}).")
    lines.append("")

    vs = read_json(out / "vs_lightly.json")
    lines += ["## Side by side with lightly + PIL", ""]
    if vs and vs["rows"]:
        r0 = vs["rows"][0]
        lines += [f"{r0['backbone']} ({'small' if r0['small_stem'] else 'standard'} stem), "
                  f"{r0['size']} px, batch {r0['batch']}, {r0['device']}; lightly: "
                  f"{vs['lightly']}.", "",
                  "| method | ours | lightly | lightly bf16 | ours / lightly | "
                  "ours / lightly bf16 |", "|---|---|---|---|---|---|"]
        for r in vs["rows"]:
            lines.append(f"| {r['method']} | {r['ours']:,.1f} ({r['ours_precision']}) | "
                         f"{fmt(r.get('lightly'), 1)} | {fmt(r.get('lightly_bf16'), 1)} | "
                         f"{fmt(r.get('ratio'), 2)} | {fmt(r.get('ratio_vs_lightly_bf16'), 2)} |")
    else:
        lines.append(f"not measured ({status.get('lightly', 'not run')}).")
    lines.append("")

    lines += ["## Targets (issue 16, ResNet-50 SimCLR at 224 px on an H100-class GPU)", ""]
    r50 = training_rate(grid, "resnet50", 224)
    lines.append(f"- at least {TARGET_PAIRS_PER_S:,} pairs/s: "
                 + (f"{r50:,.0f}, {'met' if r50 >= TARGET_PAIRS_PER_S else 'not met'}"
                    if r50 else "not measured"))
    ratios = [r["ratio"] for r in (vs or {}).get("rows", []) if r.get("ratio")]
    if ratios and vs["rows"][0]["size"] == 224:
        ratio = statistics.median(ratios)
        lines.append(f"- at least {TARGET_VS_LIGHTLY:.0f}x lightly + PIL: {ratio:.2f}x, "
                     f"{'met' if ratio >= TARGET_VS_LIGHTLY else 'not met'} "
                     f"({vs['rows'][0]['backbone']})")
    else:
        lines.append(f"- at least {TARGET_VS_LIGHTLY:.0f}x lightly + PIL: not measured at "
                     "224 px")
    at224 = next((r for r in augment if r["size"] == 224), None)
    if at224 and r50:
        ratio = at224["pairs_per_s"] / r50
        lines.append(f"- augmentation at least {TARGET_AUGMENT_RATIO:.0f}x the training rate: "
                     f"{ratio:.1f}x, {'met' if ratio >= TARGET_AUGMENT_RATIO else 'not met'}")
    else:
        lines.append(f"- augmentation at least {TARGET_AUGMENT_RATIO:.0f}x the training rate: "
                     "not measured at 224 px")
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] not in ("env", "tests", "summary"):
        sys.exit(__doc__)
    verb, target = sys.argv[1], Path(sys.argv[2])
    if verb == "env":
        env = environment()
        target.write_text(json.dumps(env, indent=1) + "\n")
        print(json.dumps(env, indent=1))
    elif verb == "tests":
        rest = sys.argv[3:]
        sys.exit(run_tests(target, rest[1:] if rest[:1] == ["--"] else rest))
    else:
        text = summarize(target)
        (target / "summary.md").write_text(text)
        print(text)


if __name__ == "__main__":
    main()
