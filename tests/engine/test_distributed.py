"""Training on several processes (torchrun, DistributedDataParallel) on the CPU with gloo.

The claim under test: two processes, each with half of a global batch, compute the loss and
the gradients that one process computes over the whole batch (with synchronised batch norm;
without it, those of one process that normalises each half on its own), keep MoCo's queue
identical, and a `torchrun` run writes one ordinary run folder that resumes with one process
or two. References are computed in the test process, which has no process group at all.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from engine.config.resolve import DeviceInfo, resolve_config
from engine.config.settings import ConfigError
from engine.config.train_config import AugmentConfig, TrainConfig
from engine.data.augment import make_pairs
from engine.data.loader import BatchLoader
from engine.methods import build_model
from engine.models.losses import nt_xent
from engine.run.events import EventWriter, read_events
from engine.training import distributed
from engine.training.loop import train
from tests.helpers.folders import make_folder
from tests.helpers.ranks import join_gloo

WORLD = 2
GLOBAL_BATCH = 8
SIZE = 16
LR = 0.05
STEPS = 2


# --- the pieces, in one process --------------------------------------------------------------

@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_shares_average_to_the_whole_batch_loss_and_gradient(world, temperature):
    g = torch.Generator().manual_seed(world)
    z1 = torch.randn(2 * world, 5, generator=g).requires_grad_()  # 2 images per process
    z2 = torch.randn(2 * world, 5, generator=g).requires_grad_()
    whole = nt_xent(z1, z2, temperature)
    (g1_whole, g2_whole) = torch.autograd.grad(whole, [z1, z2])
    per = z1.shape[0] // world
    shares = [nt_xent(z1, z2, temperature, rows=slice(r * per, (r + 1) * per))
              for r in range(world)]
    mean = torch.stack(shares).mean()
    (g1, g2) = torch.autograd.grad(mean, [z1, z2])
    torch.testing.assert_close(mean, whole, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g1, g1_whole, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g2, g2_whole, rtol=1e-5, atol=1e-7)


def fake_cache(n: int) -> SimpleNamespace:
    images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1).repeat(2, 1).repeat(2, 2)
    return SimpleNamespace(labels=np.zeros(n, dtype=np.int64), images=images.repeat(3, 3))


@pytest.mark.parametrize("world", [2, 4])
def test_each_process_takes_a_disjoint_share_and_together_they_make_the_global_batch(world):
    cache = fake_cache(37)
    alone = BatchLoader(cache, 8, seed=5, device=torch.device("cpu"), prefetch=False)
    shares = [BatchLoader(cache, 8, seed=5, device=torch.device("cpu"), prefetch=False,
                          rank=r, world_size=world) for r in range(world)]
    assert all(s.steps_per_epoch == alone.steps_per_epoch == 4 for s in shares)
    for epoch in range(3):
        for b in range(alone.steps_per_epoch):
            rows = [s.indices(epoch, b) for s in shares]
            assert all(len(r) == 8 // world for r in rows)
            # disjoint, and in rank order exactly the single process's batch
            np.testing.assert_array_equal(np.concatenate(rows), alone.indices(epoch, b))
            # the images themselves (row i of the fake cache holds the value i)
            got = torch.cat([s.batch(epoch, b) for s in shares])[:, 0, 0, 0].numpy()
            np.testing.assert_array_equal(got, alone.indices(epoch, b))
    with pytest.raises(ValueError, match="cannot be shared by 3 processes"):
        BatchLoader(cache, 8, seed=5, device=torch.device("cpu"), rank=0, world_size=3)


def test_each_process_makes_exactly_its_rows_of_the_single_process_views():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (GLOBAL_BATCH, 3, 20, 20), dtype=torch.uint8, generator=g)
    cfg = AugmentConfig(blur_p=0.5, solarize_p=0.3)
    whole_gen = torch.Generator().manual_seed(3)
    v1, v2 = make_pairs(images, cfg, SIZE, whole_gen)
    per = GLOBAL_BATCH // WORLD
    for r in range(WORLD):
        gen = torch.Generator().manual_seed(3)
        rows = slice(r * per, (r + 1) * per)
        s1, s2 = make_pairs(images[rows], cfg, SIZE, gen, global_batch=GLOBAL_BATCH,
                            offset=r * per)
        torch.testing.assert_close(s1, v1[rows], rtol=0, atol=1e-6)
        torch.testing.assert_close(s2, v2[rows], rtol=0, atol=1e-6)
        # the generator advanced as the single process's did: the next batch agrees too
        assert torch.equal(gen.get_state(), whole_gen.get_state())


def test_the_global_batch_must_divide_among_the_processes():
    cpu = DeviceInfo("cpu", "test", None, False)
    base = TrainConfig(data="x", precision="fp32")
    cfg, why = resolve_config(base, cpu, typical_side=32, num_images=None, world_size=2)
    assert cfg.batch_size == 128 and "64 per process" in why["batch_size"]
    assert cfg.sync_batch_norm is True
    odd = TrainConfig(data="x", batch_size=10, precision="fp32")
    with pytest.raises(ConfigError, match=r"batch_size 10 is the global batch of all 4 "
                                          r"processes.*multiple of 4 \(8 or 12\)"):
        resolve_config(odd, cpu, typical_side=32, num_images=None, world_size=4)
    alone, _ = resolve_config(odd, cpu, typical_side=32, num_images=None)
    assert alone.batch_size == 10  # one process: any batch


def test_other_processes_write_no_events(tmp_path):
    events = distributed.SilentEvents()
    events.attach(tmp_path / "events.jsonl")
    events.emit("step", step=1, loss=1.0)
    assert not (tmp_path / "events.jsonl").exists() and not events._pending


# --- one step on two processes against one process over the whole batch ----------------------

# The comparisons run in float64 (tiny_model, views) except the loss head, which the engine
# computes in float32 whatever the model's precision (nt_xent, info_nce; SimCLR gathers z in
# float32): its relative rounding is a few float32 eps on logits of up to 1/temperature = 10,
# about eps / temperature = 1.2e-6 of the loss and of its gradient. Measured (AVX-512 and
# AVX2 alike): the losses 2.3e-7 apart, the gradients 1.1e-7 of the largest, the states
# 1.1e-7; a wrong gather, a missing gradient path or per-device batch norm instead of
# global moves them by 5e-2 or more.
HEAD_ROUNDING = 2 * torch.finfo(torch.float32).eps / 0.1  # 2.4e-6

CASES = {  # name: (method, synchronised batch norm)
    "simclr-syncbn": ("simclr", True),
    "simclr-local-bn": ("simclr", False),
    "moco-syncbn": ("moco", True),
}


def tiny_config(method: str) -> TrainConfig:
    return TrainConfig(data="x", method=method, backbone="resnet18", small_stem=True,
                       image_size=SIZE, proj_hidden_dim=32, proj_out_dim=16,
                       head_batch_norm=method == "simclr",
                       temperature=0.1 if method == "simclr" else 0.2,
                       queue_size=12, moco_momentum=0.9, precision="fp32")


def tiny_model(method: str) -> torch.nn.Module:
    """The method's model in float64 (see two_steps)."""
    torch.manual_seed(0)
    return build_model(tiny_config(method)).double()


def views(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return (torch.randn(GLOBAL_BATCH, 3, SIZE, SIZE, generator=g, dtype=torch.float64),
            torch.randn(GLOBAL_BATCH, 3, SIZE, SIZE, generator=g, dtype=torch.float64))


def two_steps(model: torch.nn.Module, forward) -> dict:
    """The loss of two SGD steps, the gradients of the first, and the model's state after
    the second forward pass: the parameters the first step made, the batch-norm statistics
    of both passes, MoCo's queue after two batches and its key encoder after two momentum
    updates.

    The model and the views are float64, so the two computations agree to the float32
    rounding of the loss head alone (see HEAD_ROUNDING), on any CPU: in float32 this little
    model's convolutions and batch norm round differently on AVX2 and AVX-512 CPUs, and one
    SGD step amplifies that (measured on AVX2: the loss after one step 5e-4 apart).

    The second step's gradients are not kept: they are so ill-conditioned that parameters
    1e-7 apart (the head's rounding, after one step) put them 0.6% of the largest apart
    (simclr-local-bn, float64; from the very same parameters the two computations agree to
    7e-8), so they cannot show anything.
    """
    params = dict(model.named_parameters())
    optimizer = torch.optim.SGD(params.values(), lr=LR)
    out: dict = {"loss": []}
    for step in range(STEPS):
        optimizer.zero_grad()
        out["loss"].append(forward(*views(step)))
        if step == 0:
            out["grads"] = {k: p.grad.clone() for k, p in params.items()
                            if p.grad is not None}
            optimizer.step()
    out["state"] = {k: v.clone() for k, v in model.state_dict().items()}
    return out


def _rank_main(rank: int, port: int, folder: str) -> None:
    ctx = join_gloo(rank, port, WORLD)
    assert ctx.enabled and ctx.rank == rank
    per = GLOBAL_BATCH // WORLD
    rows = slice(rank * per, (rank + 1) * per)
    results = {}
    for name, (method, sync) in CASES.items():
        model = tiny_model(method)
        if sync:
            model = distributed.convert_sync_batchnorm(model, torch.device("cpu"))
        wrapped = distributed.data_parallel(model, torch.device("cpu"))

        def forward(x1, x2, wrapped=wrapped):
            loss = wrapped(x1[rows], x2[rows]).loss
            loss.backward()
            return float(ctx.mean(loss.detach()))  # the loss over the global batch

        results[name] = two_steps(model, forward)
    torch.save(results, Path(folder) / f"rank{rank}.pt")
    distributed.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ranks")
    mp.start_processes(_rank_main, args=(free_port(), str(folder)), nprocs=WORLD,
                       start_method="spawn", join=True)
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def single_process(name: str) -> dict:
    """The same two steps in this process (no process group): plain batch norm over the
    global batch, or, for per-device batch norm, over each half on its own."""
    method, sync = CASES[name]
    model = tiny_model(method)
    per = GLOBAL_BATCH // WORLD

    def forward(x1, x2):
        if sync or method != "simclr":
            loss = model(x1, x2).loss
        else:  # each half through the encoder alone, then NT-Xent over everything
            z = [model.encoder(torch.cat([x1[r * per:(r + 1) * per],
                                          x2[r * per:(r + 1) * per]]))[1]
                 for r in range(WORLD)]
            z1 = torch.cat([zr[:per] for zr in z])
            z2 = torch.cat([zr[per:] for zr in z])
            loss = nt_xent(z1, z2, model.temperature)
        loss.backward()
        return float(loss.detach())

    return two_steps(model, forward)


def max_difference(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a
               if a[k].is_floating_point())


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_compute_the_single_process_loss_and_gradients(two_rank_results, name):
    reference = single_process(name)
    ranks = [r[name] for r in two_rank_results]
    for rank in ranks:
        # the loss over the global batch, before and after a step
        np.testing.assert_allclose(rank["loss"], reference["loss"], rtol=HEAD_ROUNDING)
        # the gradient (DDP's mean over the processes), computed in float64
        assert rank["grads"].keys() == reference["grads"].keys()
        assert all(g.dtype == torch.float64 for g in rank["grads"].values())
        scale = max(float(g.abs().max()) for g in reference["grads"].values())
        assert max_difference(rank["grads"], reference["grads"]) <= HEAD_ROUNDING * scale, name
    # the same parameters and MoCo queue and key encoder in every process, and as in one
    # process; with synchronised batch norm, the running statistics too
    a, b = ranks[0]["state"], ranks[1]["state"]
    assert a.keys() == b.keys() == reference["state"].keys()
    local_statistics = not CASES[name][1]
    for k in a:
        if local_statistics and ("running" in k or "num_batches" in k):
            continue
        assert torch.equal(a[k], b[k]), k  # every process holds the very same model
        # one step of lr 0.05 from gradients that agree to HEAD_ROUNDING of the largest
        torch.testing.assert_close(a[k], reference["state"][k], rtol=HEAD_ROUNDING,
                                   atol=HEAD_ROUNDING)
    if name.startswith("moco"):
        assert torch.equal(a["queue"], b["queue"])
        assert int(a["queue_ptr"]) == (STEPS * GLOBAL_BATCH) % 12


def test_per_device_batch_norm_really_differs_from_global(two_rank_results):
    """A check of the check: the two batch-norm modes give different losses here, so the
    comparisons above can tell them apart."""
    sync = two_rank_results[0]["simclr-syncbn"]["loss"]
    local = two_rank_results[0]["simclr-local-bn"]["loss"]
    assert abs(sync[0] - local[0]) > 1e-3


# --- torchrun end to end ---------------------------------------------------------------------

FLAGS = {"backbone": "resnet18", "image_size": 16, "cache_size": 20, "batch_size": 8,
         "proj_hidden_dim": 32, "proj_out_dim": 16, "log_every": 1, "num_threads": 1,
         "precision": "fp32", "device": "cpu", "epochs": 2, "seed": 4}


def engine(args: list[str], processes: int, timeout: float = 240) -> list[dict]:
    """Run the engine (under torchrun for 2+ processes); its stdout events."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    launcher = [sys.executable, "-m", "engine"]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc-per-node", str(processes), "-m", "engine"]
    proc = subprocess.run(launcher + args, capture_output=True, text=True, env=env,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def flags(values: dict) -> list[str]:
    out = []
    for k, v in values.items():
        out += ["--" + k.replace("_", "-"), str(v)]
    return out


def losses(run_dir: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in read_events(run_dir / "events.jsonl")
            if e["type"] == "step"}


@pytest.mark.parametrize("method", ["simclr", pytest.param("moco", marks=pytest.mark.slow)])
def test_torchrun_run_opens_in_the_app_and_resumes_with_one_or_two_processes(tmp_path,
                                                                              method):
    """Two processes train two steps; the run then goes on from that checkpoint once with
    one process (a copy of the run) and once with two, and both make the same next step.

    Only the first step of each segment is compared with a single process: this tiny model
    is chaotic in float32 (one process on 1 or 2 threads, which only reorders float sums,
    gives losses a few percent apart by the third step), so later steps of two correct runs
    differ anyway.
    """
    folder = make_folder(tmp_path / "shapes")
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    first = engine(["train", "--data", str(folder), "--runs-root", str(runs), "--cache-dir",
                    str(cache), "--method", method, "--max-steps", "2"] + flags(FLAGS), 2)
    (run_dir,) = list(runs.iterdir())  # rank 0 alone made a run folder
    assert first[-1]["type"] == "run_end" and first[-1]["status"] == "finished"
    start = next(e for e in first if e["type"] == "run_start")
    assert start["world_size"] == 2 and start["per_process_batch"] == 4
    assert start["config"]["batch_size"] == 8 and start["config"]["sync_batch_norm"] is True
    # stdout carries rank 0's events only: one event per step
    assert [e["step"] for e in first if e["type"] == "step"] == [1, 2]

    # Step 1 is the single process's step 1 over the same global batch.
    cfg = TrainConfig.from_dict({**FLAGS, "data": str(folder), "method": method,
                                 "max_steps": 1})
    threads = torch.get_num_threads()
    try:
        alone = train(cfg, runs_root=tmp_path / "alone", cache_dir=cache,
                      events=EventWriter(None))
    finally:
        torch.set_num_threads(threads)
    assert losses(run_dir)[1] == pytest.approx(losses(alone.run_dir)[1], rel=1e-5)

    one = tmp_path / "one" / run_dir.name
    shutil.copytree(run_dir, one)
    engine(["train", "--resume", str(one), "--max-steps", "4", "--cache-dir", str(cache)], 1)
    engine(["train", "--resume", str(run_dir), "--max-steps", "4", "--cache-dir", str(cache)],
           2)
    assert list(runs.iterdir()) == [run_dir]
    # From the same checkpoint, one process and two make the same step 3.
    assert losses(run_dir)[3] == pytest.approx(losses(one)[3], rel=1e-5)

    from app.model.run_model import RunHistory, list_runs
    from engine.run.checkpoint import load_checkpoint

    for folder_, sizes in ((run_dir, [2, 2]), (one, [2, 1])):
        events = list(read_events(folder_ / "events.jsonl"))
        assert [e["world_size"] for e in events if e["type"] == "run_start"] == sizes
        state = load_checkpoint(folder_ / "checkpoints" / "last.pt")
        assert state["step"] == 4 and state["world_size"] == sizes[-1]
        assert not any(k.startswith("module.") for k in state["model"])  # not DDP's
        (summary,) = list_runs(folder_.parent)
        assert (summary.status, summary.steps, summary.method) == ("finished", 4, method)
        history = RunHistory.replay(folder_ / "events.jsonl")
        assert history.bad_events == 0
        assert history.steps == [1, 2, 3, 4]  # one curve, no step repeated
