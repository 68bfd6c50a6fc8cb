"""Out of memory ends the run and suggests a smaller batch; other runtime errors are not
mistaken for it. The error is raised from the model's forward (monkeypatched)."""

from __future__ import annotations

import pytest
import torch

from engine.run.checkpoint import load_checkpoint
from engine.training import loop as train_mod
from tests.helpers import faults
from tests.helpers.faults import STEPS_PER_EPOCH, events_of, run

# Fixtures shared with the other fault tests (tests/helpers/faults.py).
_keep_torch_threads = faults.keep_torch_threads
folder = faults.folder


def poison_forward(monkeypatch, at_call: int, error: BaseException) -> None:
    real_build = train_mod.build_model

    def build(cfg, **kwargs):
        model = real_build(cfg, **kwargs)
        forward, count = model.forward, [0]

        def failing(x1, x2, batch=None):
            count[0] += 1
            if count[0] >= at_call:
                raise error
            return forward(x1, x2, batch)
        model.forward = failing
        return model

    monkeypatch.setattr(train_mod, "build_model", build)


@pytest.mark.parametrize("at_call,error,what", [
    (8, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
     "out of GPU memory"),
    (1, torch.cuda.OutOfMemoryError("CUDA out of memory."), "out of GPU memory"),
    (8, RuntimeError("[enforce fail at alloc_cpu.cpp:117] . DefaultCPUAllocator: can't "
                     "allocate memory: you tried to allocate 8589934592 bytes."),
     "out of memory (RAM)"),
    (1, MemoryError(), "out of memory (RAM)"),
])
def test_out_of_memory_ends_the_run_suggesting_a_smaller_batch(folder, tmp_path, monkeypatch,
                                                               at_call, error, what):
    poison_forward(monkeypatch, at_call, error)
    result = run({"data": str(folder), "epochs": 2}, tmp_path)
    assert result.status == "failed" and result.step == at_call - 1
    assert result.reason.startswith(f"{what} at batch size 8 and 16 px")
    assert "--batch-size 4" in result.reason and "--image-size" in result.reason
    last = result.run_dir / "checkpoints" / "last.pt"
    if at_call > STEPS_PER_EPOCH:
        assert load_checkpoint(last)["step"] == STEPS_PER_EPOCH  # kept
        assert result.reason.endswith("the last checkpoint is kept")
    else:
        assert not last.exists()
        assert result.reason.endswith("no checkpoint had been saved yet")
    assert events_of(result.run_dir)[-1]["status"] == "failed"


def test_other_runtime_errors_are_not_mistaken_for_memory(folder, tmp_path, monkeypatch):
    poison_forward(monkeypatch, 2, RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        run({"data": str(folder), "epochs": 1}, tmp_path)


