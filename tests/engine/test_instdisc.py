"""InstDisc (Wu et al. 2018): its two losses against per-sample loops of the paper's
equations, the memory bank's update and NCE's normalising constant, its automatic
settings, two processes against one, and an NCE run end to end, resumed exactly."""

from __future__ import annotations

import dataclasses
import json
import math
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from engine.config.resolve import DeviceInfo, resolve_config
from engine.config.settings import ConfigError
from engine.config.train_config import TrainConfig, preset
from engine.export import export_encoder
from engine.methods import METHODS, BatchInfo, build_model
from engine.methods.instdisc import InstDisc, nce_loss, softmax_loss
from engine.run.checkpoint import load_checkpoint
from engine.training import distributed
from tests.helpers.folders import make_folder
from tests.helpers.ranks import join_gloo
from tests.helpers.training import events_of, run

CPU = DeviceInfo("cpu", "test", None, False)
GPU = DeviceInfo("cuda", "test GPU", 80.0, True)
T = 0.07


def unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=g, dtype=torch.float64), dim=1)


# --- the losses against loops over the samples ----------------------------------------------

def softmax_reference(v, bank, indices, t):
    """Eq. 2 image by image: -log exp(v_i.v / t) / sum_j exp(v_j.v / t)."""
    total = 0.0
    for a in range(v.shape[0]):
        scores = [torch.dot(bank[j], v[a]) / t for j in range(bank.shape[0])]
        denominator = sum(torch.exp(s) for s in scores)
        total = total - torch.log(torch.exp(scores[int(indices[a])]) / denominator)
    return total / v.shape[0]


def nce_reference(v, bank, indices, noise, t, z):
    """Eq. 5-7 image by image: P(j|v) = exp(v_j.v / t) / Z, h = P / (P + m P_n) with
    P_n = 1/n; -log h(i, v) - sum over the noise rows j of log(1 - h(j, v))."""
    n, m = bank.shape[0], noise.shape[1]
    total = 0.0
    for a in range(v.shape[0]):
        def h(j, a=a):
            p = torch.exp(torch.dot(bank[j], v[a]) / t) / z
            return p / (p + m / n)
        loss = -torch.log(h(int(indices[a])))
        for k in range(m):
            loss = loss - torch.log(1 - h(int(noise[a, k])))
        total = total + loss
    return total / v.shape[0]


def test_full_softmax_loss_is_the_per_image_non_parametric_softmax():
    bank = unit(10, 5, 0)
    v = unit(4, 5, 1).requires_grad_()
    indices = torch.tensor([3, 0, 9, 5])
    got = softmax_loss(v, bank, indices, T)
    want = softmax_reference(v, bank, indices, T)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    (g_got,) = torch.autograd.grad(got, v)
    (g_want,) = torch.autograd.grad(want, v)
    torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("z", [1.0, 37.5])
def test_nce_loss_is_the_per_image_sum_of_equations_5_to_7(z):
    bank = unit(12, 5, 2)
    v = unit(3, 5, 3).requires_grad_()
    indices = torch.tensor([7, 1, 11])
    noise = torch.randint(12, (3, 6), generator=torch.Generator().manual_seed(4))
    got = nce_loss(v, bank, indices, noise, T, torch.tensor(z, dtype=torch.float64))
    want = nce_reference(v, bank, indices, noise, T, z)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    (g_got,) = torch.autograd.grad(got, v)
    (g_want,) = torch.autograd.grad(want, v)
    torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-12)


# --- the module: loss, bank update, Z -------------------------------------------------------

def tiny_config(loss: str, images: int = 20) -> TrainConfig:
    return TrainConfig(data="x", method="instdisc", backbone="resnet18", small_stem=True,
                       image_size=16, batch_size=8, proj_hidden_dim=8, proj_out_dim=16,
                       temperature=T, bank_size=images, instdisc_loss=loss, nce_negatives=6,
                       precision="fp32", seed=3)


def tiny_model(loss: str) -> InstDisc:
    torch.manual_seed(0)
    model = build_model(tiny_config(loss)).double()
    assert isinstance(model, InstDisc)
    return model


def images(step: int, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Two float64 views of 8 px (the small stem takes any size: the tests stay quick)."""
    g = torch.Generator().manual_seed(100 + step)
    return (torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64),
            torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64))


ROWS = torch.randperm(20, generator=torch.Generator().manual_seed(9))  # each image's row


def batch_of(step: int, n: int = 8) -> BatchInfo:
    rows = ROWS[step * n:(step + 1) * n]
    return BatchInfo(indices=rows, labels=rows % 2)


def test_the_head_is_the_papers_linear_embedding_and_x2_is_not_read():
    model = tiny_model("softmax")
    assert isinstance(model.online_encoder.head, torch.nn.Linear)
    assert model.online_encoder.head.out_features == 16 and model.bank.shape == (20, 16)
    torch.testing.assert_close(model.bank.norm(dim=1), torch.ones(20).double())  # on the sphere
    x1, x2 = images(0)
    a = model(x1, x2, batch_of(0)).loss
    model = tiny_model("softmax")
    b = model(x1, torch.zeros_like(x2), batch_of(0)).loss
    assert torch.equal(a, b)


@pytest.mark.parametrize("loss", ["softmax", "nce"])
def test_a_step_is_the_reference_loss_then_updates_the_bank(loss):
    model = tiny_model(loss)
    x1, x2 = images(0)
    batch = batch_of(0)
    noise = model.noise_rows(8)  # what the first step draws (seeded by seed and step)
    before = model.bank.clone()
    out = model(x1, x2, batch)
    out.loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}

    # the reference from the same encoder output (batch norm in training mode, same batch)
    model.zero_grad()
    _, z = model.encoder(x1)
    v = F.normalize(z, dim=1)  # float64: the reference in full precision
    idx = batch.indices
    if loss == "softmax":
        want = softmax_reference(v, before, idx, T)
    else:
        # Z estimated at the first step: n x mean of exp(w.v / t) over its own and noise rows
        rows = torch.cat([idx.unsqueeze(1), noise], dim=1)
        z_est = 20 * torch.exp((before[rows] * v.detach().unsqueeze(1)).sum(2) / T).mean()
        torch.testing.assert_close(model.nce_z, z_est.double(), rtol=1e-6, atol=0)
        want = nce_reference(v, before, idx, noise, T, float(model.nce_z))
    want.backward()
    # float32 loss head (the engine computes it in float32 whatever the model's dtype)
    torch.testing.assert_close(out.loss.double(), want.double(), rtol=1e-5, atol=0)
    scale = max(float(g.abs().max()) for g in grads.values())
    for k, p in model.named_parameters():
        torch.testing.assert_close(grads[k], p.grad, rtol=0, atol=1e-5 * scale)

    # positive_pair_similarity: cos(v_i, bank[i]) before the update
    torch.testing.assert_close(out.positive_pair_similarity,
                               (v.detach() * before[idx]).sum(1).mean(), rtol=1e-6, atol=1e-7)
    # bank[i] = normalise(0.5 bank[i] + 0.5 v_i) for the batch's rows, the others untouched
    after = model.bank
    want_rows = (0.5 * before[idx] + 0.5 * v.detach()) / (
        0.5 * before[idx] + 0.5 * v.detach()).norm(dim=1, keepdim=True)
    torch.testing.assert_close(after[idx], want_rows, rtol=0, atol=1e-7)
    others = torch.ones(20, dtype=torch.bool)
    others[idx] = False
    assert torch.equal(after[others], before[others])
    assert int(model.steps) == 1


def test_z_is_estimated_once_and_noise_is_drawn_anew_each_step():
    model = tiny_model("nce")
    first = model.noise_rows(8)
    assert torch.equal(first, model.noise_rows(8))  # the same step, the same rows
    assert first.shape == (8, 6) and 0 <= int(first.min()) and int(first.max()) < 20
    model(*images(0), batch_of(0))
    z = model.nce_z.clone()
    assert float(z) > 0
    assert not torch.equal(first, model.noise_rows(8))
    model(*images(1), batch_of(1))
    assert torch.equal(model.nce_z, z)  # fixed after the first step
    # a loaded state (a resume) draws the rows that the saved step would
    again = tiny_model("nce")
    again.load_state_dict(model.state_dict())
    assert torch.equal(again.noise_rows(8), model.noise_rows(8))


def test_forward_without_the_batch_rows_says_what_it_needs():
    model = tiny_model("nce")
    with pytest.raises(ValueError, match="needs each image's row"):
        model(*images(0))


# --- settings ---------------------------------------------------------------------------------

def resolved(num_images: int, **values):
    cfg = dataclasses.replace(preset("instdisc"), batch_size=64, **values)
    return resolve_config(cfg, CPU, typical_side=None, num_images=num_images)


def test_automatic_settings_follow_the_paper_and_the_folder():
    small, why = resolved(1000)
    assert (small.bank_size, small.instdisc_loss, small.nce_negatives) == (1000, "softmax", 4096)
    assert (small.temperature, small.optimizer, small.lr, small.weight_decay) == (
        0.07, "sgd", 0.03, 5e-4)
    assert not {"bank_size", "instdisc_loss", "nce_negatives"} & set(why)  # nothing to warn
    a = small.augment
    assert (a.crop_scale_min, a.jitter_p, a.grayscale_p, a.flip_p, a.blur_p) == (
        0.2, 1.0, 0.2, 0.5, 0.0)
    assert [a.jitter_strength * x for x in (a.jitter_brightness, a.jitter_contrast,
                                             a.jitter_saturation, a.jitter_hue)] == [0.4] * 4
    edge, _ = resolved(4096 + 64)
    assert edge.instdisc_loss == "softmax"
    big, _ = resolved(100_000)
    assert (big.bank_size, big.instdisc_loss, big.nce_negatives) == (100_000, "nce", 4096)
    capped, why = resolved(1000, instdisc_loss="nce")
    assert capped.nce_negatives == 999 and "fewer than the images" in why["nce_negatives"]
    with pytest.raises(ConfigError, match="bank_size 500 does not match the folder's 1000"):
        resolved(1000, bank_size=500)
    with pytest.raises(ValueError, match="bank_size is set from the folder"):
        build_model(dataclasses.replace(resolve_config(preset("instdisc"), CPU,
                                                       typical_side=None,
                                                       num_images=None)[0]))


def test_a_method_paper_may_name_the_backbone():
    on_gpu, why = resolve_config(preset("instdisc"), GPU, typical_side=None, num_images=None)
    assert on_gpu.backbone == "resnet18" and "instdisc paper" in why["backbone"]
    simclr, _ = resolve_config(preset("simclr"), GPU, typical_side=None, num_images=None)
    assert simclr.backbone == "resnet50"
    chosen, _ = resolve_config(dataclasses.replace(preset("instdisc"), backbone="resnet50"),
                               GPU, typical_side=None, num_images=None)
    assert chosen.backbone == "resnet50"  # what was asked wins
    assert METHODS["instdisc"].settings == ("bank_size", "bank_momentum", "instdisc_loss",
                                            "nce_negatives")


# --- two processes against one -----------------------------------------------------------------

WORLD = 2
STEPS = 2
# NCE: its noise rows and Z must agree across processes too. The full softmax shares the
# bank update and its per-image loss has no such state (and is tested above).
LOSSES_ACROSS_PROCESSES = ("nce",)


def two_steps(model: InstDisc, forward) -> dict:
    params = dict(model.named_parameters())
    optimizer = torch.optim.SGD(params.values(), lr=0.05)
    out: dict = {"loss": []}
    for step in range(STEPS):
        optimizer.zero_grad()
        out["loss"].append(forward(step))
        if step == 0:
            out["grads"] = {k: p.grad.clone() for k, p in params.items()}
            optimizer.step()
    out["state"] = {k: v.clone() for k, v in model.state_dict().items()}
    return out


def _rank_main(rank: int, port: int, folder: str) -> None:
    ctx = join_gloo(rank, port, WORLD)
    per = 8 // WORLD
    rows = slice(rank * per, (rank + 1) * per)
    results = {}
    for loss in LOSSES_ACROSS_PROCESSES:
        model = distributed.convert_sync_batchnorm(tiny_model(loss), torch.device("cpu"))
        wrapped = distributed.data_parallel(model, torch.device("cpu"))

        def forward(step, wrapped=wrapped):
            x1, x2 = images(step)
            batch = batch_of(step)
            out = wrapped(x1[rows], x2[rows], BatchInfo(batch.indices[rows],
                                                        batch.labels[rows]))
            out.loss.backward()
            return float(ctx.mean(out.loss.detach()))

        results[loss] = two_steps(model, forward)
    torch.save(results, Path(folder) / f"rank{rank}.pt")
    distributed.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_compute_the_single_process_loss_gradients_and_bank(tmp_path):
    mp.start_processes(_rank_main, args=(free_port(), str(tmp_path)), nprocs=WORLD,
                       start_method="spawn", join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for loss in LOSSES_ACROSS_PROCESSES:
        model = tiny_model(loss)

        def forward(step, model=model):
            out = model(*images(step), batch_of(step))
            out.loss.backward()
            return float(out.loss.detach())

        reference = two_steps(model, forward)
        # The loss head runs in float32 on logits up to 1/t = 14 (the model is float64):
        # a few float32 eps / t of the loss and of the gradient.
        rounding = 4 * torch.finfo(torch.float32).eps / T
        for rank in ranks:
            got = rank[loss]
            np.testing.assert_allclose(got["loss"], reference["loss"], rtol=rounding)
            scale = max(float(g.abs().max()) for g in reference["grads"].values())
            for k, g in reference["grads"].items():
                torch.testing.assert_close(got["grads"][k], g, rtol=0, atol=rounding * scale)
            for k, v in reference["state"].items():
                torch.testing.assert_close(got["state"][k], v, rtol=rounding, atol=rounding)
        a, b = ranks[0][loss]["state"], ranks[1][loss]["state"]
        for k in a:
            assert torch.equal(a[k], b[k]), (loss, k)  # every process: the same bank, Z, model
        # both steps' 16 images moved their rows away from the random start
        moved = (a["bank"] - tiny_model(loss).bank.double()).abs().sum(1) > 0
        assert int(moved.sum()) == 16
        if loss == "nce":
            assert float(a["nce_z"]) > 0


# --- end to end --------------------------------------------------------------------------------
# tests/engine/test_methods.py trains every registered method end to end, resumes it and runs
# every exploring and export verb on its run; at its 24 images InstDisc takes the full
# softmax, so the run here takes NCE, whose noise draws and Z must resume exactly too.

SETTINGS = {"method": "instdisc", "instdisc_loss": "nce", "nce_negatives": 4, "epochs": 2,
            "seed": 2, "batch_size": 4}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two epochs of InstDisc (NCE) on 8 labelled images, batch 4: 2 steps an epoch."""
    tmp = tmp_path_factory.mktemp("instdisc")
    folder = make_folder(tmp / "shapes", per_class=4)
    result = run({"data": str(folder), **SETTINGS}, tmp)
    assert result.status == "finished", result.reason
    return result.run_dir, tmp, folder


def test_a_run_trains_logs_and_checks_its_knn_accuracy(trained):
    run_dir, _, _ = trained
    events = events_of(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["bank_size"], config["instdisc_loss"], config["nce_negatives"]) == (
        8, "nce", 4)
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4]
    assert all(math.isfinite(e["loss"]) and -1 <= e["positive_pair_similarity"] <= 1
               for e in steps)
    assert [e["epoch"] for e in events if e["type"] == "eval"] == [1, 2]
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    assert state["bank"].shape == (8, 16) and int(state["steps"]) == 4
    assert float(state["nce_z"]) > 0


def test_stop_and_resume_gives_the_weights_and_bank_of_an_uninterrupted_run(trained):
    run_dir, tmp, folder = trained
    calls = []

    def stop_after_one_epoch():
        calls.append(1)
        return len(calls) > 2

    part = run({"data": str(folder), **SETTINGS}, tmp / "part",
               should_stop=stop_after_one_epoch)
    assert part.status == "stopped" and part.step == 2
    resumed = run({}, tmp / "part", resume=part.run_dir)
    assert resumed.status == "finished" and resumed.step == 4
    a = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(part.run_dir / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys() and {"bank", "nce_z", "steps"} <= set(a)
    for key in a:  # bit for bit: the bank, Z and the step counter too
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("fmt", ["torchvision", "torchscript"])
def test_the_linear_head_exports_with_the_encoder_and_loads_alone(tmp_path, fmt):
    cfg = dataclasses.replace(tiny_config("nce"), cache_size=16)
    encoder = tiny_model("nce").float().online_encoder
    out = tmp_path / ("enc.pt" if fmt == "torchvision" else "enc.torchscript")
    result = export_encoder(encoder, cfg, fmt, out, include_head=True)
    assert result.verified, result
    namespace: dict = {}
    exec(result.load_snippet, namespace)  # builds the head as Sequential(Linear)
    assert namespace["z"].shape == (2, encoder.head.out_features)


def test_bench_times_nce_steps_with_a_bank_of_a_large_folder():
    from engine.cli.main import build_parser
    from engine.training.bench import BENCH_IMAGES, bench_one

    assert build_parser().parse_args(["bench", "--method", "instdisc"]).method == "instdisc"
    result = bench_one("resnet18", 16, 4, "cpu", seconds=0.2, method="instdisc",
                       settings={"precision": "fp32", "nce_negatives": 64})
    assert result.method == "instdisc" and result.pairs_per_s > 0 and BENCH_IMAGES == 100_000
