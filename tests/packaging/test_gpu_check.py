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
                     "decode_jpeg batched, CPU (1 thread)"]
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
