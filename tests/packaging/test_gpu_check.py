"""The GPU check (benchmarks/gpu_check.sh) in its smoke mode: every piece runs on the CPU at
tiny sizes and writes figures that parse, with positive numbers, so the script is known to
work before a GPU is lent; and a check whose pieces fail exits non-zero, naming them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402

PIECES = ["env", "cuda_tests", "grid", "largest", "augment", "decode", "lightly", "compile"]


def run_check(out: Path, python: str, *args: str) -> subprocess.CompletedProcess:
    user = out.parent / f"{out.name}-user"  # nothing may touch the real home folder
    env = {**os.environ, "GPU_CHECK_PYTHON": python,
           "CONTRASTIVE_EXPLORER_CACHE": str(user / "cache"),
           "CONTRASTIVE_EXPLORER_DATA": str(user / "data"),
           "CONTRASTIVE_EXPLORER_RUNS": str(user / "runs")}
    return subprocess.run(["bash", str(SCRIPT), *args, str(out)], capture_output=True,
                          text=True, env=env, timeout=600, cwd=out.parent)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gpu-check") / "figures"
    done = run_check(out, sys.executable, "--smoke")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return out


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_piece_ran_in_order(smoke):
    lines = (smoke / "pieces.tsv").read_text().splitlines()
    rows = [line.split("\t") for line in lines[1:]]
    assert [r[0] for r in rows] == PIECES
    assert all(r[1] == "ok" for r in rows), rows
    for piece in PIECES:
        assert (smoke / "logs" / f"{piece}.log").stat().st_size > 0


def test_environment(smoke):
    env = json.loads((smoke / "env.json").read_text())
    assert env["cpu_cores"] == os.cpu_count() > 0
    assert env["torch"] == torch.__version__
    assert env["cuda_available"] is False and env["gpus"] == []  # the smoke hides any GPU
    assert env["memory_gb"] > 0


def test_cuda_tests_report_their_summary(smoke):
    text = (smoke / "cuda_tests.txt").read_text()
    summary = text.splitlines()[-1]
    assert summary.startswith("summary: ")
    assert "failed" not in summary and "error" not in summary
    # Without CUDA the CUDA test is selected and skipped, and said so.
    assert re.search(r"\b1 skipped\b", summary) and "needs CUDA" in text


def check_grid(rows: list[dict], compiled: bool) -> None:
    peak = rows[0]
    assert peak["kind"] == "peak" and peak["fp32_gflops"] > 0
    measured = [r for r in rows if r["kind"] == "row"]
    assert [(r["backbone"], r["size"]) for r in measured] == [("resnet18", 32)]
    for r in measured:
        assert r["pairs_per_s"] > 0 and r["gflops_per_pair"] > 0 and r["wall_s"] > 0
        assert r["compiled"] is compiled
        # The fraction of the peak is the model's FLOP rate over the peak of its precision.
        peak_gflops = peak[f"{r['precision'].split()[0]}_gflops"]
        assert r["peak_gflops"] == pytest.approx(peak_gflops)
        assert r["fraction_of_peak"] == pytest.approx(
            r["gflops_per_pair"] * r["pairs_per_s"] / peak_gflops)


def test_throughput_grid_without_and_with_compile(smoke):
    check_grid(jsonl(smoke / "throughput.jsonl"), compiled=False)
    compiled = jsonl(smoke / "throughput_compile.jsonl")
    check_grid(compiled, compiled=True)
    assert compiled[1]["compile_backend"] == "eager"


def test_largest_batch_search(smoke):
    rows = jsonl(smoke / "largest_batch.jsonl")
    trials = [r for r in rows if r["kind"] == "largest_batch_trial"]
    # Doubling from 4 up to the limit 8; on a CPU nothing runs out of memory.
    assert [(t["batch"], t["fits"]) for t in trials] == [(4, True), (8, True)]
    assert rows[-1]["kind"] == "largest_batch"
    assert rows[-1]["batch"] == 8 and rows[-1]["capped_at_limit"] is True


def test_augmentation_rate(smoke):
    (row,) = json.loads((smoke / "augment.json").read_text())
    assert (row["cache_px"], row["size"], row["batch"]) == (37, 32, 8)
    assert row["pairs_per_s"] > 0


def test_decoding_rates_and_pool_speedup(smoke):
    decode = json.loads((smoke / "decode.json").read_text())
    names = [v["name"] for v in decode["variants"]]
    assert names == ["PIL, 1 process", "PIL, process pool of 2",
                     "decode_jpeg batched, CPU (1 thread)",
                     "cache's device decoder on the CPU (1 thread)"]
    assert all(v["images_per_s"] > 0 and v["seconds"] > 0 for v in decode["variants"])
    for v in decode["variants"]:
        assert v["images_per_s"] == pytest.approx(decode["images"] / v["seconds"])
    single, pool = (v["images_per_s"] for v in decode["variants"][:2])
    assert decode["pool_speedup"] == pytest.approx(pool / single)
    assert decode["pool_speedup_per_core"] == pytest.approx(pool / single / 2)
    assert decode["gpu"].startswith("not run")


def test_side_by_side_with_lightly(smoke):
    vs = json.loads((smoke / "vs_lightly.json").read_text())
    (row,) = vs["rows"]
    assert row["ours"] > 0 and row["backbone"] == "resnet18" and row["size"] == 32
    try:
        import lightly  # noqa: F401
    except ImportError:
        assert vs["lightly"].startswith("lightly is not installed")
        assert "lightly" not in row
    else:
        assert vs["lightly"] == "ran" and row["lightly"] > 0
        assert row["ratio"] == pytest.approx(row["ours"] / row["lightly"])


def test_summary_has_a_table_per_piece(smoke):
    text = (smoke / "summary.md").read_text()
    for heading in ["## CUDA tests", "### Without compile", "### With torch.compile",
                    "## Largest training batch", "## Augmentation", "## JPEG decoding",
                    "## Side by side with lightly", "## Targets"]:
        assert heading in text
    grid = jsonl(smoke / "throughput.jsonl")[1]
    assert f"| resnet18 | 32 | 4 | {grid['precision']} | no | {grid['pairs_per_s']:,.1f} |" \
        in text
    assert all(f"| {piece} | ok |" in text for piece in PIECES)
    assert "resnet18: 8 at 32 px (searched in multiples of 2, 2 trials; the search's limit" \
        in text


def test_failing_pieces_are_named_and_fail_the_check(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 7\n")
    fake.chmod(0o755)
    done = run_check(tmp_path / "figures", str(fake), "--smoke")
    assert done.returncode == 1
    assert "these pieces did not run: " + " ".join(PIECES) + " summary" in done.stderr
    lines = (tmp_path / "figures" / "pieces.tsv").read_text().splitlines()[1:]
    assert [line.split("\t")[:2] for line in lines] == [[p, "failed (exit 7)"]
                                                        for p in PIECES]


def test_usage_errors():
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 2 and "usage" in done.stderr
    done = subprocess.run(["bash", str(SCRIPT), "--fast", "out"], capture_output=True,
                          text=True)
    assert done.returncode == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_the_full_check_stops_after_the_environment(tmp_path):
    done = run_check(tmp_path / "figures", sys.executable)
    assert done.returncode == 1
    assert "finds no CUDA GPU" in done.stderr and "--smoke" in done.stderr
    lines = (tmp_path / "figures" / "pieces.tsv").read_text().splitlines()[1:]
    assert [line.split("\t")[:2] for line in lines] == [["env", "ok"]]


def write_lines(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_summary_of_gpu_figures_marks_the_targets(tmp_path):
    """The summary of figures shaped as a GPU run writes them (made up here, to test the
    arithmetic: 224 px rows, a GPU decode variant, an unfinished batch search)."""
    (tmp_path / "env.json").write_text(json.dumps({
        "date": "D", "gpus": [{"name": "Some GPU", "memory_gb": 80.0}],
        "nvidia_smi": [{"driver_version": "999.1"}], "torch_cuda": "13.0", "cudnn": 1,
        "torch": "T", "torchvision": "V", "lightly": "1.6.0", "cpu": "C", "cpu_cores": 16,
        "memory_gb": 128}))
    (tmp_path / "pieces.tsv").write_text("piece\tstatus\tseconds\tlimit_s\n"
                                         "grid\tok\t60\t80\nlargest\ttimeout\t60\t60\n"
                                         "compile\ttimeout\t100\t100\n")
    row = {"kind": "row", "backbone": "resnet50", "size": 224, "batch": 256,
           "precision": "bf16 channels-last", "compiled": False, "pairs_per_s": 2500.0,
           "gflops_per_pair": 25.0, "fraction_of_peak": 0.1, "peak_memory_gb": 40.0,
           "wall_s": 12.0}
    write_lines(tmp_path / "throughput.jsonl", [
        {"kind": "peak", "matrix_side": 8192, "fp32_gflops": 50000.0, "bf16_gflops": 600000.0},
        row, {**row, "backbone": "resnet18", "size": 96, "pairs_per_s": 20000.0}])
    write_lines(tmp_path / "throughput_compile.jsonl", [
        {"kind": "error", "backbone": "resnet50", "size": 224, "batch": 256,
         "error": "BackendCompilerFailed: x"}])
    write_lines(tmp_path / "largest_batch.jsonl", [
        {"kind": "largest_batch_trial", "batch": 512, "fits": True},
        {"kind": "largest_batch_trial", "batch": 1024, "fits": True},
        {"kind": "largest_batch_trial", "batch": 2048, "fits": False}])
    (tmp_path / "augment.json").write_text(json.dumps([
        {"cache_px": 256, "size": 224, "batch": 256, "pairs_per_s": 10000.0},
        {"cache_px": 110, "size": 96, "batch": 256, "pairs_per_s": 200000.0}]))
    (tmp_path / "decode.json").write_text(json.dumps({
        "images": 512, "min_px": 300, "max_px": 500, "size": 224, "cores": 16,
        "variants": [{"name": "PIL, 1 process", "images_per_s": 200.0},
                     {"name": "decode_jpeg batched, GPU (Some GPU)", "images_per_s": 9000.0}],
        "gpu": "ran on Some GPU", "pool_speedup": 12.0, "pool_speedup_per_core": 0.75}))
    (tmp_path / "vs_lightly.json").write_text(json.dumps({"lightly": "ran", "rows": [
        {"method": "simclr", "size": 224, "batch": 256, "device": "cuda",
         "backbone": "resnet50", "small_stem": False, "ours": 2500.0,
         "ours_precision": "bf16 channels-last", "lightly": 1000.0, "lightly_bf16": 1250.0,
         "ratio": 2.5, "ratio_vs_lightly_bf16": 2.0}]}))
    text = gpu_check.summarize(tmp_path)
    assert "D: Some GPU (80.0 GB), driver 999.1, CUDA 13.0" in text
    assert "| resnet50 | 224 | 256 | bf16 channels-last | no | 2,500.0 | 25.00 | 10.0% | " \
        "40.0 GB | 12 |" in text
    assert "measured matrix-product peak: fp32 50,000 GFLOP/s, bf16 600,000 GFLOP/s" in text
    assert "- resnet50 224 px batch 256: failed: BackendCompilerFailed: x" in text
    assert "- the piece ended: timeout" in text
    assert "search not finished (timeout); at least 1024 fits." in text
    # Augmentation over the slowest training at the same view size: 10000 / 2500, and at
    # 96 px (no ResNet-50 row there) over ResNet-18's 20000.
    assert "| 256 | 224 | 256 | 10,000 | 2,500.0 (resnet50) | 4.0x |" in text
    assert "| 110 | 96 | 256 | 200,000 | 20,000.0 (resnet18) | 10.0x |" in text
    assert "| decode_jpeg batched, GPU (Some GPU) | 9,000 |" in text
    assert "12.00x one process, 0.75x per core" in text
    assert "| simclr | 2,500.0 (bf16 channels-last) | 1,000.0 | 1,250.0 | 2.50 | 2.00 |" in text
    assert "- at least 3,000 pairs/s: 2,500, not met" in text
    assert "- at least 2x lightly + PIL: 2.50x, met (resnet50)" in text
    assert "- augmentation at least 5x the training rate: 4.0x, not met" in text
